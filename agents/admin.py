"""Prompt versions in admin: every save is a new version; one is active."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from agents.models import AgentProfile, PromptSplit, PromptVersion
from agents.selectors import EDITABLE_FIELDS, prompt_version_diff
from agents.services import (
    PromptVersionError,
    prompt_version_activate,
    prompt_version_create,
    prompt_version_delete,
    prompt_version_validate,
)
from agents.try_it import try_prompt
from llm.prompts import build_system_prompt

EDIT_PERMISSION = "agents.edit_prompts"
SAMPLE_PROSPECT = {"name": "Dana Ruiz", "company": "Acme Logistics", "industry": "logistics"}


class PromptVersionForm(forms.ModelForm):
    activate = forms.BooleanField(required=False, initial=True, help_text="New calls use it at once.")

    class Meta:
        model = PromptVersion
        fields = [*EDITABLE_FIELDS, "note"]
        widgets = {
            "system_prompt": forms.Textarea(attrs={"rows": 24, "cols": 100}),
            "opener": forms.Textarea(attrs={"rows": 3, "cols": 80}),  # a sentence or two
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if all(field in cleaned for field in EDITABLE_FIELDS):
            validation = prompt_version_validate(cleaned)
            for field, problem in validation.errors.items():
                self.add_error(field if field in self.fields else None, problem)
            self.warnings = validation.warnings
        return cleaned


@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin):
    form = PromptVersionForm
    list_display = (
        "__str__",
        "is_active",
        "model",
        "temperature",
        "note",
        "created_by",
        "created_at",
        "calls_made",
    )
    list_filter = ("is_active", "profile")
    search_fields = ("system_prompt", "note")
    actions = ["activate_selected"]
    change_form_template = "admin/agents/promptversion/change_form.html"

    def get_queryset(self, request: HttpRequest):
        from django.db.models import Count

        return (
            super()
            .get_queryset(request)
            .select_related("profile", "created_by")
            .annotate(call_count=Count("calls"))
        )

    @admin.display(description="calls", ordering="call_count")
    def calls_made(self, obj: PromptVersion) -> int:
        return obj.call_count

    # Editors need the custom permission; everyone with view permission may look.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)

    def has_delete_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION) or request.user.has_perm("agents.view_promptversion")

    def save_model(
        self, request: HttpRequest, obj: PromptVersion, form: PromptVersionForm, change: bool
    ) -> None:
        # Never overwrite: the edited values become the next version.
        profile = (
            obj.profile
            if obj.profile_id
            else AgentProfile.objects.get_or_create(name="Default sales agent")[0]
        )
        values = {field: form.cleaned_data[field] for field in EDITABLE_FIELDS}
        try:
            version = prompt_version_create(
                profile=profile,
                values=values,
                created_by=request.user,
                note=form.cleaned_data.get("note", ""),
                activate=form.cleaned_data.get("activate", False),
            )
        except PromptVersionError as error:
            messages.error(request, str(error))
            return
        for warning in getattr(form, "warnings", []):
            messages.warning(request, warning)
        obj.pk, obj.number, obj.is_active = version.pk, version.number, version.is_active
        form.instance = version

    def response_change(self, request: HttpRequest, obj: PromptVersion) -> HttpResponse:
        self.message_user(request, f"Saved as {obj} (earlier versions are kept).", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:agents_promptversion_change", args=[obj.pk]))

    def delete_model(self, request: HttpRequest, obj: PromptVersion) -> None:
        try:
            prompt_version_delete(version=obj)
        except PromptVersionError as error:
            messages.error(request, str(error))

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for version in queryset:
            self.delete_model(request, version)

    @admin.action(description="Activate the selected version (new calls use it)", permissions=["change"])
    def activate_selected(self, request: HttpRequest, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        prompt_version_activate(version=version)
        self.message_user(request, f"{version} is now active for new calls.", messages.SUCCESS)

    def get_urls(self):
        custom = [
            path(
                "<int:pk>/activate/",
                self.admin_site.admin_view(self.activate_view),
                name="agents_promptversion_activate",
            ),
            path(
                "<int:pk>/diff/", self.admin_site.admin_view(self.diff_view), name="agents_promptversion_diff"
            ),
            path("<int:pk>/try/", self.admin_site.admin_view(self.try_view), name="agents_promptversion_try"),
        ]
        return custom + super().get_urls()

    def activate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(PromptVersion, pk=pk)
        if request.method != "POST" or not self.has_change_permission(request, version):
            return HttpResponse("Activating needs a POST by a prompt editor.", status=403)
        prompt_version_activate(version=version)
        self.message_user(request, f"{version} is now active for new calls.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:agents_promptversion_change", args=[pk]))

    def try_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Stream one reply of this version to a typed message (newline-delimited JSON)."""
        version = get_object_or_404(PromptVersion, pk=pk)
        if request.method != "POST" or not self.has_view_permission(request, version):
            return HttpResponse("Trying a prompt needs a POST by staff who may see prompts.", status=403)
        message = request.POST.get("message", "").strip()
        if not message or len(message) > 2000:
            return HttpResponse("Type a message of 1 to 2000 characters.", status=400)
        prospect = {key: request.POST.get(key, "").strip()[:200] for key in ("name", "company", "industry")}
        return StreamingHttpResponse(
            try_prompt(version=version, message=message, prospect=prospect),
            content_type="application/x-ndjson",
        )

    def diff_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        new = get_object_or_404(PromptVersion, pk=pk)
        if not self.has_view_permission(request, new):
            return HttpResponse(status=403)
        against = request.GET.get("against")
        old_qs = PromptVersion.objects.filter(profile_id=new.profile_id)
        old = (
            get_object_or_404(old_qs, pk=against)
            if against and against.isdecimal()
            else old_qs.filter(number__lt=new.number).order_by("-number").first()
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"What changed in {new}",
            "new": new,
            "old": old,
            "changes": prompt_version_diff(old=old, new=new) if old else [],
            "versions": old_qs.exclude(pk=new.pk).order_by("-number"),
        }
        return TemplateResponse(request, "admin/agents/promptversion/diff.html", context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        prompt = obj.system_prompt if obj else form_prompt(context)
        context["preview_prompt"] = build_system_prompt(prompt, SAMPLE_PROSPECT) if prompt else ""
        context["sample_prospect"] = SAMPLE_PROSPECT
        return super().render_change_form(request, context, add, change, form_url, obj)


def form_prompt(context: dict[str, Any]) -> str:
    adminform = context.get("adminform")
    if adminform is None:
        return ""
    return adminform.form.initial.get("system_prompt", "") or ""


class PromptSplitFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        for form in self.forms:
            version = form.cleaned_data.get("version") if hasattr(form, "cleaned_data") else None
            if version is not None and self.instance.pk and version.profile_id != self.instance.pk:
                form.add_error("version", f"{version} belongs to another agent profile.")


class PromptSplitInline(admin.TabularInline):
    """A/B test: new calls are shared between these versions by weight (the active
    version is used when no split has a positive weight)."""

    model = PromptSplit
    formset = PromptSplitFormSet
    extra = 1
    verbose_name = "A/B split"
    verbose_name_plural = (
        "A/B test: new calls are shared between these prompt versions in proportion to their "
        "weights (none, or all weights 0: every new call uses the active version)"
    )

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "version":
            # Versions are made on their own page; no add/edit pop-ups from a weight row.
            for flag in ("can_add_related", "can_change_related", "can_delete_related", "can_view_related"):
                setattr(field.widget, flag, False)
        return field

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "version":
            profile_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            queryset = PromptVersion.objects.select_related("profile").order_by("-number")
            kwargs["queryset"] = queryset.filter(profile_id=profile_id) if profile_id else queryset
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION) or request.user.has_perm("agents.view_agentprofile")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "ab_test", "created_at")
    inlines = [PromptSplitInline]

    @admin.display(description="A/B test")
    def ab_test(self, obj: AgentProfile) -> str:
        splits = [split for split in obj.splits.select_related("version") if split.weight > 0]
        if not splits:
            return "off (active version)"
        total = sum(split.weight for split in splits)
        return ", ".join(
            f"v{split.version.number} {100 * split.weight / total:.0f}%"
            for split in sorted(splits, key=lambda s: s.version.number)
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj: AgentProfile | None = None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj: AgentProfile | None = None) -> bool:
        return request.user.has_perm(EDIT_PERMISSION) or request.user.has_perm("agents.view_agentprofile")
