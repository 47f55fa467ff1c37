"""Writes of phone calls, leads, campaigns and the do-not-call list.

Plain synchronous functions with keyword-only arguments. The stream consumer calls them off
the audio path (``database_sync_to_async`` before the call starts, the transcript recorder
from then on, its end included); the dialing workers call them directly.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from telephony import twilio_client
from telephony.models import (
    Campaign,
    Direction,
    DoNotCall,
    Lead,
    LeadState,
    PhoneCall,
    Prospect,
    normalize_phone,
    validate_timezone,
)

logger = logging.getLogger(__name__)

STREAM_TOKEN_SALT = "telephony.twilio.stream"
TERMINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
RETRY_STATUSES = frozenset({"busy", "no-answer", "failed"})
MACHINE_ANSWERS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)
DO_NOT_CALL_OUTCOME = "do_not_call"


# ---------------------------------------------------------------- stream tokens
class StreamTokenError(Exception):
    """The stream's token is forged, expired, for another call, or already used."""


def stream_token_issue(*, call_sid: str, phone_call_id: int) -> str:
    """A short-lived token binding a media stream to the call this server answered."""
    return signing.dumps({"c": call_sid, "p": phone_call_id}, salt=STREAM_TOKEN_SALT, compress=False)


def stream_token_redeem(*, token: str, call_sid: str, stream_sid: str) -> PhoneCall:
    """Check the token of a stream's ``start`` and use it up (a token opens one stream).

    Raises ``StreamTokenError`` saying why it is refused.
    """
    try:
        payload = signing.loads(token, salt=STREAM_TOKEN_SALT, max_age=settings.TWILIO_STREAM_TOKEN_MAX_AGE)
    except signing.SignatureExpired:
        raise StreamTokenError("stream token expired") from None
    except signing.BadSignature:
        raise StreamTokenError("stream token forged or corrupted") from None
    if not isinstance(payload, dict) or payload.get("c") != call_sid:
        raise StreamTokenError("stream token belongs to another call")
    used = PhoneCall.objects.filter(
        pk=payload.get("p"), call_sid=call_sid, stream_started_at__isnull=True
    ).update(stream_started_at=timezone.now(), stream_sid=stream_sid)
    if not used:
        raise StreamTokenError("stream token already used")
    return PhoneCall.objects.select_related("prospect", "lead__campaign__agent_profile").get(pk=payload["p"])


def agent_profile_name(phone_call: PhoneCall) -> str | None:
    """The agent profile a phone call's conversation uses: its campaign's, else None (the
    default profile). Read from our own rows, never from the stream's parameters."""
    lead = phone_call.lead if phone_call.lead_id else None
    profile = lead.campaign.agent_profile if lead is not None and lead.campaign.agent_profile_id else None
    return profile.name if profile is not None else None


# ---------------------------------------------------------------- webhooks
def phone_call_for_webhook(
    *, call_sid: str, direction: str, from_number: str, to_number: str, public_id: str | None
) -> PhoneCall:
    """The PhoneCall a voice webhook is about: the one we placed (``public_id`` from our own
    URL), or a new inbound one. Idempotent for Twilio's retries."""
    if public_id:
        try:
            key = uuid.UUID(public_id)
        except ValueError:
            raise PhoneCall.DoesNotExist(f"no placed call {public_id!r}") from None
        with transaction.atomic():
            phone_call = PhoneCall.objects.select_for_update().get(public_id=key)
            if not phone_call.call_sid:
                phone_call.call_sid = call_sid
                phone_call.save(update_fields=["call_sid"])
        return phone_call
    prospect = Prospect.objects.filter(phone=from_number).first() if from_number else None
    try:
        with transaction.atomic():
            return PhoneCall.objects.create(
                call_sid=call_sid,
                direction=Direction.INBOUND if direction.startswith("inbound") else Direction.OUTBOUND,
                from_number=from_number,
                to_number=to_number,
                prospect=prospect,
                status="in-progress",
                answered_at=timezone.now(),
            )
    except IntegrityError:
        return PhoneCall.objects.get(call_sid=call_sid)


def phone_call_record_status(
    *,
    call_sid: str,
    status: str,
    public_id: str | None = None,
    answered_by: str = "",
    at: datetime | None = None,
) -> PhoneCall | None:
    """A status callback: ringing / in-progress (answered) / busy / no-answer / failed /
    completed. Moves the lead on when the call is over. Returns None for an unknown call."""
    now = at or timezone.now()
    with transaction.atomic():
        query = PhoneCall.objects.select_for_update()
        phone_call = None
        if public_id:
            try:
                phone_call = query.filter(public_id=uuid.UUID(public_id)).first()
            except ValueError:
                phone_call = None
        if phone_call is None:
            phone_call = query.filter(call_sid=call_sid).first()
        if phone_call is None:
            return None
        if not phone_call.call_sid:
            phone_call.call_sid = call_sid
        phone_call.status_history = [*phone_call.status_history, {"status": status, "at": now.isoformat()}]
        if phone_call.status not in TERMINAL_STATUSES:
            phone_call.status = status
        if status == "in-progress" and phone_call.answered_at is None:
            phone_call.answered_at = now
        if answered_by:
            phone_call.answered_by = answered_by
        if status in TERMINAL_STATUSES and phone_call.ended_at is None:
            phone_call.ended_at = now
            if not phone_call.outcome and status != "completed":
                phone_call.outcome = status
        phone_call.save()
        if status in TERMINAL_STATUSES and phone_call.lead_id:
            _lead_after_call(lead_id=phone_call.lead_id, phone_call=phone_call, now=now)
    return phone_call


def phone_call_record_machine(*, phone_call: PhoneCall, answered_by: str, left_message: bool) -> None:
    """Twilio's answering machine detection found a machine: recorded as the outcome."""
    PhoneCall.objects.filter(pk=phone_call.pk).update(
        answered_by=answered_by, outcome="voicemail_left" if left_message else "answering_machine"
    )


def _lead_after_call(*, lead_id: int, phone_call: PhoneCall, now: datetime) -> None:
    lead = Lead.objects.select_for_update().select_related("campaign").get(pk=lead_id)
    if lead.state not in {LeadState.DIALING, LeadState.IN_CALL}:
        return
    if phone_call.status in RETRY_STATUSES and lead.attempts < lead.campaign.max_attempts:
        lead.state = LeadState.QUEUED
        lead.next_attempt_at = now + timedelta(minutes=lead.campaign.retry_minutes)
    else:
        lead.state = LeadState.DONE if phone_call.status == "completed" else LeadState.FAILED
    lead.outcome = phone_call.outcome or phone_call.status
    lead.save(update_fields=["state", "next_attempt_at", "outcome"])


# ---------------------------------------------------------------- the stream
def phone_call_attach_session(*, phone_call_id: int, session_id: uuid.UUID) -> None:
    PhoneCall.objects.filter(pk=phone_call_id).update(session_id=session_id)


def phone_call_record_dtmf(*, phone_call_id: int, digit: str) -> None:
    phone_call = PhoneCall.objects.get(pk=phone_call_id)
    PhoneCall.objects.filter(pk=phone_call_id).update(dtmf=(phone_call.dtmf + digit)[-200:])


def end_call_outcome(reply: Any) -> str:
    """The outcome the agent's ``end_call`` reported to the model, from the reply that
    ended the call (``CallSession.ending_reply``; None or a fallback exit: "")."""
    for tool_round in getattr(reply, "tool_rounds", None) or []:
        for tool_call in tool_round.calls:
            result = tool_call.result
            if result is None or not result.ends_call:
                continue
            try:
                outcome = json.loads(result.content).get("outcome", "")
            except (ValueError, AttributeError):
                return ""
            return outcome if isinstance(outcome, str) else ""
    return ""


def phone_call_finish(*, phone_call_id: int, end_reason: str, agent_outcome: str = "") -> str:
    """The stream is over: keep why, take the conversation's outcome onto the phone call and
    its lead; an outcome of ``do_not_call`` puts the number on the do-not-call list. Returns
    the outcome.

    ``agent_outcome`` is what the agent's ``end_call`` reported, carried in memory: during a
    database outage the call's own outcome write is spooled, and the call's row cannot say
    ``do_not_call`` yet when this runs. An outcome the row holds from the agent or staff wins
    (a meeting booked earlier in the call stays the outcome); the system's default
    (``no_decision``) does not. The lead gets the outcome even when Twilio's "completed"
    callback came first and left only "completed" there.

    Run by the call's recorder (``calls.recorder``), after the call's own rows: retried, and
    through a database outage spooled and replayed at recovery. Idempotent, so a replay of a
    write that had in fact been stored changes nothing: the first end reason stays and the
    number is listed once.
    """
    from calls.models import Call, OutcomeSource

    phone_call = PhoneCall.objects.get(pk=phone_call_id)
    stored, source = "", ""
    if phone_call.session_id:
        row = Call.objects.filter(session_id=phone_call.session_id).values_list("outcome", "outcome_source")
        stored, source = row.first() or ("", "")
    if stored and source in {OutcomeSource.AGENT, OutcomeSource.STAFF}:
        outcome = stored
    else:
        outcome = agent_outcome or stored
    changes = {"end_reason": phone_call.end_reason or end_reason}
    if outcome:
        changes["outcome"] = outcome
    PhoneCall.objects.filter(pk=phone_call_id).update(**changes)
    if outcome and phone_call.lead_id:
        newer = PhoneCall.objects.filter(lead_id=phone_call.lead_id, created_at__gt=phone_call.created_at)
        if not newer.exists():  # a later attempt's outcome is not this call's to overwrite
            Lead.objects.filter(pk=phone_call.lead_id).update(outcome=outcome)
    if outcome == DO_NOT_CALL_OUTCOME and phone_call.phone:
        do_not_call_add(phone=phone_call.phone, reason="asked not to be called again", source="agent")
    logger.info(
        "phone_call=%s finished: %s, outcome %s", phone_call_id, changes["end_reason"], outcome or "-"
    )
    return outcome


def do_not_call_for_call(*, session_id: uuid.UUID) -> DoNotCall | None:
    """Staff set a phone call's outcome to ``do_not_call`` after it ended: its number goes
    on the do-not-call list too. None for a call that was not a phone call."""
    phone_call = PhoneCall.objects.filter(session_id=session_id).first()
    if phone_call is None or not phone_call.phone:
        return None
    PhoneCall.objects.filter(pk=phone_call.pk).update(outcome=DO_NOT_CALL_OUTCOME)
    if phone_call.lead_id:
        Lead.objects.filter(pk=phone_call.lead_id).update(outcome=DO_NOT_CALL_OUTCOME)
    return do_not_call_add(phone=phone_call.phone, reason="marked do not call by staff", source="staff")


# ---------------------------------------------------------------- do not call
def do_not_call_add(*, phone: str, reason: str = "", source: str = "staff") -> DoNotCall:
    number = normalize_phone(phone)
    entry, _ = DoNotCall.objects.get_or_create(phone=number, defaults={"reason": reason, "source": source})
    skipped = Lead.objects.filter(prospect__phone=number, state=LeadState.QUEUED).update(
        state=LeadState.SKIPPED
    )
    if skipped:
        logger.info("do-not-call %s: %d queued lead(s) skipped", number, skipped)
    return entry


def is_do_not_call(phone: str) -> bool:
    return DoNotCall.objects.filter(phone=phone).exists()


# ---------------------------------------------------------------- prospects and campaigns
@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    queued: int = 0
    errors: list[str] = field(default_factory=list)


def campaign_import_csv(
    *, campaign: Campaign, data: bytes, default_region: str | None = None
) -> ImportReport:
    """Prospects from a CSV (header: name, phone, and optionally company, timezone, email),
    each queued as a lead of ``campaign``. Bad rows are reported by line, the rest imported."""
    report = ImportReport()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        report.errors.append("The file is not UTF-8 text.")
        return report
    reader = csv.DictReader(io.StringIO(text))
    fields = {(f or "").strip().lower() for f in reader.fieldnames or []}
    if not {"name", "phone"} <= fields:
        report.errors.append("The header must have at least the columns name and phone.")
        return report
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        try:
            phone = normalize_phone(row.get("phone", ""), region=default_region)
            tz = row.get("timezone") or "UTC"
            validate_timezone(tz)
            if not row.get("name"):
                raise ValidationError("the name is empty")
        except ValidationError as error:
            report.errors.append(f"line {line}: {'; '.join(error.messages)}")
            continue
        with transaction.atomic():
            prospect, created = Prospect.objects.update_or_create(
                phone=phone,
                defaults={
                    "name": row["name"],
                    "company": row.get("company", ""),
                    "timezone": tz,
                    "email": row.get("email", ""),
                },
            )
            report.created += created
            report.updated += not created
            _, queued = Lead.objects.get_or_create(
                campaign=campaign,
                prospect=prospect,
                defaults={"state": LeadState.SKIPPED if is_do_not_call(phone) else LeadState.QUEUED},
            )
            report.queued += queued
    return report


def within_calling_hours(*, campaign: Campaign, prospect_timezone: str, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(prospect_timezone))
    start, end = campaign.calling_hours_start, campaign.calling_hours_end
    return local.weekday() in campaign.weekdays() and start <= local.time().replace(tzinfo=None) < end


# ---------------------------------------------------------------- dialing
MANUAL_CAMPAIGN = "Manual calls"


def campaign_dialing_start(*, campaign_id: int, now: datetime) -> int:
    """ "Start dialing": the campaign is active and a new dialing chain begins; returns the
    number its first pass carries. Passes of any older chain (a second click, a stop then
    start within one tick) carry an older number and end without scheduling another."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        campaign.active, campaign.dial_pass, campaign.dial_next_at = True, campaign.dial_pass + 1, now
        campaign.save(update_fields=["active", "dial_pass", "dial_next_at"])
    logger.info("campaign=%s dialing started (pass %s)", campaign_id, campaign.dial_pass)
    return campaign.dial_pass


def campaign_pass_current(*, campaign_id: int, dial_pass: int | None) -> int | None:
    """The pass number a dialing pass runs as, or None when it must not run: the campaign
    is stopped or gone, or the pass belongs to an older chain. A message without a number
    (queued by hand, or before numbers existed) runs as the current pass."""
    current = Campaign.objects.filter(pk=campaign_id, active=True).values_list("dial_pass", flat=True).first()
    if current is None or (dial_pass is not None and dial_pass != current):
        return None
    return current


def campaign_pass_schedule_next(*, campaign_id: int, dial_pass: int, due_at: datetime) -> int | None:
    """A pass is done: claim the right to schedule the next one. Only one pass of a number
    wins (a redelivered duplicate loses); returns the next pass's number, or None."""
    won = Campaign.objects.filter(pk=campaign_id, active=True, dial_pass=dial_pass).update(
        dial_pass=dial_pass + 1, dial_next_at=due_at
    )
    return dial_pass + 1 if won else None


def campaigns_dialing_overdue(*, now: datetime, overdue_seconds: float) -> list[tuple[int, int]]:
    """Active campaigns whose next pass is overdue by ``overdue_seconds`` (its chain died: a
    pass failed all its retries, or its message was lost) get a new chain. Returns the
    (campaign id, pass number) to send; safe from any number of workers at once."""
    late = now - timedelta(seconds=overdue_seconds)
    restarted: list[tuple[int, int]] = []
    stalled = Campaign.objects.filter(active=True).filter(
        models.Q(dial_next_at__isnull=True) | models.Q(dial_next_at__lt=late)
    )
    for campaign_id, dial_pass in stalled.values_list("pk", "dial_pass"):
        won = (
            Campaign.objects.filter(pk=campaign_id, active=True, dial_pass=dial_pass)
            .filter(models.Q(dial_next_at__isnull=True) | models.Q(dial_next_at__lt=late))
            .update(dial_pass=dial_pass + 1, dial_next_at=now)
        )
        if won:
            logger.warning("campaign=%s had no dialing pass scheduled: restarted", campaign_id)
            restarted.append((campaign_id, dial_pass + 1))
    return restarted


def lead_for_manual_call(*, prospect_id: int) -> Lead:
    """The lead behind "Call this prospect": in the always-inactive "Manual calls" campaign
    (calling hours every day, all day), queued again if it was done."""
    campaign, _ = Campaign.objects.get_or_create(
        name=MANUAL_CAMPAIGN,
        defaults={
            "active": False,
            "max_concurrent_calls": 5,
            "calling_hours_start": "00:00",
            "calling_hours_end": "23:59:59",
            "calling_weekdays": "0,1,2,3,4,5,6",
            "max_attempts": 1,
        },
    )
    with transaction.atomic():
        lead, _ = Lead.objects.select_for_update().get_or_create(campaign=campaign, prospect_id=prospect_id)
        if lead.state in {LeadState.DONE, LeadState.FAILED}:
            lead.state, lead.attempts, lead.next_attempt_at = LeadState.QUEUED, 0, None
            lead.save(update_fields=["state", "attempts", "next_attempt_at"])
    return lead


def leads_claim(*, campaign_id: int, now: datetime, lead_ids: list[int] | None = None) -> list[int]:
    """Claim the leads that may be dialed now, within the campaign's concurrency limit;
    returns the new PhoneCall ids to place. Safe from any number of workers at once.

    The campaign row lock serialises claimers of one campaign (so the count of calls in
    progress cannot be read twice before an update); ``skip_locked`` lets claimers of other
    campaigns pass. Leads on the do-not-call list are skipped here, at the last moment.
    """
    claimed: list[int] = []
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        busy = Lead.objects.filter(
            campaign=campaign, state__in=[LeadState.DIALING, LeadState.IN_CALL]
        ).count()
        free = campaign.max_concurrent_calls - busy
        if free <= 0:
            return []
        candidates = (
            Lead.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("prospect")
            .filter(campaign=campaign, state=LeadState.QUEUED)
            .order_by("id")
        )
        if lead_ids is not None:
            candidates = candidates.filter(pk__in=lead_ids)
        for lead in candidates[: max(free * 5, 20)]:
            if len(claimed) >= free:
                break
            if lead.next_attempt_at and lead.next_attempt_at > now:
                continue
            prospect = lead.prospect
            if is_do_not_call(prospect.phone):
                lead.state = LeadState.SKIPPED
                lead.save(update_fields=["state"])
                continue
            if not within_calling_hours(campaign=campaign, prospect_timezone=prospect.timezone, now=now):
                continue
            lead.state, lead.claimed_at, lead.attempts = LeadState.DIALING, now, lead.attempts + 1
            lead.save(update_fields=["state", "claimed_at", "attempts"])
            phone_call = PhoneCall.objects.create(
                direction=Direction.OUTBOUND,
                from_number=settings.TWILIO_FROM_NUMBER,
                to_number=prospect.phone,
                prospect=prospect,
                lead=lead,
            )
            claimed.append(phone_call.pk)
    return claimed


def voice_url(phone_call: PhoneCall) -> str:
    return f"{_public_base()}/telephony/twilio/voice?attempt={phone_call.public_id}"


def status_url(phone_call: PhoneCall | None = None) -> str:
    query = f"?attempt={phone_call.public_id}" if phone_call is not None else ""
    return f"{_public_base()}/telephony/twilio/status{query}"


def _public_base() -> str:
    if not settings.TWILIO_PUBLIC_BASE_URL:
        raise twilio_client.TelephonyNotConfigured(
            "Set TWILIO_PUBLIC_BASE_URL (how Twilio reaches this server) to place calls."
        )
    return settings.TWILIO_PUBLIC_BASE_URL


def phone_call_place(*, phone_call_id: int) -> PhoneCall:
    """Place one claimed call with Twilio. Twilio refusing it ends the attempt; an unknown
    result (network) leaves the lead ``dialing`` for reconciliation, never dialed twice."""
    phone_call = PhoneCall.objects.select_related("lead__campaign").get(pk=phone_call_id)
    lead = phone_call.lead
    campaign = lead.campaign if lead else None
    detection = None
    if campaign is not None and campaign.machine_detection:
        detection = "DetectMessageEnd" if campaign.voicemail_message else "Enable"
    try:
        placed = twilio_client.call_place(
            to=phone_call.to_number,
            from_=phone_call.from_number or settings.TWILIO_FROM_NUMBER,
            voice_url=voice_url(phone_call),
            status_callback=status_url(phone_call),
            machine_detection=detection,
        )
    except twilio_client.TwilioCallError as error:
        logger.warning("phone_call=%s not placed: %s", phone_call.pk, error)
        PhoneCall.objects.filter(pk=phone_call.pk).update(error=str(error))
        if error.rejected:
            _phone_call_not_placed(phone_call=phone_call, error=str(error))
        return PhoneCall.objects.get(pk=phone_call.pk)
    except twilio_client.TelephonyNotConfigured as error:
        _phone_call_not_placed(phone_call=phone_call, error=str(error))
        raise
    with transaction.atomic():
        PhoneCall.objects.filter(pk=phone_call.pk, call_sid__isnull=True).update(call_sid=placed.call_sid)
        PhoneCall.objects.filter(pk=phone_call.pk, status="queued").update(status=placed.status)
        if lead is not None:
            Lead.objects.filter(pk=lead.pk, state=LeadState.DIALING).update(state=LeadState.IN_CALL)
    logger.info("phone_call=%s placed: %s", phone_call.pk, placed.call_sid)
    return PhoneCall.objects.get(pk=phone_call.pk)


def _phone_call_not_placed(*, phone_call: PhoneCall, error: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        PhoneCall.objects.filter(pk=phone_call.pk).update(
            status="failed", ended_at=now, outcome="failed", error=error
        )
        if phone_call.lead_id:
            lead = Lead.objects.select_for_update().get(pk=phone_call.lead_id)
            if lead.state == LeadState.DIALING:
                lead.state, lead.last_error = LeadState.FAILED, error
                lead.save(update_fields=["state", "last_error"])


def leads_reconcile_stuck(*, now: datetime) -> int:
    """Leads claimed by a worker that died before it knew whether Twilio took the call,
    and leads whose call's final status never arrived (see ``_leads_in_call_reconcile``).

    Twilio's call list decides: a call to the number since the claim is adopted (the lead
    is in a call, not dialed again); none means the request never reached Twilio, and the
    lead is queued again with its attempt given back. Returns how many were settled.
    """
    stuck_before = now - timedelta(seconds=settings.TELEPHONY_DIAL_STUCK_SECONDS)
    settled = 0
    stuck = Lead.objects.filter(state=LeadState.DIALING, claimed_at__lt=stuck_before).values_list(
        "pk", flat=True
    )
    for lead_id in list(stuck):
        with transaction.atomic():
            lead = (
                Lead.objects.select_for_update(skip_locked=True)
                .select_related("prospect")
                .filter(pk=lead_id, state=LeadState.DIALING)
                .first()
            )
            if lead is None:
                continue
            phone_call = lead.phone_calls.order_by("-created_at").first()
            if phone_call is not None and phone_call.call_sid:
                # A webhook or status callback already told us Twilio has the call.
                lead.state = LeadState.IN_CALL
                lead.save(update_fields=["state"])
                settled += 1
                continue
            try:
                sids = twilio_client.calls_to_since(to=lead.prospect.phone, since=lead.claimed_at)
            except twilio_client.TwilioCallError as error:
                logger.warning("lead=%s not reconciled: %s", lead.pk, error)
                continue
            known = set(PhoneCall.objects.filter(call_sid__in=sids).values_list("call_sid", flat=True))
            unknown = [sid for sid in sids if sid not in known]
            if unknown and phone_call is not None:
                PhoneCall.objects.filter(pk=phone_call.pk).update(call_sid=unknown[0], status="initiated")
                lead.state = LeadState.IN_CALL
            else:
                if phone_call is not None:
                    PhoneCall.objects.filter(pk=phone_call.pk).update(
                        status="canceled", ended_at=now, error="never reached Twilio (worker stopped)"
                    )
                lead.state, lead.attempts = LeadState.QUEUED, max(0, lead.attempts - 1)
            lead.save(update_fields=["state", "attempts"])
            settled += 1
    return settled + _leads_in_call_reconcile(now=now)


def _leads_in_call_reconcile(*, now: datetime) -> int:
    """Leads "in call" for longer than ``TELEPHONY_IN_CALL_CHECK_SECONDS``: their final
    status callback may have been lost, and each one holds a dialing slot. Twilio's record
    of the call decides; a call it reports over is settled as its callback would have.
    A call still in progress is left alone (checked again next pass)."""
    check_before = now - timedelta(seconds=settings.TELEPHONY_IN_CALL_CHECK_SECONDS)
    settled = 0
    old = Lead.objects.filter(state=LeadState.IN_CALL, claimed_at__lt=check_before).values_list(
        "pk", flat=True
    )
    for lead_id in list(old):
        with transaction.atomic():
            lead = (
                Lead.objects.select_for_update(skip_locked=True)
                .filter(pk=lead_id, state=LeadState.IN_CALL)
                .first()
            )
            if lead is None:
                continue
            phone_call = lead.phone_calls.exclude(call_sid=None).order_by("-created_at").first()
            if phone_call is None:
                continue
            try:
                status = twilio_client.call_status(call_sid=phone_call.call_sid)
            except twilio_client.TwilioCallError as error:
                logger.warning("lead=%s in call not reconciled: %s", lead.pk, error)
                continue
            if status is None:  # Twilio has no such call: it is not in progress
                status = "failed"
                PhoneCall.objects.filter(pk=phone_call.pk).update(error="unknown to Twilio when checked")
            if status not in TERMINAL_STATUSES:
                continue
            logger.info(
                "lead=%s phone_call=%s: final status callback missing; Twilio says %s",
                lead.pk,
                phone_call.pk,
                status,
            )
            phone_call_record_status(call_sid=phone_call.call_sid, status=status, at=now)
            settled += 1
    return settled


def opener_text(*, prospect: dict[str, str], template: str = "") -> str:
    """The agent's first words on an outbound call: the prompt version's opener (blank:
    ``TELEPHONY_OPENER``) with the prospect's fields filled in. A template that cannot be
    filled in (admin refuses those; the setting is not checked) is spoken as written."""
    template = template.strip() or settings.TELEPHONY_OPENER
    values = {"name": prospect.get("name") or "there", "company": prospect.get("company") or "your company"}
    try:
        return template.format_map(values).strip()
    except (KeyError, ValueError, IndexError):
        return template.strip()
