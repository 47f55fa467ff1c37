"""Calls, their transcripts and per-turn metrics. Written by ``calls.services`` only."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class EndReason(models.TextChoices):
    HANGUP = "hangup", "Caller hung up"
    STAFF = "staff_ended", "Ended by staff"
    IDLE = "idle_timeout", "Idle timeout"
    MAX_DURATION = "max_duration", "Maximum duration"
    SERVER = "server_shutdown", "Server shut down"
    LOST = "server_lost", "Server lost (crash)"
    ERROR = "error", "Error"
    AGENT = "agent_ended", "Ended by the agent"


class Outcome(models.TextChoices):
    """What the call achieved. Blank means "not set yet" (the call is still running)."""

    MEETING_BOOKED = "meeting_booked", "Meeting booked"
    CALLBACK = "callback", "Callback scheduled"
    NOT_INTERESTED = "not_interested", "Not interested"
    NO_DECISION = "no_decision", "No decision"
    FAILED = "failed", "Failed (technical)"
    DO_NOT_CALL = "do_not_call", "Do not call"


class OutcomeSource(models.TextChoices):
    AGENT = "agent", "Agent"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"


class Transport(models.TextChoices):
    BROWSER = "browser", "Browser"
    PHONE = "phone", "Phone"


class Call(models.Model):
    session_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=32, choices=EndReason.choices, blank=True)
    prompt_version = models.ForeignKey(
        "agents.PromptVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="calls"
    )
    prospect = models.JSONField(default=dict, blank=True)
    voice_id = models.CharField("voice", max_length=200, blank=True)
    language = models.CharField(max_length=20, blank=True)
    # The server process serving the call (``ServerInstance.id``; not a foreign key: the call
    # row may be written, after a database outage, before or without its instance row).
    server_instance = models.UUIDField(null=True, blank=True, db_index=True, editable=False)
    llm_model = models.CharField("LLM model", max_length=200, blank=True)
    tts_engine = models.CharField("TTS engine", max_length=50, blank=True)
    stt_engine = models.CharField("STT engine", max_length=50, blank=True)
    # How the caller is connected, and the other party's number on a phone call.
    transport = models.CharField(max_length=16, choices=Transport.choices, default=Transport.BROWSER)
    phone_number = models.CharField(max_length=32, blank=True)
    outcome = models.CharField(max_length=32, choices=Outcome.choices, blank=True, db_index=True)
    outcome_source = models.CharField(max_length=16, choices=OutcomeSource.choices, blank=True)
    outcome_summary = models.TextField(blank=True)
    # The reviewer's view of the call (written by calls.services.call_review only).
    rating = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)], db_index=True
    )
    review_note = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # Stereo WAV (left: caller, right: agent) in the default file storage; see calls.recording.
    recording = models.FileField(upload_to="recordings/", max_length=255, blank=True)
    recording_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        permissions = [
            ("review_transcripts", "Can read call transcripts"),
            ("end_live_calls", "Can end calls in progress"),
        ]

    def __str__(self) -> str:
        return f"Call {self.session_id}"


class Role(models.TextChoices):
    USER = "user", "Caller"
    ASSISTANT = "assistant", "Agent"


class Message(models.Model):
    """One turn's words. ``text`` is what was said (markers removed; for a cut-off reply,
    only what reached the caller); ``raw_text`` is what the model wrote."""

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField(blank=True)
    raw_text = models.TextField(blank=True)
    source = models.CharField(max_length=16, blank=True)  # voice / text for callers
    chunks = models.JSONField(default=list, blank=True)  # [{"index", "text", "spoken"}]
    interrupted = models.BooleanField(default=False)
    fallback_tier = models.PositiveSmallIntegerField(null=True, blank=True)
    error_kind = models.CharField(max_length=32, blank=True)
    utterance_id = models.CharField(max_length=64, blank=True)
    # The model's tool calls in this reply: [{"id", "name", "arguments", "ok", "result"}].
    tool_calls = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["call", "seq"]
        constraints = [models.UniqueConstraint(fields=["call", "seq"], name="unique_message_seq")]
        indexes = [models.Index(fields=["role", "created_at"])]

    def __str__(self) -> str:
        return f"{self.role} #{self.seq}"


class TurnMetrics(models.Model):
    """Timings of one assistant turn, in milliseconds from the user's turn being final."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="metrics")
    first_token_ms = models.FloatField(null=True, blank=True)
    first_chunk_ms = models.FloatField(null=True, blank=True)
    first_audio_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    retries = models.PositiveSmallIntegerField(default=0)
    error_kind = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(db_index=True)


class ServerInstance(models.Model):
    """One server process. It beats every ``VANTUM_HEARTBEAT_SECONDS``; a process whose beat
    is stale was lost (SIGKILL, OOM, power), and its calls still "in progress" are closed with
    reason ``server_lost`` by whichever process notices first (``calls.instances``)."""

    id = models.UUIDField(primary_key=True, editable=False)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid} ({self.id})"


class WebhookState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """The outbox row of one call's end-of-call report (``calls.webhook``). Written at hang-up
    through the call's write queue, so it survives a restart, a crash and a database outage;
    kept once delivered or failed, for audit (deleted with its call)."""

    call = models.OneToOneField(Call, on_delete=models.CASCADE, related_name="webhook_delivery")
    state = models.CharField(max_length=16, choices=WebhookState.choices, default=WebhookState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due; while one runs, the end of its lease. None once final.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)  # the receiver's HTTP status
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        # Every process's retry pass looks for due pending reports each beat; rows are kept.
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_due")]

    def __str__(self) -> str:
        return f"Webhook of call {self.call_id}: {self.state}"
