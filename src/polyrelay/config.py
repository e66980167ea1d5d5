"""Settings: environment variables (``POLYRELAY_*``) over a YAML file over defaults.

The YAML file also carries the operator's records (channels, tokens, prices); those
are loaded into the database at start (see ``polyrelay.seed``), so the database stays
the single source of truth the admin API edits at run time.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from polyrelay import multipart, proxies
from polyrelay.mail import SmtpSettings
from polyrelay.alerts.settings import AlertSettings
from polyrelay.api.midjourney_settings import MidjourneySettings
from polyrelay.api.signup_policy import SignupSettings
from polyrelay.billing.invitations import InvitationSettings
from polyrelay.api.sso.settings import SsoSettings
from polyrelay.api.two_factor_settings import SecuritySettings
from polyrelay.billing.budget import BudgetSettings
from polyrelay.billing.payments.settings import PaymentSettings
from polyrelay.relay.balance import BalanceSettings
from polyrelay.relay.healing import ProbeSettings
from polyrelay.store.files import FileSettings
from polyrelay.store.retention import UsageLogSettings
from polyrelay.tasks.settings import TaskSettings
from polyrelay.telemetry.tracing import TracingSettings

DEFAULT_DATABASE_URL = "sqlite:///./data/polyrelay.db"


class ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: str = "openai"
    base_url: str
    keys: list[str] = Field(min_length=1)
    models: list[str] = []
    model_mapping: dict[str, str] = {}
    priority: int = 0
    weight: int = Field(default=1, ge=0)
    enabled: bool = True
    timeout_s: float = Field(default=300.0, gt=0, description="Total time for one upstream call.")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    options: dict[str, Any] = Field(default={}, description="Adaptor-specific settings.")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        # Every adaptor appends its own version path (/v1/chat/completions, /v1beta/models...): a base
        # copied with its "/v1" would call /v1/v1/... and get 404s, so the suffix is dropped.
        return value.rstrip("/").removesuffix("/v1").rstrip("/")


class TokenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    key: str | None = Field(default=None, description="Absent: polyrelay generates one and prints it once.")
    quota_usd: float | None = Field(default=None, ge=0)
    models: list[str] | None = None
    expires_at: datetime | None = None
    enabled: bool = True
    user: str | None = Field(default=None, description="Owner; absent: a user named like the token (see docs/billing.md).")
    allowed_ips: list[str] | None = None
    rpm_limit: int | None = Field(default=None, ge=1)
    tpm_limit: int | None = Field(default=None, ge=1)


class UserConfig(BaseModel):
    """An account. ``balance_usd`` is credited once, when polyrelay first creates the user."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: str = Field(default="user", pattern="^(admin|user)$")
    group: str = "default"
    balance_usd: float = Field(default=0.0, ge=0)
    unlimited: bool = False
    enabled: bool = True
    password: str | None = Field(default=None, description="For console login; stored as an argon2 hash.")
    rpm_limit: int | None = Field(default=None, ge=1)
    tpm_limit: int | None = Field(default=None, ge=1)


class GroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(default=1.0, ge=0, description="Price multiplier for the group's users.")
    channels: list[str] | None = Field(default=None, description="Channel names the group may use; absent: all.")


class PriceConfig(BaseModel):
    """USD amounts as an operator writes them; converted to integer micro-USD on load."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0, description="Cache reads; absent: input price.")
    cache_write_per_mtok: float | None = Field(default=None, ge=0, description="Cache writes; absent: input price.")
    per_request: float | None = Field(default=None, ge=0)
    per_image: float | None = Field(default=None, ge=0)
    per_second: float | None = Field(default=None, ge=0)
    per_mchar: float | None = Field(default=None, ge=0)


class MetricsSettings(BaseModel):
    """``GET /metrics`` (see docs/operations.md): the admin key, or a scrape from one of these networks."""

    model_config = ConfigDict(extra="forbid")

    allow_unauthenticated_from: list[str] = Field(
        default=["127.0.0.1/32", "::1/128"], description="CIDRs that may scrape /metrics without the admin key."
    )

    @field_validator("allow_unauthenticated_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [proxies.network(cidr) for cidr in value]


class ConsoleSettings(BaseModel):
    """The console's public pages and its HTTP compression (see docs/console.md)."""

    model_config = ConfigDict(extra="forbid")

    public_prices: bool = Field(default=True, description="Serve the price list to visitors who are not signed in.")
    public_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=512,
        description="The base URL callers use (e.g. https://ai.example.com); absent: the address each request came to.",
    )
    compress_min_bytes: int = Field(default=1024, ge=0, description="Compress console and /api/ answers from this size.")


class Settings(BaseSettings):
    """Process settings. Precedence: ``POLYRELAY_*`` env > YAML file > defaults."""

    model_config = SettingsConfigDict(env_prefix="POLYRELAY_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 3000
    workers: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_multipart_parts: int = Field(default=multipart.MAX_PARTS, ge=1, description="Parts per multipart body.")
    max_multipart_field_bytes: int = Field(
        default=multipart.MAX_FIELD_BYTES, gt=0, description="Bytes per multipart part that is not a file."
    )
    trusted_proxies: list[str] = Field(
        default=[], description="CIDRs of reverse proxies whose X-Forwarded-For/-Proto and X-Real-IP are believed."
    )
    log_flush_interval_ms: int = Field(default=100, gt=0, le=100)
    snapshot_refresh_s: float = Field(default=2.0, gt=0)
    cooldown_after_failures: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)
    disable_after_failures: int = Field(default=0, ge=0, description="0: never disable automatically.")
    key_rest_s: float = Field(default=60.0, ge=0)
    output_estimate_tokens: int = Field(default=1024, ge=0)
    allow_private_image_hosts: bool = Field(
        default=False, description="Let translations fetch image URLs on private/loopback addresses (SSRF risk)."
    )
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object per log line, "
                                                "and one per request on the polyrelay.access logger.")
    metrics: MetricsSettings = MetricsSettings()
    tasks: TaskSettings = TaskSettings()  # the asynchronous task engine (see docs/tasks.md)
    budget: BudgetSettings = BudgetSettings()  # metered money leased to each node (see docs/scaling.md)
    probes: ProbeSettings = ProbeSettings()  # self-healing channels (see docs/operations.md)
    alerts: AlertSettings = AlertSettings()  # webhooks and email (see docs/operations.md)
    midjourney: MidjourneySettings = MidjourneySettings()
    files: FileSettings = FileSettings()  # re-hosting provider results (see docs/configuration.md)
    usage_logs: UsageLogSettings = UsageLogSettings()  # raw-row retention (see docs/operations.md)
    tracing: TracingSettings = TracingSettings()  # OpenTelemetry traces, off by default (see docs/operations.md)
    # Mail to users and the operator, self-service sign-up and invitations (see docs/platform.md).
    smtp: SmtpSettings | None = None
    signup: SignupSettings = SignupSettings()
    invitations: InvitationSettings = InvitationSettings()
    payments: PaymentSettings = PaymentSettings()  # top-up by Stripe / Epay (see docs/platform.md)
    channel_balance: BalanceSettings = BalanceSettings()  # fetched upstream balances (see docs/operations.md)
    console: ConsoleSettings = ConsoleSettings()  # public pages, compression (see docs/console.md)

    admin_key: str | None = Field(default=None, description="Bearer key of the admin API (/api/...).")
    redis_url: str | None = Field(default=None, description="Share rate limits between processes through Redis.")
    cluster_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Namespace of the state nodes share in Redis; absent: derived from database_url (polyrelay.cluster).",
    )
    session_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    cookie_secure: Literal["auto"] | bool = Field(default="auto", description="Secure session cookie; auto: over HTTPS.")
    sign_in_throttle_entries: int = Field(default=10_000, ge=2, description="Sign-in failure table size per process.")
    sso: SsoSettings = SsoSettings()  # single sign-on: OpenID Connect and GitHub (see docs/platform.md)
    public_url: str | None = Field(
        default=None, pattern=r"^https?://[^/?#\s]+$", max_length=256,
        description="Where users open the console (scheme://host[:port]): the base of mailed links, single sign-on "
                    "redirects and payment return URLs unless a block sets its own; passkeys are bound to its host.",
    )
    security: SecuritySettings = SecuritySettings()  # two-factor sign-in (see docs/platform.md)

    channels: list[ChannelConfig] = []
    users: list[UserConfig] = []
    groups: dict[str, GroupConfig] = {}
    tokens: list[TokenConfig] = []
    prices: dict[str, PriceConfig] = {}

    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        return [proxies.network(cidr) for cidr in value]

    @property
    def mail_server(self) -> SmtpSettings | None:
        """The SMTP server: the ``smtp:`` block, else the one written in the alerts' email block."""
        email = self.alerts.email
        return self.smtp or (email.server if email is not None else None)

    @model_validator(mode="after")
    def _one_public_url(self) -> Settings:
        """The top-level ``public_url`` serves every feature that builds links; a block's own overrides it."""
        if self.public_url is not None:
            for block in (self.console, self.signup, self.sso, self.payments):
                if block.public_url is None:
                    block.public_url = self.public_url
        return self

    @model_validator(mode="after")
    def _mail_is_reachable(self) -> Settings:
        if self.alerts.email is not None and self.mail_server is None:
            raise ValueError("alerts.email needs an SMTP server: an smtp: block, or host and from in alerts.email")
        if self.signup.mode != "closed" and self.signup.require_email_verification \
                and (self.mail_server is None or self.signup.public_url is None):
            raise ValueError("signup.require_email_verification mails a link: it needs an smtp: block and "
                             "public_url (or signup.public_url)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file so one config can serve dev and prod.
        return env_settings, init_settings


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in string values, so secrets stay out of the file."""
    if isinstance(node, dict):
        return {key: _expand_env(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_env(value) for value in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ValueError(f"the config refers to ${{{name}}}, but that environment variable is not set")

    return _ENV_REFERENCE.sub(value, node)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), apply the environment, then explicit (command-line) overrides."""
    data: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        loaded = _expand_env(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping")
        data.update(loaded)
        data["config_file"] = path
    settings = Settings(**data)
    explicit = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=explicit) if explicit else settings
