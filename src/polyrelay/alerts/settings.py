"""The ``alerts:`` block of the settings (docs/operations.md, "Alerts")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polyrelay.mail import SmtpSettings


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
    """Alert email: the operator's addresses; the server is the top-level ``smtp:`` block, or (the older
    form, still read) its keys written here beside ``to``."""

    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(min_length=1, description="The operator's addresses.")
    server: SmtpSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _server_beside_to(cls, data: Any) -> Any:
        if isinstance(data, dict) and "host" in data:
            return {"to": data.get("to"), "server": {key: value for key, value in data.items() if key != "to"}}
        return data


class AlertSettings(BaseModel):
    """Where alerts go and when they fire; with no webhook and no email, the watch loop does not run."""

    model_config = ConfigDict(extra="forbid")

    webhooks: list[WebhookSettings] = []
    email: EmailSettings | None = None
    interval_s: float = Field(default=30.0, gt=0, description="How often the conditions are evaluated.")
    repeat_s: float = Field(default=3600.0, ge=0, description="Re-notify an ongoing condition this often; 0: never.")
    timeout_s: float = Field(default=10.0, gt=0, description="Per webhook POST.")
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
