"""Operator settings of the Midjourney family (the ``midjourney:`` section of the config file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MidjourneySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    banned_words: list[str] = Field(default=[], description="Prompts containing one (case-insensitive) get code 24.")
    mode_multipliers: dict[str, float] = Field(
        default={"fast": 1.0, "relax": 1.0, "turbo": 1.0},
        description="Price multiplier per speed mode (/mj-fast, /mj-relax, /mj-turbo; plain /mj is fast).",
    )
