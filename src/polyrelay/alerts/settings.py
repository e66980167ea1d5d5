"""The ``alerts:`` block of the settings (docs/operations.md, "Alerts")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    format: Literal["generic", "slack", "feishu", "dingtalk"] = "generic"
    secret: str | None = Field(default=None, description="Feishu / DingTalk signing secret (their 'sign' option).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook url must start with http:// or https://")
        return value


class EmailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    user: str | None = None
    password: str | None = None
    starttls: bool = True
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1, description="The operator's addresses.")


class AlertSettings(BaseModel):
    """Where alerts go and when they fire; with no webhook and no email, the watch loop does not run."""

    model_config = ConfigDict(extra="forbid")

    webhooks: list[WebhookSettings] = []
    email: EmailSettings | None = None
    interval_s: float = Field(default=30.0, gt=0, description="How often the conditions are evaluated.")
    repeat_s: float = Field(default=3600.0, ge=0, description="Re-notify an ongoing condition this often; 0: never.")
    timeout_s: float = Field(default=10.0, gt=0, description="Per webhook POST or SMTP session.")
    error_rate: float | None = Field(default=0.5, gt=0, le=1, description="Share of 5xx answers; absent: off.")
    error_window_s: float = Field(default=300.0, gt=0)
    error_min_requests: int = Field(default=20, ge=1, description="Fewer requests in the window: no verdict.")
    balance_below_usd: float | None = Field(default=None, ge=0, description="Absent: off.")
    channel_balance_below_usd: float | None = Field(
        default=None, ge=0, description="An enabled channel's upstream balance (fetched or noted) below this; absent: off.")
    task_backlog_after_s: float = Field(default=3600.0, gt=0, description="A task unfinished this long is late.")
    task_backlog_count: int | None = Field(default=100, ge=0, description="More late tasks than this; absent: off.")

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks or self.email)
