"""WebSocket routes: the call endpoint at ``/ws`` (no trailing slash), and staff following
a call live (session-authenticated)."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import path

from calls.consumers import CallConsumer
from calls.staff_consumers import FollowCallConsumer
from telephony.consumers import TwilioStreamConsumer

websocket_urlpatterns = [
    path("ws", CallConsumer.as_asgi()),
    path("ws/staff/calls/<uuid:session_id>/", AuthMiddlewareStack(FollowCallConsumer.as_asgi())),
    path("telephony/twilio/stream", TwilioStreamConsumer.as_asgi()),
]
websocket_application = URLRouter(websocket_urlpatterns)
