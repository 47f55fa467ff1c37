"""Transcript review and live calls in admin. Read-only: no one edits a transcript."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.core.files.storage import default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from calls import live, services
from calls.dashboard import dashboard_data
from calls.exports import export_response
from calls.models import Call, Outcome, Transport, WebhookDelivery, WebhookState
from calls.recording import RangeNotSatisfiable, byte_range
from calls.selectors import call_list, call_transcript, live_calls

REVIEW_PERMISSION = "calls.review_transcripts"
END_PERMISSION = "calls.end_live_calls"
PROMPT_EDIT_PERMISSION = "agents.edit_prompts"

admin.site.site_header = "Vantum Voice"
admin.site.site_title = "Vantum Voice"
admin.site.index_title = "Calls, prompts and results"


class ConversationFilter(admin.SimpleListFilter):
    """Reloads and reconnects open calls where nobody says anything: hidden unless asked for."""

    title = "conversation"
    parameter_name = "conversation"

    def lookups(self, request, model_admin):
        return [("all", "All, with empty connections"), ("empty", "Empty connections only")]

    def choices(self, changelist):
        value = self.value()
        yield {
            "selected": value is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "With at least one message",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        if self.value() == "all":
            return queryset
        if self.value() == "empty":
            return queryset.filter(message_count=0)
        return queryset.filter(message_count__gt=0)


class RatingFilter(admin.SimpleListFilter):
    title = "rating"
    parameter_name = "rating"

    def lookups(self, request, model_admin):
        return [(str(n), "★" * n) for n in range(5, 0, -1)] + [("none", "Not rated")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(rating__isnull=True)
        if self.value() in {"1", "2", "3", "4", "5"}:
            return queryset.filter(rating=int(self.value()))
        return queryset


class FallbackFilter(admin.SimpleListFilter):
    title = "fallbacks"
    parameter_name = "fallbacks"

    def lookups(self, request, model_admin):
        return [("yes", "Used a fallback"), ("no", "No fallback")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(fallbacks__gt=0)
        if self.value() == "no":
            return queryset.filter(fallbacks=0)
        return queryset


class InterruptedFilter(admin.SimpleListFilter):
    title = "interrupted replies"
    parameter_name = "interrupted"

    def lookups(self, request, model_admin):
        return [("yes", "Has interrupted replies"), ("no", "None interrupted")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(interruptions__gt=0)
        if self.value() == "no":
            return queryset.filter(interruptions=0)
        return queryset


def webhook_delivery_text(*, call: Call) -> str:
    """The state of the call's end-of-call report (``calls.webhook``), read-only; empty when
    no report was queued (no webhook configured)."""
    delivery = WebhookDelivery.objects.filter(call=call).first()
    if delivery is None:
        return ""
    tries = f"{delivery.attempts} attempt{'' if delivery.attempts == 1 else 's'}"
    last = delivery.last_error or (f"HTTP {delivery.last_status}" if delivery.last_status else "")
    if delivery.state == WebhookState.DELIVERED:
        return f"delivered {timezone.localtime(delivery.delivered_at):%Y-%m-%d %H:%M:%S} ({tries})"
    if delivery.state == WebhookState.FAILED:
        return f"failed after {tries}: {last}"
    if delivery.attempts == 0:
        return "pending"
    retry_at = timezone.localtime(delivery.next_attempt_at)
    return f"pending, retried {retry_at:%Y-%m-%d %H:%M:%S} ({tries}: {last})"


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = (
        "started_display",
        "prospect_display",
        "outcome_display",
        "duration_display",
        "turns",
        "fallbacks",
        "interruptions",
        "prompt_display",
        "end_reason",
        "rating_display",
    )
    list_filter = (
        ConversationFilter,
        "outcome",
        RatingFilter,
        "end_reason",
        "prompt_version",
        FallbackFilter,
        InterruptedFilter,
        "outcome_source",
        "transport",
        "llm_model",
        "tts_engine",
        "started_at",
    )
    date_hierarchy = "started_at"
    search_fields = ("=session_id", "prospect__name", "prospect__company", "phone_number", "messages__text")
    search_help_text = "Prospect name or company, phone number, words said in the call, or a session id."
    ordering = ("-started_at",)
    actions = ["export_csv", "export_json"]
    change_form_template = "admin/calls/call/change_form.html"
    change_list_template = "admin/calls/call/change_list.html"
    list_per_page = 50

    def get_queryset(self, request: HttpRequest):
        return call_list()

    @admin.display(description="started", ordering="started_at")
    def started_display(self, obj: Call) -> str:
        # Compact (the list is wide at 1366 px); the call's page shows the full date.
        return timezone.localtime(obj.started_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="prospect", ordering="prospect__name")
    def prospect_display(self, obj: Call) -> str:
        prospect = obj.prospect if isinstance(obj.prospect, dict) else {}
        parts = [str(prospect[key]) for key in ("name", "company") if prospect.get(key)]
        if obj.transport == Transport.PHONE:  # in this column: the list is wide at 1366 px
            parts.append(f"phone {obj.phone_number}".strip())
        return " · ".join(parts) or "—"

    @admin.display(description="prompt", ordering="prompt_version__number")
    def prompt_display(self, obj: Call) -> str:
        return f"v{obj.prompt_version.number}" if obj.prompt_version else "—"

    @admin.display(description="outcome", ordering="outcome")
    def outcome_display(self, obj: Call) -> str:
        if not obj.outcome:
            return "in progress" if obj.ended_at is None else "—"
        return obj.get_outcome_display()

    @admin.display(description="rating", ordering="rating")
    def rating_display(self, obj: Call) -> str:
        return "★" * obj.rating if obj.rating else ""

    @admin.display(description="duration", ordering="duration")
    def duration_display(self, obj: Call) -> str:
        if obj.duration is None:
            return "in progress"
        seconds = int(obj.duration.total_seconds())
        return f"{seconds // 60}:{seconds % 60:02d}"

    @admin.display(ordering="turns")
    def turns(self, obj: Call) -> int:
        return obj.turns

    @admin.display(ordering="fallbacks")
    def fallbacks(self, obj: Call) -> int:
        return obj.fallbacks

    @admin.display(description="interrupted", ordering="interruptions")
    def interruptions(self, obj: Call) -> int:
        return obj.interruptions

    # Reviewing needs the transcripts permission; nobody adds, edits or deletes calls here.
    def has_view_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return request.user.has_perm(REVIEW_PERMISSION)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REVIEW_PERMISSION) or request.user.has_perm(END_PERMISSION)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.has_perm(REVIEW_PERMISSION):
            return {}
        return actions

    @admin.action(description="Export the selected calls as CSV (one row per message)")
    def export_csv(self, request: HttpRequest, queryset) -> HttpResponse:
        return export_response(call_ids=queryset.values_list("pk", flat=True), fmt="csv")

    @admin.action(description="Export the selected calls as JSON (one row per message)")
    def export_json(self, request: HttpRequest, queryset) -> HttpResponse:
        return export_response(call_ids=queryset.values_list("pk", flat=True), fmt="json")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not str(object_id).isdecimal():  # "abc" is no call (not a server error)
            raise Http404("No call has this id.")
        call = get_object_or_404(call_list(), pk=object_id)
        extra_context = {
            **(extra_context or {}),
            "transcript": call_transcript(call=call),
            "call": call,
            "outcomes": Outcome.choices,
            "can_review": request.user.has_perm(REVIEW_PERMISSION),
            "has_recording": bool(call.recording),
            "webhook_delivery": webhook_delivery_text(call=call),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def review_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """A reviewer's rating, note and outcome correction (the transcript stays read-only)."""
        if request.method != "POST" or not request.user.has_perm(REVIEW_PERMISSION):
            return HttpResponse("Reviewing a call needs a POST by a transcript reviewer.", status=403)
        call = get_object_or_404(Call, pk=pk)
        raw_rating = request.POST.get("rating", "").strip()
        try:
            services.call_review(
                call=call,
                reviewer=request.user,
                rating=int(raw_rating) if raw_rating else None,
                note=request.POST.get("review_note", "")[:10_000],
                outcome=request.POST.get("outcome", "").strip() or None,
            )
        except ValueError as error:
            messages.error(request, f"Not saved: {error}.")
        else:
            messages.success(request, "Review saved.")
        return HttpResponseRedirect(reverse("admin:calls_call_change", args=[pk]))

    def recording_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The call's audio, only to staff who may read its transcript (never a public URL)."""
        if not request.user.has_perm(REVIEW_PERMISSION):
            return HttpResponse("You may not listen to calls.", status=403)
        call = get_object_or_404(Call, pk=pk)
        if not call.recording:
            raise Http404("This call has no recording.")
        try:
            audio = default_storage.open(call.recording.name, "rb")
            size = audio.size
        except (FileNotFoundError, OSError):
            raise Http404("The recording file is missing from storage.") from None
        filename = f"call-{call.session_id}.wav"
        # Range requests let the player seek (Django's FileResponse always sends it all).
        try:
            wanted = byte_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            audio.close()
            response = HttpResponse(f"The recording has {size} bytes.", status=416, content_type="text/plain")
            response["Content-Range"] = f"bytes */{size}"
            return response
        if wanted is None:
            response = FileResponse(audio, content_type="audio/wav", filename=filename)
        else:
            first, last = wanted
            response = StreamingHttpResponse(
                _file_part(audio, first, last - first + 1), status=206, content_type="audio/wav"
            )
            response["Content-Range"] = f"bytes {first}-{last}/{size}"
            response["Content-Length"] = str(last - first + 1)
            response["Content-Disposition"] = f'inline; filename="{filename}"'
        response["Accept-Ranges"] = "bytes"
        return response

    def get_urls(self):
        custom = [
            path("live/", self.admin_site.admin_view(self.live_view), name="calls_call_live"),
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="calls_call_dashboard"),
            path("<int:pk>/end/", self.admin_site.admin_view(self.end_view), name="calls_call_end"),
            path("<int:pk>/follow/", self.admin_site.admin_view(self.follow_view), name="calls_call_follow"),
            path("<int:pk>/review/", self.admin_site.admin_view(self.review_view), name="calls_call_review"),
            path(
                "<int:pk>/recording/",
                self.admin_site.admin_view(self.recording_view),
                name="calls_call_recording",
            ),
        ]
        return custom + super().get_urls()

    def live_view(self, request: HttpRequest) -> HttpResponse:
        if not (request.user.has_perm(REVIEW_PERMISSION) or request.user.has_perm(END_PERMISSION)):
            return HttpResponse("You may not see live calls.", status=403)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Calls in progress",
            "calls": live_calls(),
            "can_end": request.user.has_perm(END_PERMISSION),
            "can_follow": request.user.has_perm(REVIEW_PERMISSION),
        }
        return TemplateResponse(request, "admin/calls/call/live.html", context)

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        # Prompt editors see it too: it is where they compare prompt versions (no transcripts).
        if not (request.user.has_perm(REVIEW_PERMISSION) or request.user.has_perm(PROMPT_EDIT_PERMISSION)):
            return HttpResponse(
                "The dashboard is for transcript reviewers and prompt editors; ask an administrator "
                "to add you to one of those groups.",
                status=403,
            )
        days = request.GET.get("days", "7")
        days = int(days) if days.isdigit() and 1 <= int(days) <= 90 else 7
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Call metrics, last {days} days",
            "data": dashboard_data(days=days, links=request.user.has_perm(REVIEW_PERMISSION)),
            "day_choices": (1, 7, 30, 90),
            "can_open_calls": request.user.has_perm(REVIEW_PERMISSION),
        }
        return TemplateResponse(request, "admin/calls/call/dashboard.html", context)

    def follow_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not request.user.has_perm(REVIEW_PERMISSION):
            return HttpResponse("You may not read transcripts.", status=403)
        call = get_object_or_404(call_list(), pk=pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Following {call}",
            "call": call,
            "transcript": call_transcript(call=call),
            "can_end": request.user.has_perm(END_PERMISSION),
        }
        return TemplateResponse(request, "admin/calls/call/follow.html", context)

    def end_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST" or not request.user.has_perm(END_PERMISSION):
            return HttpResponse("Ending a call needs a POST by staff allowed to end calls.", status=403)
        call = get_object_or_404(Call, pk=pk)
        # Whichever server process holds the call gets this through the channel layer.
        if async_to_sync(live.request_call_end)(session_id=call.session_id, reason="staff_ended"):
            messages.success(request, f"Asked the server to end {call}.")
        else:
            messages.error(request, f"{call} could not be ended. {live.UNAVAILABLE_MESSAGE}")
        return HttpResponseRedirect(reverse("admin:calls_call_live"))


def _file_part(audio, start: int, length: int, block: int = 64 * 1024):
    """``length`` bytes of ``audio`` from ``start``, a block at a time (a range of an hour's
    recording is not read into memory); the file is closed when done or abandoned."""
    try:
        audio.seek(start)
        while length > 0:
            data = audio.read(min(block, length))
            if not data:
                break
            length -= len(data)
            yield data
    finally:
        audio.close()
