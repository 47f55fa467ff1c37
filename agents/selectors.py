"""Reads of agent profiles and prompt versions."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from django.db import models

from agents.models import PromptSplit, PromptVersion
from llm.config import LLMConfig, ModelParams

DEFAULT_PROFILE_NAME = "Default sales agent"


def prompt_version_get_active(*, profile_name: str = DEFAULT_PROFILE_NAME) -> PromptVersion | None:
    return (
        PromptVersion.objects.select_related("profile")
        .filter(profile__name=profile_name, is_active=True)
        .first()
    )


def prompt_version_for_new_call(
    *, profile_name: str = DEFAULT_PROFILE_NAME, rand: Callable[[], float] = random.random
) -> PromptVersion | None:
    """The prompt version a new call should use.

    While the profile has A/B splits with a positive weight, one of those versions is drawn
    at random in proportion to its weight; otherwise the active version. ``None`` when the
    profile has no version yet: the caller then creates version 1 with
    ``agents.services.prompt_version_ensure_initial``. One query either way.
    ``rand`` returns a float in [0, 1) (tests pass a fixed one).
    """
    rows = list(
        PromptVersion.objects.select_related("profile")
        .filter(profile__name=profile_name)
        .filter(models.Q(is_active=True) | models.Q(splits__weight__gt=0, splits__profile__name=profile_name))
        .annotate(split_weight=models.Sum("splits__weight", filter=models.Q(splits__weight__gt=0)))
        .order_by("number")
    )
    weighted = [(row, row.split_weight) for row in rows if row.split_weight]
    if weighted:
        point = rand() * sum(weight for _, weight in weighted)
        for version, weight in weighted:
            if point < weight:
                return version
            point -= weight
        return weighted[-1][0]
    return next((row for row in rows if row.is_active), None)


def prompt_split_list(*, profile_name: str = DEFAULT_PROFILE_NAME) -> list[PromptSplit]:
    """The profile's A/B splits with a positive weight, by version number."""
    return list(
        PromptSplit.objects.select_related("version")
        .filter(profile__name=profile_name, weight__gt=0)
        .order_by("version__number")
    )


def llm_config_for_version(*, base: LLMConfig, version: PromptVersion) -> LLMConfig:
    """The process config (timeouts, limits) with the version's prompt, fallbacks and params."""
    return dataclasses.replace(
        base,
        system_prompt=version.system_prompt,
        fallback_messages=(version.fallback_tier1, version.fallback_tier2, version.fallback_tier3),
        params=ModelParams(
            model=version.model,
            temperature=version.temperature,
            max_tokens=version.max_tokens,
            top_p=version.top_p,
            frequency_penalty=version.frequency_penalty,
            presence_penalty=version.presence_penalty,
        ),
    )


def prompt_version_list(*, profile_name: str = DEFAULT_PROFILE_NAME):
    """Versions newest first, each annotated with how many calls used it."""
    from django.db.models import Count

    return (
        PromptVersion.objects.filter(profile__name=profile_name)
        .select_related("profile", "created_by")
        .annotate(call_count=Count("calls"))
        .order_by("-number")
    )


EDITABLE_FIELDS = (
    "system_prompt",
    "fallback_tier1",
    "fallback_tier2",
    "fallback_tier3",
    "opener",
    "model",
    "temperature",
    "max_tokens",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
)


def prompt_version_diff(*, old: PromptVersion, new: PromptVersion) -> list[dict[str, object]]:
    """What changed from ``old`` to ``new``: one entry per changed field, with a unified
    diff for the texts."""
    import difflib

    changes: list[dict[str, object]] = []
    for field in EDITABLE_FIELDS:
        before, after = getattr(old, field), getattr(new, field)
        if before == after:
            continue
        entry: dict[str, object] = {"field": field, "before": before, "after": after}
        if isinstance(before, str) and ("\n" in before or "\n" in after or len(before) > 80):
            entry["diff"] = list(
                difflib.unified_diff(
                    before.splitlines(), after.splitlines(), f"v{old.number}", f"v{new.number}", lineterm=""
                )
            )
        changes.append(entry)
    return changes
