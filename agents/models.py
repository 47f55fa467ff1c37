"""Agent profiles and their versioned prompts. Versions are never overwritten."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AgentProfile(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("edit_prompts", "Can edit and activate prompt versions")]

    def __str__(self) -> str:
        return self.name


class PromptVersion(models.Model):
    """One saved state of an agent's prompt, fallback texts and model parameters."""

    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    system_prompt = models.TextField()
    fallback_tier1 = models.TextField("fallback tier 1")
    fallback_tier2 = models.TextField("fallback tier 2")
    fallback_tier3 = models.TextField("fallback tier 3")
    opener = models.TextField(
        "outbound opener",
        blank=True,
        help_text=(
            "The agent's first words when it calls a prospect (it waits for the caller on "
            "inbound calls). {name} and {company} are filled in from the prospect; ||BREAK|| "
            "splits it. Blank: the TELEPHONY_OPENER setting."
        ),
    )
    model = models.CharField("LLM model", max_length=200)
    temperature = models.FloatField()
    max_tokens = models.PositiveIntegerField()
    top_p = models.FloatField()
    frequency_penalty = models.FloatField()
    presence_penalty = models.FloatField()
    note = models.CharField(max_length=500, blank=True)
    is_active = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["profile", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["profile", "number"], name="unique_version_number"),
            models.UniqueConstraint(
                fields=["profile"], condition=models.Q(is_active=True), name="one_active_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.profile.name} v{self.number}"


class PromptSplit(models.Model):
    """A/B test: while a profile has splits with a positive weight, each new call gets one of
    those versions at random in proportion to its weight (instead of the active version)."""

    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="splits")
    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="splits")
    weight = models.PositiveIntegerField(
        default=1, help_text="Share of new calls relative to the other versions' weights; 0 pauses it."
    )

    class Meta:
        verbose_name = "prompt A/B split"
        constraints = [models.UniqueConstraint(fields=["profile", "version"], name="unique_split_version")]

    def __str__(self) -> str:
        return f"{self.version} × {self.weight}"
