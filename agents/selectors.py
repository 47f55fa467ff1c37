"""Reads of agent profiles and prompt versions."""

from __future__ import annotations

import dataclasses

from agents.models import PromptVersion
from llm.config import LLMConfig, ModelParams

DEFAULT_PROFILE_NAME = "Default sales agent"


def prompt_version_get_active(*, profile_name: str = DEFAULT_PROFILE_NAME) -> PromptVersion | None:
    return (
        PromptVersion.objects.select_related("profile")
        .filter(profile__name=profile_name, is_active=True)
        .first()
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
