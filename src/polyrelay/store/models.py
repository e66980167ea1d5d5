"""Database tables. Money is integer micro-USD (``*_micros``); never a float."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, Date, DateTime, Float, Index, Integer, LargeBinary, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from polyrelay.store.crypto import EncryptedKeys, EncryptedText


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, datetime: DateTime(timezone=True)}


class Channel(Base):
    """An upstream: one provider protocol, its base URL, keys and the models it serves."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(512))
    keys: Mapped[list[str]] = mapped_column(EncryptedKeys)  # ciphertext in the row, the list in memory
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    model_mapping: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why a channel is not in rotation: "" while healthy, else e.g. "auto-disabled: 10 failures".
    disabled_reason: Mapped[str] = mapped_column(String(512), default="")
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    cooldown_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    timeout_s: Mapped[float] = mapped_column(Float, default=300.0)
    connect_timeout_s: Mapped[float] = mapped_column(Float, default=10.0)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The last channel test (admin API / CLI): when, how long, and what it said ("ok" or the error).
    tested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    test_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_result: Mapped[str] = mapped_column(Text, default="")
    balance_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # operator-noted upstream balance
    # When ``balance_micros`` was last fetched from the upstream (relay/balance.py); None: noted by hand.
    balance_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Token(Base):
    """A caller key. Only its SHA-256 is stored; the key itself is shown once."""

    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_tokens_user_id_name"),)  # names are per user

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_hint: Mapped[str] = mapped_column(String(32), default="")
    # The token's own spending limit (None: only its user's balance limits it); used_micros is its spend.
    quota_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Whose balance pays; None only for rows older than accounts (seeding gives them a user).
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    allowed_ips: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # IPs/CIDRs; None: any
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # requests per minute
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # tokens per minute
    # What an administrator imposed (PATCH /api/tokens/{id}); the owner's settings above cannot lift it,
    # the snapshot applies the stricter of each pair.
    admin_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    admin_quota_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    admin_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    admin_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    admin_allowed_ips: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    admin_rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    admin_tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The period each side's limit resets after (daily | weekly | monthly; None: never), see budget_periods.
    budget_period: Mapped[str | None] = mapped_column(String(8), nullable=True)
    admin_budget_period: Mapped[str | None] = mapped_column(String(8), nullable=True)


class Price(Base):
    """Price of one model (or wildcard pattern, or ``default``) in micro-USD."""

    __tablename__ = "prices"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    input_per_mtok: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_per_mtok: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cached_input_per_mtok: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cache_write_per_mtok: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    per_request: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    per_image: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    per_second: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    per_mchar: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class UsageLog(Base):
    """One row per relayed request, written by the batching writer."""

    __tablename__ = "usage_logs"
    __table_args__ = (
        Index("ix_usage_logs_created_at", "created_at"),
        Index("ix_usage_logs_token_id_created_at", "token_id", "created_at"),
        Index("ix_usage_logs_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_name: Mapped[str] = mapped_column(String(128), default="")
    channel_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    channel_name: Mapped[str] = mapped_column(String(128), default="")
    family: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(256), default="")
    upstream_model: Mapped[str] = mapped_column(String(256), default="")
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status_code: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)  # cache reads (part of prompt_tokens)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)  # cache writes (part of prompt_tokens)
    images: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    characters: Mapped[int] = mapped_column(Integer, default=0)
    usage_source: Mapped[str] = mapped_column(String(16), default="")
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    price_set: Mapped[bool] = mapped_column(Boolean, default=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttfb_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Meta(Base):
    """Small key/value facts; ``records_version`` is bumped whenever the hot-path records change."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Task(Base):
    """One asynchronous upstream job (Midjourney, later Suno, Luma, ...), driven by ``polyrelay.tasks``.

    Times are epoch milliseconds (integers compare the same on SQLite and PostgreSQL,
    and match the task APIs' own clocks). ``status`` and ``settlement`` only change by
    compare-and-set UPDATEs; ``lease_owner`` says which poller may advance the task now.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_next_poll_at", "next_poll_at"),
        Index("ix_tasks_token_id_submit_time", "token_id", "submit_time"),
        Index("ix_tasks_channel_id_upstream_id", "channel_id", "upstream_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_name: Mapped[str] = mapped_column(String(128), default="")
    family: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64), default="")  # the billed model name, e.g. mj_imagine
    mode: Mapped[str] = mapped_column(String(16), default="")  # e.g. fast | relax | turbo
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    channel_id: Mapped[int] = mapped_column(Integer)
    upstream_id: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[str] = mapped_column(String(16), default="")
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fail_reason: Mapped[str] = mapped_column(Text, default="")
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    settlement: Mapped[str] = mapped_column(String(16), default="held")  # held | kept | refunded
    submit_time: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finish_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    next_poll_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: nothing left to poll
    poll_count: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    notify_hook: Mapped[str] = mapped_column(String(1024), default="")
    # Set (to the change's time) while a notifyHook callback of the task is undelivered; see tasks/callbacks.py.
    notify_due_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=0)


class User(Base):
    """An account: its tokens spend its balance. ``unlimited`` users are served whatever the balance."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("email", name="uq_users_email"),
                      UniqueConstraint("invite_code", name="uq_users_invite_code"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")  # admin | user
    group: Mapped[str] = mapped_column(String(64), default="default")
    # Always equals the sum of the user's ledger entries (written in the same transactions).
    balance_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    unlimited: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # Stored lower-cased; unique where set. Verified means the user proved they read it (or an admin said so).
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Sign-up and invitations (docs/platform.md). Set when the user signed up themselves, not made by an admin.
    signed_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    invite_code: Mapped[str | None] = mapped_column(String(32), nullable=True)  # made when first asked for
    invited_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Rewards earned by inviting, not yet moved into the balance; the sum of the user's affiliate entries.
    affiliate_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    rewarded_invites: Mapped[int] = mapped_column(Integer, default=0)  # invitees that earned a reward, for the cap
    # A cap on what the user spends per budget_period (daily | weekly | monthly), on top of the balance.
    budget_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    budget_period: Mapped[str | None] = mapped_column(String(8), nullable=True)


class Group(Base):
    """A pricing group: a price multiplier (parts per million, 1_000_000 = x1) and the channels it may use."""

    __tablename__ = "groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    ratio_ppm: Mapped[int] = mapped_column(BigInteger, default=1_000_000)
    channels: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # channel names; None: all
    description: Mapped[str] = mapped_column(Text, default="")


class LedgerEntry(Base):
    """Append-only money movements; ``amount_micros`` is signed (a charge is negative).

    ``(request_id, kind)`` is unique, so a settlement, refund or top-up applies at most once.
    """

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("request_id", "kind", name="uq_ledger_request_kind"),
        Index("ix_ledger_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int] = mapped_column(Integer)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # charge | refund | topup | adjustment | redemption
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")


class WebSession(Base):
    """A console login; only the SHA-256 of the cookie value is stored."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserIdentity(Base):
    """An account at a single sign-on provider that signs in ``user_id``: the provider's name and its
    stable subject (OIDC ``sub``, GitHub user id); ``email`` is what the provider said when it was linked."""

    __tablename__ = "user_identities"
    __table_args__ = (UniqueConstraint("provider", "subject", name="uq_user_identities_provider_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RedemptionCode(Base):
    """A code worth an amount, redeemable once (a conditional UPDATE claims it)."""

    __tablename__ = "redemption_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hint: Mapped[str] = mapped_column(String(32), default="")
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    redeemed_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    redeemed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeadLetter(Base):
    """A write the batching writer could not commit, kept instead of retried forever (see docs/billing.md)."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    request_id: Mapped[str] = mapped_column(String(64), default="")  # "" for channel-health updates
    # True when the usage row committed with its free text blanked, and its money with it (only the text
    # was refused; ``row`` keeps the original); False when nothing of it was written, so nothing charged.
    committed: Mapped[bool] = mapped_column(Boolean, default=False)
    row: Mapped[str] = mapped_column(Text)  # JSON: the usage-log row and its ledger entry, or the channel updates
    error: Mapped[str] = mapped_column(Text, default="")


class BudgetLease(Base):
    """Money of one metered account (``u:<user id>``) or key (``t:<token id>``) that one node may spend
    without asking the database again (see polyrelay.billing.budget). Rows of a node that stopped
    renewing them count for nothing once ``expires_at`` has passed."""

    __tablename__ = "budget_leases"
    __table_args__ = (Index("ix_budget_leases_subject", "subject"),)

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(32), primary_key=True)
    micros: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)  # epoch milliseconds


class BudgetPeriod(Base):
    """What was charged under one period of a periodic budget (``t:<token id>`` or ``u:<user id>``).

    A new period is a new row, so a budget resets exactly once per period on any number of nodes;
    a charge counts in the period its call was admitted in (see polyrelay.billing.periods)."""

    __tablename__ = "budget_periods"

    subject: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)  # daily | weekly | monthly
    starts_at: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds, UTC
    used_micros: Mapped[int] = mapped_column(BigInteger)


class ChannelEvent(Base):
    """One step in a channel's health trail: why it left or rejoined rotation, and who said so.

    No foreign key: the trail outlives a deleted channel. ``actor`` is "auto" (the relay's health
    accounting), "probe" (relay.healing) or "admin:<name>"."""

    __tablename__ = "channel_events"
    # The trail reads in the order things happened (``created_at``), not of commits: a probe's row can
    # commit before the batching writer's row of the cooldown that made the channel due.
    __table_args__ = (Index("ix_channel_events_channel_id_created_at", "channel_id", "created_at"),
                      Index("ix_channel_events_created_at", "created_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # disabled, enabled, cooled, probe_failed, probe_succeeded
    reason: Mapped[str] = mapped_column(String(512), default="")
    actor: Mapped[str] = mapped_column(String(128), default="auto")


# Upper bounds (ms) of the latency buckets the daily rollups count requests in; slower requests are
# the rest of ``requests``. Enough to estimate a median within a bucket (api/admin/stats.py).
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class _DailyMeasures:
    """What a daily rollup adds up. ``requests`` and the latency columns leave out task refunds
    (usage rows with status 0); tokens and cost count every row, like the raw log."""

    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)  # status >= 400
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latency_le_50: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_100: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_250: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_500: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_1000: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_2500: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_5000: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_10000: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_30000: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_le_60000: Mapped[int] = mapped_column(BigInteger, default=0)


DAILY_MEASURES = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros", "latency_ms_sum",
                  *(f"latency_le_{bound}" for bound in LATENCY_BUCKETS_MS))


class UsageDaily(_DailyMeasures, Base):
    """Usage per UTC day x user x model, kept by the batching writer in the usage rows' transaction;
    the dashboard reads these, and they outlive the raw rows' retention. ``user_id`` 0: no user."""

    __tablename__ = "usage_daily"
    # One user's window in (day, model) order: read without a sort.
    __table_args__ = (Index("ix_usage_daily_user_id_day_model", "user_id", "day", "model"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)


class ModelDaily(_DailyMeasures, Base):
    """Usage per UTC day x model, all users together: the admin dashboard's window costs one row per
    day and model, however many users there are. Kept like ``usage_daily``."""

    __tablename__ = "model_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)


class ChannelDaily(_DailyMeasures, Base):
    """Usage per UTC day x channel (``channel_id`` 0: answered without one), kept like ``usage_daily``."""

    __tablename__ = "channel_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class AccountToken(Base):
    """A mailed link's token (e-mail verification, password reset): only its SHA-256 is stored; used once."""

    __tablename__ = "account_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # verify | reset
    email: Mapped[str] = mapped_column(String(254))  # the address it was sent to: a changed address voids it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AffiliateEntry(Base):
    """Movements of an inviter's affiliate balance: rewards in (+), moves into the real balance (-).

    ``ref`` is unique, so a reward or a move applies at most once.
    """

    __tablename__ = "affiliate_entries"
    __table_args__ = (Index("ix_affiliate_entries_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int] = mapped_column(Integer)  # the inviter
    invitee_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None for a move
    kind: Mapped[str] = mapped_column(String(16))  # signup | first_topup | move
    amount_micros: Mapped[int] = mapped_column(BigInteger)
class PaymentOrder(Base):
    """A top-up a user pays through a provider (polyrelay.billing.payments).

    ``order_no`` is the unguessable number providers and browsers see; ``credit_micros`` is fixed
    when the order is made (rate and bonus of that moment). Status: pending, paid, expired, failed,
    or review (money arrived that could not be credited automatically: late, or not what was ordered)."""

    __tablename__ = "payment_orders"
    __table_args__ = (Index("ix_payment_orders_user_id_id", "user_id", "id"),
                      Index("ix_payment_orders_status_id", "status", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_no: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # hundredths of ``currency``
    currency: Mapped[str] = mapped_column(String(3))
    credit_micros: Mapped[int] = mapped_column(BigInteger)
    bonus_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # the part of credit_micros that is bonus
    provider_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    note: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
class AlertLog(Base):
    """One alert told (alerts/watch.py), for the console's Health page and ``GET /api/alerts``.
    ``user_id``: the user a balance alert is about; ``user_emailed``: it went to their verified address too."""

    __tablename__ = "alert_log"
    __table_args__ = (Index("ix_alert_log_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(48))
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    node: Mapped[str] = mapped_column(String(64))  # the node that told it
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_emailed: Mapped[bool] = mapped_column(Boolean, default=False)


class JobLease(Base):
    """Which node works a cluster-wide job (store/leases.py) until ``expires_at`` (epoch ms)."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[int] = mapped_column(BigInteger)
class UserTotp(Base):
    """A user's TOTP (RFC 6238) secret, Fernet-encrypted like upstream keys; ``active`` once a code confirmed it.
    ``last_step`` is the time step of the last accepted code: a code is accepted once, never again."""

    __tablename__ = "user_totp"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret: Mapped[str] = mapped_column(EncryptedText(256))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserRecoveryCode(Base):
    """A single-use code that stands in for a second factor; only its SHA-256 is stored (it is random)."""

    __tablename__ = "user_recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UserPasskey(Base):
    """A WebAuthn credential: its id (base64url), public key (COSE) and the authenticator's last signature count."""

    __tablename__ = "user_passkeys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SignInChallenge(Base):
    """A short-lived, single-use step of two-factor sign-in: a ticket between password and second factor
    (``purpose`` "sign_in", id = SHA-256 of the ticket) or a passkey registration ("passkey_add", id = SHA-256 of
    the challenge). ``challenge``: the WebAuthn challenge the answer must sign."""

    __tablename__ = "sign_in_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
