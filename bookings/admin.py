"""Meetings and callbacks in admin, each with a link to its call's transcript."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from bookings import services
from bookings.models import Callback, Meeting


def _call_link(obj: Meeting | Callback) -> str:
    """The call's session id, shortened so the lists fit beside the sidebar and filters (the
    whole id is the link's title; the search box finds a meeting by it)."""
    session = str(obj.call_session_id or "")
    label = f"{session[:8]}…" if session else "-"
    if obj.call_id is None:
        return format_html('<span title="{}">{}</span>', session, label)
    url = reverse("admin:calls_call_change", args=[obj.call_id])
    return format_html('<a href="{}" title="{}">{}</a>', url, session, label)


class MeetingForm(forms.ModelForm):
    """Moving a booked meeting (or booking a cancelled one again) goes through
    ``services.meeting_reschedule``: the same checks as the agent's booking, ``end``
    recomputed. The admin saves inside a transaction, so a later failure undoes the move."""

    class Meta:
        model = Meeting
        fields = ("start", "duration_minutes", "attendee_email", "notes", "status")

    def clean(self) -> dict:
        data = super().clean()
        moved = {"start", "duration_minutes", "status"} & set(self.changed_data)
        start, minutes = data.get("start"), data.get("duration_minutes")
        if not moved or data.get("status") != Meeting.Status.BOOKED or start is None or minutes is None:
            return data
        try:
            services.meeting_reschedule(
                meeting=Meeting.objects.get(pk=self.instance.pk), start=start, duration_minutes=minutes
            )
        except services.BookingError as error:
            raise forms.ValidationError(f"Not moved: {error}") from None
        return data


@admin.register(Meeting)
class MeetingAdmin(admin.ModelAdmin):
    form = MeetingForm
    # No created_at column: it is on the meeting's page, and the list must fit at 1280 px.
    list_display = ("start", "minutes", "attendee_email", "status", "call_link")
    list_filter = ("status", "start")
    date_hierarchy = "start"
    search_fields = ("attendee_email", "notes", "call_session_id")
    readonly_fields = ("call", "call_session_id", "end", "created_at")
    fields = (
        "start",
        "end",
        "duration_minutes",
        "attendee_email",
        "notes",
        "status",
        "call",
        "call_session_id",
        "created_at",
    )

    @admin.display(description="Call")
    def call_link(self, obj: Meeting) -> str:
        return _call_link(obj)

    @admin.display(description="Minutes", ordering="duration_minutes")
    def minutes(self, obj: Meeting) -> int:
        return obj.duration_minutes

    def has_add_permission(self, request) -> bool:
        return False  # booked by the agent through bookings.services (the checks live there)

    def save_model(self, request, obj: Meeting, form: MeetingForm, change: bool) -> None:
        # The move itself was saved by meeting_reschedule (form.clean); a cancelled meeting
        # is not checked, but its end still follows its start and length.
        obj.end = obj.start + dt.timedelta(minutes=obj.duration_minutes)
        super().save_model(request, obj, form, change)


@admin.register(Callback)
class CallbackAdmin(admin.ModelAdmin):
    list_display = ("due_at", "reason", "status", "call_link")
    list_filter = ("status", "due_at")
    date_hierarchy = "due_at"
    search_fields = ("reason", "call_session_id")
    readonly_fields = ("call", "call_session_id", "created_at")
    list_editable = ("status",)

    @admin.display(description="Call")
    def call_link(self, obj: Callback) -> str:
        return _call_link(obj)

    def has_add_permission(self, request) -> bool:
        return False
