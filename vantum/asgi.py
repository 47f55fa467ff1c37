"""ASGI entry point: HTTP goes to Django, WebSocket ``/ws`` to the call consumer.

``application`` also runs this server process's services (``calls.instances``: heartbeat,
crash recovery, spool replay, clean shutdown). uvicorn starts them at ``lifespan`` startup
and, on SIGTERM/SIGINT, our chained signal handler ends every live call with reason
``server_shutdown`` before uvicorn closes the sockets. Servers without lifespan (daphne,
``runserver``) start them at the first request or call they serve. In-process test clients
(no ``server`` in the scope) start nothing.
"""

import os
import sys

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantum.settings")
try:
    django_asgi_app = get_asgi_application()
except ImproperlyConfigured as error:
    # A bad environment variable: the same one clear line as manage.py, not a traceback
    # from inside the ASGI server.
    sys.exit(f"Configuration error: {error}")

# Everything below needs Django set up (above).
from channels.routing import ProtocolTypeRouter

from calls import instances
from calls.engines import get_engines
from calls.routing import websocket_application

# Build the providers (and load the voice, speech-to-text and VAD models) when the server
# starts, not on the first call.
get_engines()

router = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if "server" in scope:  # served by a real server process
        instances.start_process_services()
    await router(scope, receive, send)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            instances.start_process_services()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Normally done already by the signal handler, before the sockets closed.
            await instances.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
