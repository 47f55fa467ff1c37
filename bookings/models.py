"""Meetings the agent booked and callbacks it promised. Written by ``bookings.services`` only."""

from __future__ import annotations

from django.db import models


class Meeting(models.Model):
    """A meeting booked during a call. ``end`` is stored so overlaps are one query."""

    class Status(models.TextChoices):
        BOOKED = "booked", "Booked"
        CANCELLED = "cancelled", "Cancelled"

    # The call may not be stored yet when the tool runs (transcript writes are queued):
    # the session id always is, the foreign key is filled when the row exists.
    call = models.ForeignKey(
        "calls.Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="meetings"
    )
    call_session_id = models.UUIDField(null=True, blank=True, db_index=True)
    start = models.DateTimeField(db_index=True)
    end = models.DateTimeField()
    duration_minutes = models.PositiveSmallIntegerField()
    attendee_email = models.EmailField(blank=True)
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BOOKED)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["start"]
        constraints = [
            # The last guard against two calls booking the same slot at the same moment.
            models.UniqueConstraint(
                fields=["start"], condition=models.Q(status="booked"), name="unique_booked_meeting_start"
            )
        ]

    def __str__(self) -> str:
        return f"Meeting {self.start:%Y-%m-%d %H:%M} ({self.duration_minutes} min)"


class Callback(models.Model):
    """A promise to call the prospect back: a task for staff."""

    class Status(models.TextChoices):
        OPEN = "open", "To do"
        DONE = "done", "Done"

    call = models.ForeignKey(
        "calls.Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="callbacks"
    )
    call_session_id = models.UUIDField(null=True, blank=True, db_index=True)
    due_at = models.DateTimeField(db_index=True)
    reason = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["due_at"]

    def __str__(self) -> str:
        return f"Callback {self.due_at:%Y-%m-%d %H:%M}"
