"""Writes of agent profiles and prompt versions. A version is never changed once saved."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from agents.models import AgentProfile, PromptVersion
from agents.selectors import DEFAULT_PROFILE_NAME, EDITABLE_FIELDS, prompt_version_get_active
from llm.config import LLMConfig, ModelParams

_SPEAKABLE = re.compile(r"[^\W_]")
BREAK_GUIDANCE = re.compile(r"\|\|\s*break\s*\|\|", re.IGNORECASE)


class PromptVersionError(Exception):
    """A version that cannot be saved, activated or deleted; the message says why."""


@dataclass(frozen=True)
class PromptValidation:
    errors: dict[str, str]
    warnings: list[str]


def prompt_version_validate(values: dict[str, Any]) -> PromptValidation:
    """Errors block saving; warnings (a prompt without ||BREAK|| guidance) do not."""
    errors: dict[str, str] = {}
    warnings: list[str] = []
    params = ModelParams(**{k: values[k] for k in ModelParams.__dataclass_fields__ if k in values})
    errors.update(params.validation_errors())
    if not str(values.get("system_prompt", "")).strip():
        errors["system_prompt"] = "must not be empty"
    for tier in ("fallback_tier1", "fallback_tier2", "fallback_tier3"):
        text = str(values.get(tier, "")).strip()
        if not text:
            errors[tier] = "must not be empty: it is what the caller hears when the model fails"
        elif not _SPEAKABLE.search(text):
            errors[tier] = "must contain words the voice can speak"
    opener_problem = opener_template_problem(str(values.get("opener", "")))
    if opener_problem:
        errors["opener"] = opener_problem
    if "system_prompt" not in errors and not BREAK_GUIDANCE.search(values["system_prompt"]):
        warnings.append(
            "The prompt does not mention the ||BREAK|| marker: replies will only be cut at sentence "
            "ends, and the first audio may come later."
        )
    return PromptValidation(errors, warnings)


OPENER_FIELDS = ("name", "company")


def opener_template_problem(template: str) -> str | None:
    """Why an outbound opener cannot be filled in (None when it can): only ``{name}`` and
    ``{company}`` are known; a literal brace is written ``{{`` or ``}}``."""
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:
        return f"cannot be filled in ({error}); write a literal brace as {{{{ or }}}}"
    unknown = sorted(fields - set(OPENER_FIELDS))
    if unknown:
        names = ", ".join("{" + field + "}" for field in unknown)
        return f"unknown placeholder {names}: use {{name}} or {{company}}"
    return None


def prompt_version_ensure_initial(
    *, config: LLMConfig, profile_name: str = DEFAULT_PROFILE_NAME
) -> PromptVersion:
    """The active version, creating version 1 from the environment the first time.

    After that first version, admin is the source of truth: the environment's prompt,
    fallbacks and model parameters are no longer read. Safe to call from several
    processes at once (the unique constraints decide the race).
    """
    active = prompt_version_get_active(profile_name=profile_name)
    if active is not None:
        return active
    params = config.params
    try:
        with transaction.atomic():
            profile, _ = AgentProfile.objects.get_or_create(name=profile_name)
            newest = profile.versions.order_by("-number").first()
            if newest is not None:
                # Versions exist but none is active (cannot happen through admin): use the newest.
                PromptVersion.objects.filter(pk=newest.pk).update(is_active=True)
                newest.is_active = True
                return newest
            return PromptVersion.objects.create(
                profile=profile,
                number=1,
                system_prompt=config.system_prompt,
                fallback_tier1=config.fallback_messages[0],
                fallback_tier2=config.fallback_messages[1],
                fallback_tier3=config.fallback_messages[2],
                model=params.model,
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                top_p=params.top_p,
                frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                note="Created from the environment at first start",
                is_active=True,
            )
    except IntegrityError:
        active = prompt_version_get_active(profile_name=profile_name)
        if active is None:
            raise
        return active


@transaction.atomic
def prompt_version_create(
    *,
    profile: AgentProfile,
    values: dict[str, Any],
    created_by: AbstractBaseUser | None,
    note: str = "",
    activate: bool = False,
) -> PromptVersion:
    """Save ``values`` as the profile's next version (never overwriting an existing one)."""
    validation = prompt_version_validate(values)
    if validation.errors:
        problems = "; ".join(f"{field}: {problem}" for field, problem in validation.errors.items())
        raise PromptVersionError(f"Invalid prompt version: {problems}")
    # Lock the profile row so two editors saving at once get consecutive numbers.
    AgentProfile.objects.select_for_update().filter(pk=profile.pk).first()
    last = profile.versions.order_by("-number").values_list("number", flat=True).first() or 0
    version = PromptVersion.objects.create(
        profile=profile,
        number=last + 1,
        created_by=created_by if created_by is not None and created_by.is_authenticated else None,
        note=note,
        is_active=False,
        **{field: values[field] for field in EDITABLE_FIELDS},
    )
    if activate:
        prompt_version_activate(version=version)
    return version


@transaction.atomic
def prompt_version_activate(*, version: PromptVersion) -> None:
    """Make ``version`` the one new calls use (calls in progress keep theirs)."""
    PromptVersion.objects.filter(profile_id=version.profile_id, is_active=True).exclude(pk=version.pk).update(
        is_active=False
    )
    PromptVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True


def prompt_version_delete(*, version: PromptVersion) -> None:
    if version.is_active:
        raise PromptVersionError(f"v{version.number} is active: activate another version before deleting it.")
    try:
        version.delete()
    except ProtectedError:
        raise PromptVersionError(
            f"v{version.number} was used by stored calls and is kept, so their transcripts say which "
            "prompt they had."
        ) from None
