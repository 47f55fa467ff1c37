"""Writes of agent profiles and prompt versions."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from agents.models import AgentProfile, PromptVersion
from agents.selectors import DEFAULT_PROFILE_NAME, prompt_version_get_active
from llm.config import LLMConfig


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
    try:
        with transaction.atomic():
            profile, _ = AgentProfile.objects.get_or_create(name=profile_name)
            if profile.versions.exists():
                # Versions exist but none is active (cannot happen through admin): use the newest.
                newest = profile.versions.order_by("-number").first()
                newest.is_active = True
                newest.save(update_fields=["is_active"])
                return newest
            params = config.params
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
