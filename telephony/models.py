"""Phone calls (Twilio), prospects to call, campaigns, and the do-not-call list.

Written by ``telephony.services`` only. A ``PhoneCall`` is the telephone leg of a call; the
conversation itself (transcript, metrics, outcome) is the ``calls.Call`` it links to by
``session_id``, exactly as for a browser call.
"""

from __future__ import annotations

import uuid
import zoneinfo

import phonenumbers
from django.core.exceptions import ValidationError
from django.db import models


def normalize_phone(value: str, *, region: str | None = None) -> str:
    """The E.164 form of a phone number, or ``ValidationError`` saying why it is not one."""
    try:
        number = phonenumbers.parse(value.strip(), region)
    except phonenumbers.NumberParseException as error:
        raise ValidationError(f"{value!r} is not a phone number: {error}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(f"{value!r} is not a valid phone number (use E.164, e.g. +14155550123)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def validate_e164(value: str) -> None:
    if normalize_phone(value) != value:
        raise ValidationError(f"{value!r} is not in E.164 form (e.g. +14155550123)")


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a time zone (e.g. America/New_York)") from None


class Prospect(models.Model):
    name = models.CharField(max_length=200)
    company = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=20, unique=True, validators=[validate_e164], help_text="E.164")
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    email = models.EmailField(blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.company})" if self.company else self.name

    def as_context(self) -> dict[str, str]:
        """The prospect fields the agent's prompt uses."""
        return {k: v for k, v in {"name": self.name, "company": self.company}.items() if v}


class Campaign(models.Model):
    name = models.CharField(max_length=200, unique=True)
    active = models.BooleanField(default=False, help_text="Dial its queued leads now.")
    max_concurrent_calls = models.PositiveSmallIntegerField(default=2)
    calling_hours_start = models.TimeField(default="09:00", help_text="In the prospect's time zone.")
    calling_hours_end = models.TimeField(default="18:00", help_text="In the prospect's time zone.")
    calling_weekdays = models.CharField(
        max_length=13, default="0,1,2,3,4", help_text="Days allowed, 0 = Monday … 6 = Sunday."
    )
    max_attempts = models.PositiveSmallIntegerField(default=2)
    retry_minutes = models.PositiveIntegerField(default=60)
    machine_detection = models.BooleanField(
        default=False, help_text="Use Twilio's answering machine detection."
    )
    voicemail_message = models.TextField(
        blank=True, help_text="Left on an answering machine (with detection on); empty: hang up."
    )
    agent_profile = models.ForeignKey(
        "agents.AgentProfile",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Whose prompt versions (and A/B splits) its calls use; empty: the default profile.",
    )
    # The dialing chain: each pass carries the number it was scheduled with, and only the
    # pass holding the current number schedules the next one (see services.campaign_pass_*),
    # so repeated "Start dialing" clicks or a stop-then-start leave one chain. ``dial_next_at``
    # lets the workers' watchdog restart an active campaign whose chain died.
    dial_pass = models.PositiveBigIntegerField(default=0, editable=False)
    dial_next_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def weekdays(self) -> set[int]:
        return {int(d) for d in self.calling_weekdays.split(",") if d.strip().isdigit()}


class LeadState(models.TextChoices):
    QUEUED = "queued", "Queued"
    DIALING = "dialing", "Dialing"  # claimed by a worker; the REST request may be in flight
    IN_CALL = "in_call", "In call"  # Twilio accepted the call (we hold its CallSid)
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped (do not call)"


class Lead(models.Model):
    """One prospect in one campaign: the dialing state machine.

    queued -> dialing (a worker claimed it, row-locked) -> in_call (Twilio has the call)
    -> done / queued again for a retry / failed. A lead stuck in ``dialing`` after a worker
    died is reconciled with Twilio's call list before it is ever dialed again.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="leads")
    prospect = models.ForeignKey(Prospect, on_delete=models.CASCADE, related_name="leads")
    state = models.CharField(max_length=16, choices=LeadState.choices, default=LeadState.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=32, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "prospect"], name="unique_campaign_lead")]
        indexes = [models.Index(fields=["campaign", "state"])]

    def __str__(self) -> str:
        return f"{self.prospect} in {self.campaign}"


class DoNotCall(models.Model):
    phone = models.CharField(max_length=20, unique=True, validators=[validate_e164])
    reason = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=16, default="staff")  # staff / agent / import
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "do-not-call number"
        verbose_name_plural = "do-not-call list"

    def __str__(self) -> str:
        return self.phone


class Direction(models.TextChoices):
    INBOUND = "inbound", "Inbound"
    OUTBOUND = "outbound", "Outbound"


class PhoneCall(models.Model):
    """The telephone leg of one call, from Twilio's point of view."""

    public_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    call_sid = models.CharField(max_length=64, unique=True, null=True, blank=True)
    direction = models.CharField(max_length=16, choices=Direction.choices)
    from_number = models.CharField(max_length=32, blank=True)
    to_number = models.CharField(max_length=32, blank=True)
    prospect = models.ForeignKey(Prospect, null=True, blank=True, on_delete=models.SET_NULL)
    lead = models.ForeignKey(
        Lead, null=True, blank=True, on_delete=models.SET_NULL, related_name="phone_calls"
    )
    status = models.CharField(max_length=32, default="queued")  # Twilio's CallStatus
    status_history = models.JSONField(default=list, blank=True)  # [{"status", "at"}]
    answered_by = models.CharField(max_length=32, blank=True)  # Twilio AMD: human, machine_start ...
    session_id = models.UUIDField(null=True, blank=True, db_index=True)  # calls.Call.session_id
    stream_sid = models.CharField(max_length=64, blank=True)
    stream_started_at = models.DateTimeField(null=True, blank=True)  # set once: a token works once
    dtmf = models.CharField(max_length=200, blank=True)  # digits pressed, in order
    outcome = models.CharField(max_length=32, blank=True)
    end_reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.direction} {self.to_number or self.from_number} ({self.status})"

    @property
    def phone(self) -> str:
        """The other party's number."""
        return self.to_number if self.direction == Direction.OUTBOUND else self.from_number
