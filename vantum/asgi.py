"""ASGI entry point: HTTP goes to Django, WebSocket ``/ws`` to the call consumer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantum.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from calls.engines import get_engines  # noqa: E402  (needs Django set up first)
from calls.routing import websocket_application  # noqa: E402

# Build the providers (and start loading the voice model) when the server starts, not on
# the first call.
get_engines()

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})
