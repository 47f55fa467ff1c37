"""Twilio's webhooks: the voice webhook (answers TwiML connecting the call to our media
stream) and the status callback. Both check ``X-Twilio-Signature`` first."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from agents.selectors import DEFAULT_PROFILE_NAME
from telephony import services, twilio_client
from telephony.models import PhoneCall

logger = logging.getLogger(__name__)

STREAM_PATH = "/telephony/twilio/stream"


def public_url(request: HttpRequest) -> str:
    """The URL Twilio requested (and signed). Behind a proxy the request's own host and
    scheme are not what Twilio saw: ``TWILIO_PUBLIC_BASE_URL`` is."""
    if settings.TWILIO_PUBLIC_BASE_URL:
        return settings.TWILIO_PUBLIC_BASE_URL + request.get_full_path()
    return request.build_absolute_uri()


def stream_url(request: HttpRequest) -> str:
    base = settings.TWILIO_PUBLIC_BASE_URL or f"{request.scheme}://{request.get_host()}"
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + STREAM_PATH
    return "ws://" + base.removeprefix("http://") + STREAM_PATH


def _signature_valid(request: HttpRequest) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    params = {key: request.POST.get(key) for key in request.POST}
    return RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(public_url(request), params, signature)


def _checked(view):
    def wrapper(request: HttpRequest) -> HttpResponse:
        if not twilio_client.configured():
            return HttpResponse(
                "Telephony is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN).", status=503
            )
        if not _signature_valid(request):
            logger.warning("twilio webhook refused: bad or missing X-Twilio-Signature (%s)", request.path)
            return HttpResponse("Invalid Twilio signature.", status=403)
        return view(request)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return csrf_exempt(require_POST(wrapper))


def _twiml(response: VoiceResponse) -> HttpResponse:
    return HttpResponse(str(response), content_type="text/xml")


@_checked
def voice(request: HttpRequest) -> HttpResponse:
    """Twilio asks what to do with a call (inbound, or one we placed and it was answered)."""
    call_sid = request.POST.get("CallSid", "")
    if not call_sid:
        return HttpResponse("CallSid is missing.", status=400)
    try:
        phone_call = services.phone_call_for_webhook(
            call_sid=call_sid,
            direction=request.POST.get("Direction", "inbound"),
            from_number=request.POST.get("From", ""),
            to_number=request.POST.get("To", ""),
            public_id=request.GET.get("attempt"),
        )
    except PhoneCall.DoesNotExist:
        return HttpResponse("Unknown call attempt.", status=404)
    response = VoiceResponse()
    answered_by = request.POST.get("AnsweredBy", "")
    if answered_by in services.MACHINE_ANSWERS:
        message = phone_call.lead.campaign.voicemail_message if phone_call.lead_id else ""
        if message:
            response.say(message)
        response.hangup()
        services.phone_call_record_machine(
            phone_call=phone_call, answered_by=answered_by, left_message=bool(message)
        )
        logger.info("phone_call=%s answered by a machine (%s)", phone_call.pk, answered_by)
        return _twiml(response)
    prospect = phone_call.prospect
    connect = Connect()
    stream = connect.stream(url=stream_url(request))
    stream.parameter(
        name="token", value=services.stream_token_issue(call_sid=call_sid, phone_call_id=phone_call.pk)
    )
    stream.parameter(name="direction", value=phone_call.direction)
    stream.parameter(name="prospect", value=str(prospect.pk) if prospect else "")
    # For Twilio's logs: the stream itself takes the profile from our rows, not from here.
    stream.parameter(name="profile", value=services.agent_profile_name(phone_call) or DEFAULT_PROFILE_NAME)
    response.append(connect)
    logger.info(
        "phone_call=%s %s call %s connected to the stream", phone_call.pk, phone_call.direction, call_sid
    )
    return _twiml(response)


@_checked
def status(request: HttpRequest) -> HttpResponse:
    """Twilio reports the call's progress: ringing, answered, busy, no-answer, failed, completed."""
    call_sid = request.POST.get("CallSid", "")
    call_status = request.POST.get("CallStatus", "")
    if not call_sid or not call_status:
        return HttpResponse("CallSid and CallStatus are required.", status=400)
    phone_call = services.phone_call_record_status(
        call_sid=call_sid,
        status=call_status,
        public_id=request.GET.get("attempt"),
        answered_by=request.POST.get("AnsweredBy", ""),
    )
    if phone_call is None:
        logger.info("status %s for unknown call %s", call_status, call_sid)
    return HttpResponse(status=204)
