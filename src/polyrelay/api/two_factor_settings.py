"""Settings of two-factor sign-in (``security:`` in the config; see docs/platform.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_2fa_for_admins: bool = Field(
        default=False,
        description="Administrators without a second factor may only enrol one after signing in with a password.",
    )
