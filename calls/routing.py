"""WebSocket routes: the call endpoint at ``/ws`` (no trailing slash)."""

from channels.routing import URLRouter
from django.urls import path

from calls.consumers import CallConsumer

websocket_urlpatterns = [
    path("ws", CallConsumer.as_asgi()),
]
websocket_application = URLRouter(websocket_urlpatterns)
