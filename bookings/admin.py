"""Meetings and callbacks in admin, each with a link to its call's transcript."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from bookings.models import Callback, Meeting


def _call_link(obj: Meeting | Callback) -> str:
    if obj.call_id is None:
        return str(obj.call_session_id or "-")
    url = reverse("admin:calls_call_change", args=[obj.call_id])
    return format_html('<a href="{}">{}</a>', url, obj.call_session_id or obj.call_id)


@admin.register(Meeting)
class MeetingAdmin(admin.ModelAdmin):
    list_display = ("start", "duration_minutes", "attendee_email", "status", "call_link", "created_at")
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

    def has_add_permission(self, request) -> bool:
        return False  # booked by the agent through bookings.services (the checks live there)


@admin.register(Callback)
class CallbackAdmin(admin.ModelAdmin):
    list_display = ("due_at", "reason", "status", "call_link", "created_at")
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
