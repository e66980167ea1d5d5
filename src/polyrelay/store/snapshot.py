"""The in-memory view of keys, channels and prices that the hot path reads.

Loaded whole from the database at start and again whenever ``meta.records_version``
changes, so a request never waits on a query. Run-time state (quota reservations,
channel health, key rotation) lives on these objects and survives a reload.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from polyrelay.billing.meter import Price
from polyrelay.patterns import ModelPatterns, is_wildcard
from polyrelay.store import models


@dataclass(slots=True, eq=False)
class UserRecord:
    """An account as the hot path sees it. Money state is changed on the event loop only.

    ``balance_micros`` is live: the database balance minus what this process settled
    and has not committed yet (``unflushed_micros``, owned by the batching writer).
    """

    id: int
    name: str
    role: str = "user"
    group: str = "default"
    enabled: bool = True
    unlimited: bool = True
    ratio_ppm: int = 1_000_000  # the group's price multiplier, in parts per million
    channels: frozenset[str] | None = None  # the group's allowed channel names; None: all
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    balance_micros: int = 0
    reserved_micros: int = 0  # estimates held by requests in flight
    unflushed_micros: int = 0  # settled here, not yet committed by the writer
    # Rate-limit window state (see billing.ratelimit).
    rl_window: int = 0
    rl_requests: int = 0
    rl_tokens: int = 0

    @property
    def remaining_micros(self) -> int | None:
        if self.unlimited:
            return None
        return self.balance_micros - self.reserved_micros


@dataclass(slots=True, eq=False)
class TokenRecord:
    id: int
    name: str
    # Limits are the stricter of the owner's and an administrator's (see load_snapshot).
    quota_micros: int | None  # the token's own limit; its user's balance limits it too
    used_micros: int  # settled spend: persisted plus settled here and not yet flushed
    models: ModelPatterns | AllOf | None
    expires_at: float | None  # epoch seconds
    enabled: bool
    reserved_micros: int = 0  # estimates held by requests in flight
    user: UserRecord | None = None
    allowed_ips: tuple[Any, ...] | None = None  # ipaddress networks; None: any client
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    unflushed_micros: int = 0  # settled here, not yet committed by the writer
    rl_window: int = 0
    rl_requests: int = 0
    rl_tokens: int = 0

    @property
    def remaining_micros(self) -> int | None:
        if self.quota_micros is None:
            return None
        return self.quota_micros - self.used_micros - self.reserved_micros

    @property
    def metered(self) -> bool:
        """Spending is bounded (own limit or a limited user): unpriced models are refused."""
        return self.quota_micros is not None or (self.user is not None and not self.user.unlimited)


@dataclass(slots=True, eq=False)
class ChannelRecord:
    id: int
    name: str
    type: str
    base_url: str
    keys: tuple[str, ...]
    models: ModelPatterns
    model_mapping: dict[str, str]
    priority: int
    weight: int
    timeout_s: float
    connect_timeout_s: float
    options: dict[str, Any]
    # Health, owned by relay.routing; monotonic-clock deadlines.
    failures: int = 0
    cooldown_until: float = 0.0
    key_cursor: int = 0
    key_rested_until: dict[int, float] = field(default_factory=dict)

    def serves(self, model: str) -> bool:
        return not self.models or model in self.models or model in self.model_mapping

    def upstream_model(self, model: str) -> str:
        return self.model_mapping.get(model, model)


@dataclass(slots=True)
class Snapshot:
    version: int
    tokens_by_hash: dict[str, TokenRecord]
    channels: list[ChannelRecord]
    prices: dict[str, Price]
    price_patterns: list[tuple[str, Price]]
    # Routing's memo of channels by (kind, model), dropped with the snapshot (see relay.routing.routes).
    route_cache: dict[tuple[str, str], list[list[ChannelRecord]]] = field(default_factory=dict)
    users: dict[int, UserRecord] = field(default_factory=dict)
    # Database money values read with this snapshot, applied by ``adopt`` on the event loop.
    _db_balances: dict[int, int] = field(default_factory=dict)
    _db_used: dict[int, int] = field(default_factory=dict)

    def adopt(self, previous: Snapshot | None) -> Snapshot:
        """Make this freshly loaded snapshot current; call on the event loop, never in a thread.

        Records that existed before are kept (requests in flight hold them and settle on
        them) and get the new static fields; their money becomes the database value
        minus what this process settled and has not committed yet. The database read
        and the writer's commits run on the same thread and their continuations run
        in order on the loop, so the read and ``unflushed_micros`` always agree.
        """
        old_users = previous.users if previous is not None else {}
        users: dict[int, UserRecord] = {}
        for user_id, fresh in self.users.items():
            record = old_users.get(user_id)
            if record is None:
                record = fresh
            else:
                for name in _USER_STATIC:
                    setattr(record, name, getattr(fresh, name))
            record.balance_micros = self._db_balances.get(user_id, 0) - record.unflushed_micros
            users[user_id] = record
        self.users = users
        old_tokens = {t.id: t for t in previous.tokens_by_hash.values()} if previous is not None else {}
        for key_hash, fresh in list(self.tokens_by_hash.items()):
            record = old_tokens.get(fresh.id)
            if record is None:
                record = fresh
            else:
                for name in _TOKEN_STATIC:
                    setattr(record, name, getattr(fresh, name))
            record.used_micros = self._db_used.get(record.id, 0) + record.unflushed_micros
            record.user = users.get(fresh.user.id) if fresh.user is not None else None
            self.tokens_by_hash[key_hash] = record
        self._db_balances, self._db_used = {}, {}
        return self

    def price_for(self, model: str) -> Price | None:
        """Exact price, else the first matching wildcard, else ``default``, else None."""
        price = self.prices.get(model)
        if price is not None:
            return price
        for pattern, candidate in self.price_patterns:
            if fnmatchcase(model, pattern):
                return candidate
        return self.prices.get("default")

    def model_names(self) -> list[str]:
        """Every concrete model name some enabled channel declares (mapping aliases included)."""
        names: set[str] = set()
        for channel in self.channels:
            names.update(channel.models.exact)
            names.update(k for k in channel.model_mapping if not is_wildcard(k))
        return sorted(names)


class AllOf:
    """A model allow-list made of several: the owner's within an administrator's admits what both admit."""

    __slots__ = ("lists",)

    def __init__(self, *lists: ModelPatterns) -> None:
        self.lists = lists

    def __contains__(self, model: str) -> bool:
        return all(model in patterns for patterns in self.lists)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


Limit = TypeVar("Limit", int, float)


def _stricter(own: Limit | None, imposed: Limit | None) -> Limit | None:
    """The lower of two limits where None means no limit."""
    if own is None or imposed is None:
        return imposed if own is None else own
    return min(own, imposed)


def _models(own: list[str] | None, imposed: list[str] | None) -> ModelPatterns | AllOf | None:
    if own is None or imposed is None:
        names = imposed if own is None else own
        return ModelPatterns(names) if names is not None else None
    return AllOf(ModelPatterns(own), ModelPatterns(imposed))


_USER_STATIC = ("name", "role", "group", "enabled", "unlimited", "ratio_ppm", "channels", "rpm_limit", "tpm_limit")
_TOKEN_STATIC = ("name", "quota_micros", "models", "expires_at", "enabled", "allowed_ips", "rpm_limit", "tpm_limit")


def _networks(values: list[str] | None) -> tuple[Any, ...] | None:
    if values is None:
        return None
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _ip_fence(own: list[str] | None, imposed: list[str] | None) -> tuple[Any, ...] | None:
    """The addresses both fences admit. Two overlapping networks nest, so their overlap is the smaller one."""
    mine, theirs = _networks(own), _networks(imposed)
    if mine is None or theirs is None:
        return theirs if mine is None else mine
    return tuple(min(a, b, key=lambda n: n.num_addresses) for a in mine for b in theirs
                 if a.version == b.version and a.overlaps(b))


def load_snapshot(session: Session, previous: Snapshot | None = None) -> Snapshot:
    """Read every hot-path record (in the DB thread); ``adopt`` then carries run-time state over.

    Without a ``previous`` snapshot the result is ready to use as it is.
    """
    version_row = session.get(models.Meta, "records_version")
    old_channels = {c.id: c for c in previous.channels} if previous else {}

    groups = {row.name: row for row in session.scalars(select(models.Group))}
    users: dict[int, UserRecord] = {}
    balances: dict[int, int] = {}
    for row in session.scalars(select(models.User)):
        group = groups.get(row.group)
        users[row.id] = UserRecord(
            id=row.id,
            name=row.name,
            role=row.role,
            group=row.group,
            enabled=row.enabled,
            unlimited=row.unlimited,
            ratio_ppm=group.ratio_ppm if group is not None else 1_000_000,
            channels=frozenset(group.channels) if group is not None and group.channels is not None else None,
            rpm_limit=row.rpm_limit,
            tpm_limit=row.tpm_limit,
            balance_micros=row.balance_micros,
        )
        balances[row.id] = row.balance_micros

    tokens: dict[str, TokenRecord] = {}
    used: dict[int, int] = {}
    for row in session.scalars(select(models.Token)):
        record = TokenRecord(
            id=row.id,
            name=row.name,
            quota_micros=_stricter(row.quota_micros, row.admin_quota_micros),
            used_micros=row.used_micros,
            models=_models(row.models, row.admin_models),
            expires_at=_stricter(_epoch(row.expires_at), _epoch(row.admin_expires_at)),
            enabled=row.enabled and row.admin_enabled,
            user=users.get(row.user_id) if row.user_id is not None else None,
            allowed_ips=_ip_fence(row.allowed_ips, row.admin_allowed_ips),
            rpm_limit=_stricter(row.rpm_limit, row.admin_rpm_limit),
            tpm_limit=_stricter(row.tpm_limit, row.admin_tpm_limit),
        )
        used[row.id] = row.used_micros
        tokens[row.key_hash] = record

    channels: list[ChannelRecord] = []
    for row in session.scalars(select(models.Channel).where(models.Channel.enabled.is_(True))):
        record = ChannelRecord(
            id=row.id,
            name=row.name,
            type=row.type,
            base_url=row.base_url,
            keys=tuple(row.keys),
            models=ModelPatterns(row.models or []),
            model_mapping=dict(row.model_mapping or {}),
            priority=row.priority,
            weight=row.weight,
            timeout_s=row.timeout_s,
            connect_timeout_s=row.connect_timeout_s,
            options=dict(row.options or {}),
        )
        if (old := old_channels.get(row.id)) is not None:
            record.failures, record.cooldown_until = old.failures, old.cooldown_until
            record.key_cursor, record.key_rested_until = old.key_cursor, old.key_rested_until
        channels.append(record)

    prices: dict[str, Price] = {}
    patterns: list[tuple[str, Price]] = []
    for row in session.scalars(select(models.Price)):
        price = Price(**{name: getattr(row, name) for name in Price.field_names()})
        if is_wildcard(row.model):
            patterns.append((row.model, price))
        else:
            prices[row.model] = price
    # Longest pattern first: "gpt-4-gizmo-g-*" is more specific than "gpt-4*".
    patterns.sort(key=lambda item: len(item[0]), reverse=True)

    return Snapshot(
        version=int(version_row.value) if version_row else 0,
        tokens_by_hash=tokens,
        channels=channels,
        prices=prices,
        price_patterns=patterns,
        users=users,
        _db_balances=balances,
        _db_used=used,
    )
