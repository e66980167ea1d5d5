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
    strip_speed_flags: bool = Field(
        default=False, description="Remove --fast/--relax/--turbo from prompts before they go upstream."
    )
    forward_images: bool = Field(
        default=True,
        description="Serve result images through polyrelay: imageUrl becomes <base>/mj/image/<task id> "
        "(new-api's MjForwardUrlEnabled).",
    )
    public_base_url: str = Field(
        default="", description="Base URL of forwarded image links (e.g. https://relay.example.com); "
        "empty: the base URL of the caller's request."
    )
    image_cache_dir: str = Field(default="data/mj-images", description="Where forwarded images are cached.")
    image_cache_max_bytes: int = Field(default=1024**3, ge=0, description="Cache bound; oldest files go first.")
    image_max_bytes: int = Field(default=32 * 1024**2, gt=0, description="Largest image polyrelay forwards.")
    image_timeout_s: float = Field(default=30.0, gt=0, description="Time limit of one upstream image download.")
