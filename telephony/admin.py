"""Staff side of telephony: prospects ("Call this prospect"), campaigns (CSV import, start,
stop), leads, the do-not-call list, and the phone leg of every call. Admin calls services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone

from telephony import services, twilio_client
from telephony.models import Campaign, DoNotCall, Lead, PhoneCall, Prospect


def _queue_or_warn(request: HttpRequest) -> bool:
    from telephony import tasks

    if not twilio_client.configured():
        messages.error(request, "Telephony is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN.")
        return False
    if not tasks.queue_ready():
        messages.error(request, "Dialing needs REDIS_URL and a running worker (manage.py dial_worker).")
        return False
    return True


@admin.register(Prospect)
class ProspectAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "phone", "timezone", "created_at"]
    search_fields = ["name", "company", "phone"]
    actions = ["call_now"]

    @admin.action(description="Call this prospect")
    def call_now(self, request: HttpRequest, queryset) -> None:
        if not _queue_or_warn(request):
            return
        from telephony import tasks

        queued = 0
        for prospect in queryset:
            if services.is_do_not_call(prospect.phone):
                messages.warning(request, f"{prospect} is on the do-not-call list: not called.")
                continue
            lead = services.lead_for_manual_call(prospect_id=prospect.pk)
            tasks.dial_lead.send(lead.pk)
            queued += 1
        if queued:
            messages.success(request, f"{queued} call(s) queued; they show in Live calls once answered.")


class CsvImportForm(forms.Form):
    file = forms.FileField(help_text="Columns: name, phone (E.164), and optionally company, timezone, email.")
    default_region = forms.CharField(
        required=False, max_length=2, help_text="For numbers without +country code, e.g. US."
    )


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "active",
        "max_concurrent_calls",
        "calling_hours_start",
        "calling_hours_end",
        "agent_profile",
        "import_link",
    ]

    @admin.display(description="Prospects")
    def import_link(self, campaign: Campaign) -> str:
        from django.utils.html import format_html

        return format_html(
            '<a href="{}">Import CSV</a>', reverse("admin:telephony_campaign_import", args=[campaign.pk])
        )

    actions = ["start_dialing", "stop_dialing"]

    def get_urls(self):
        return [
            path(
                "<int:campaign_id>/import/",
                self.admin_site.admin_view(self.import_csv),
                name="telephony_campaign_import",
            ),
            *super().get_urls(),
        ]

    def import_csv(self, request: HttpRequest, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        if not self.has_change_permission(request, campaign):
            return HttpResponseRedirect(reverse("admin:index"))
        form = CsvImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            report = services.campaign_import_csv(
                campaign=campaign,
                data=form.cleaned_data["file"].read(),
                default_region=form.cleaned_data["default_region"].upper() or None,
            )
            messages.success(
                request,
                f"{report.created} new prospect(s), {report.updated} updated, {report.queued} queued.",
            )
            for error in report.errors[:20]:
                messages.error(request, error)
            return HttpResponseRedirect(reverse("admin:telephony_campaign_change", args=[campaign.pk]))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "campaign": campaign,
            "title": "Import",
        }
        return render(request, "admin/telephony/campaign_import.html", context)

    @admin.action(description="Start dialing")
    def start_dialing(self, request: HttpRequest, queryset) -> None:
        if not _queue_or_warn(request):
            return
        from telephony import tasks

        for campaign in queryset:
            dial_pass = services.campaign_dialing_start(campaign_id=campaign.pk, now=timezone.now())
            tasks.dial_campaign.send(campaign.pk, dial_pass)
        messages.success(request, "Dialing started.")

    @admin.action(description="Stop dialing (calls in progress go on)")
    def stop_dialing(self, request: HttpRequest, queryset) -> None:
        queryset.update(active=False)
        messages.success(request, "Dialing stopped.")


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["prospect", "campaign", "state", "attempts", "outcome", "next_attempt_at"]
    list_filter = ["campaign", "state"]
    search_fields = ["prospect__name", "prospect__phone"]
    readonly_fields = ["claimed_at", "attempts", "last_error"]


@admin.register(DoNotCall)
class DoNotCallAdmin(admin.ModelAdmin):
    list_display = ["phone", "reason", "source", "added_at"]
    search_fields = ["phone"]

    def save_model(self, request, obj, form, change):
        services.do_not_call_add(phone=obj.phone, reason=obj.reason, source="staff")


@admin.register(PhoneCall)
class PhoneCallAdmin(admin.ModelAdmin):
    list_display = ["created_at", "direction", "to_number", "from_number", "status", "answered_by", "outcome"]
    list_filter = ["direction", "status", "outcome"]
    search_fields = ["call_sid", "to_number", "from_number", "prospect__name"]
    readonly_fields = [f.name for f in PhoneCall._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
