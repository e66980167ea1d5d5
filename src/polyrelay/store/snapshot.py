"""The in-memory view of keys, channels and prices that the hot path reads.

Loaded whole from the database at start (``load_snapshot``); after that each admin write's
records are reloaded alone (``load_changes``, then ``Snapshot.apply``; the change log is
``store.changes``), so a request never waits on a query. Run-time state (quota reservations,
channel health, key rotation) lives on these objects and survives a reload, whole or partial.
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
from polyrelay.store import changes, models


_GroupView = tuple[int, "frozenset[str] | None"]  # a group's price ratio in ppm and allowed channel names


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
    budget_micros: int | None = None  # a cap on spend per ``budget_period`` (billing.periods)
    budget_period: str | None = None
    balance_micros: int = 0
    reserved_micros: int = 0  # estimates held by requests in flight
    unflushed_micros: int = 0  # settled here, not yet committed by the writer
    # Rate-limit window state (see billing.ratelimit).
    rl_window: int = 0
    rl_requests: int = 0
    rl_tokens: int = 0


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
    budget_period: str | None = None  # the period ``quota_micros`` resets after (None: never)

    @property
    def metered(self) -> bool:
        """Spending is bounded (own limit, a limited or capped user): unpriced models are refused."""
        user = self.user
        return self.quota_micros is not None or (user is not None and (not user.unlimited
                                                                        or user.budget_micros is not None))


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
    token_hashes: dict[int, str] = field(default_factory=dict)  # token id -> its key hash, for partial reloads
    groups: dict[str, _GroupView] = field(default_factory=dict)

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

    def apply(self, delta: Changes) -> Snapshot:
        """Apply records reloaded by ``load_changes``; on the event loop, like ``adopt``.

        Each reloaded user or token is updated the way ``adopt`` updates it (the record object is
        kept, its money becomes the database value read minus what this process has not committed
        yet), so the money invariants of ``adopt`` hold for partial reloads too.
        """
        if delta.groups is not None and delta.groups != self.groups:  # every user's terms may change
            self.groups = delta.groups
            for record in self.users.values():
                record.ratio_ppm, record.channels = _group_terms(self.groups, record.group)
        for user_id, fresh in delta.users.items():
            if fresh is None:
                self.users.pop(user_id, None)
                continue
            fresh.ratio_ppm, fresh.channels = _group_terms(self.groups, fresh.group)
            record = self.users.get(user_id)
            if record is None:
                record = self.users[user_id] = fresh
            else:
                for name in _USER_STATIC:
                    setattr(record, name, getattr(fresh, name))
            record.balance_micros = delta.balances[user_id] - record.unflushed_micros
        for token_id, item in delta.tokens.items():
            old_hash = self.token_hashes.pop(token_id, None)
            old = self.tokens_by_hash.pop(old_hash, None) if old_hash is not None else None
            if item is None:
                continue
            key_hash, fresh, owner = item
            record = fresh if old is None else old
            if old is not None:
                for name in _TOKEN_STATIC:
                    setattr(record, name, getattr(fresh, name))
            record.used_micros = delta.used[token_id] + record.unflushed_micros
            record.user = self.users.get(owner) if owner is not None else None
            self.tokens_by_hash[key_hash] = record
            self.token_hashes[token_id] = key_hash
        if delta.channels is not None:
            old_channels = {c.id: c for c in self.channels}
            for record in delta.channels:
                if (old := old_channels.get(record.id)) is not None:
                    _carry_health(old, record)
            self.channels = delta.channels
        if delta.prices is not None:
            self.prices, self.price_patterns = delta.prices
        if delta.channels is not None or delta.prices is not None or delta.groups is not None:
            self.route_cache = {}
        self.version = delta.version
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


@dataclass(slots=True)
class Changes:
    """Records reloaded after some admin writes, up to ``version``; None in a map means deleted,
    None for a small table means unchanged."""

    version: int
    users: dict[int, UserRecord | None] = field(default_factory=dict)
    tokens: dict[int, tuple[str, TokenRecord, int | None] | None] = field(default_factory=dict)  # hash, record, owner
    balances: dict[int, int] = field(default_factory=dict)
    used: dict[int, int] = field(default_factory=dict)
    channels: list[ChannelRecord] | None = None
    prices: tuple[dict[str, Price], list[tuple[str, Price]]] | None = None
    groups: dict[str, _GroupView] | None = None


def _group_terms(groups: dict[str, _GroupView], name: str) -> _GroupView:
    return groups.get(name, (1_000_000, None))


def _carry_health(old: ChannelRecord, record: ChannelRecord) -> None:
    record.failures, record.cooldown_until = old.failures, old.cooldown_until
    record.key_cursor, record.key_rested_until = old.key_cursor, old.key_rested_until


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


# How strict a limit's period is: one that resets less often allows less; one that never resets (None), least.
_PERIOD_STRICTNESS = {"daily": 0, "weekly": 1, "monthly": 2, None: 3}


def key_budget_period(row: models.Token) -> str | None:
    """The period of a key's limit, of the owner's and an administrator's: the stricter of those that
    have a limit, i.e. the one that resets less often (a period without a limit limits nothing)."""
    periods = [period for limit, period in ((row.quota_micros, row.budget_period),
                                            (row.admin_quota_micros, row.admin_budget_period)) if limit is not None]
    return max(periods, key=_PERIOD_STRICTNESS.__getitem__) if periods else None


def _models(own: list[str] | None, imposed: list[str] | None) -> ModelPatterns | AllOf | None:
    if own is None or imposed is None:
        names = imposed if own is None else own
        return ModelPatterns(names) if names is not None else None
    return AllOf(ModelPatterns(own), ModelPatterns(imposed))


_USER_STATIC = ("name", "role", "group", "enabled", "unlimited", "ratio_ppm", "channels", "rpm_limit", "tpm_limit",
                "budget_micros", "budget_period")
_TOKEN_STATIC = ("name", "quota_micros", "models", "expires_at", "enabled", "allowed_ips", "rpm_limit", "tpm_limit",
                 "budget_period")


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
    # Read first: a change committed while the rows are read is then applied again later, never missed.
    version = changes.current_version(session)
    old_channels = {c.id: c for c in previous.channels} if previous else {}

    groups = _load_groups(session)
    users: dict[int, UserRecord] = {}
    balances: dict[int, int] = {}
    for row in session.scalars(select(models.User)):
        users[row.id] = _user(row, groups)
        balances[row.id] = row.balance_micros

    tokens: dict[str, TokenRecord] = {}
    token_hashes: dict[int, str] = {}
    used: dict[int, int] = {}
    for row in session.scalars(select(models.Token)):
        record = _token(row)
        record.user = users.get(row.user_id) if row.user_id is not None else None
        used[row.id] = row.used_micros
        tokens[row.key_hash] = record
        token_hashes[row.id] = row.key_hash

    channels = _load_channels(session)
    for record in channels:
        if (old := old_channels.get(record.id)) is not None:
            _carry_health(old, record)
    prices, patterns = _load_prices(session)

    return Snapshot(
        version=version,
        tokens_by_hash=tokens,
        channels=channels,
        prices=prices,
        price_patterns=patterns,
        users=users,
        _db_balances=balances,
        _db_used=used,
        token_hashes=token_hashes,
        groups=groups,
    )


def load_changes(session: Session, since: int) -> Changes | None:
    """Reload the records changed after version ``since`` (in the DB thread); ``Snapshot.apply``
    then applies them. None when only ``load_snapshot`` can catch up (see ``changes.pending``)."""
    todo = changes.pending(session, since)
    if todo is None:
        return None
    result = Changes(todo.version)
    if todo.groups:
        result.groups = _load_groups(session)
    token_rows = list(session.scalars(select(models.Token).where(models.Token.id.in_(todo.tokens)))) if todo.tokens else []
    # A reloaded token's owner is reloaded with it, so a new token never points at a user this process lacks.
    user_ids = todo.users | {row.user_id for row in token_rows if row.user_id is not None}
    if user_ids:
        user_rows = list(session.scalars(select(models.User).where(models.User.id.in_(user_ids))))
        groups = result.groups if result.groups is not None else _load_groups(session)
        result.users = dict.fromkeys(user_ids)
        for row in user_rows:
            result.users[row.id] = _user(row, groups)
            result.balances[row.id] = row.balance_micros
    result.tokens = dict.fromkeys(todo.tokens)
    for row in token_rows:
        result.tokens[row.id] = (row.key_hash, _token(row), row.user_id)
        result.used[row.id] = row.used_micros
    if todo.channels:
        result.channels = _load_channels(session)
    if todo.prices:
        result.prices = _load_prices(session)
    return result


def _load_groups(session: Session) -> dict[str, _GroupView]:
    return {row.name: (row.ratio_ppm, frozenset(row.channels) if row.channels is not None else None)
            for row in session.scalars(select(models.Group))}


def _user(row: models.User, groups: dict[str, _GroupView]) -> UserRecord:
    ratio_ppm, channels = _group_terms(groups, row.group)
    return UserRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        group=row.group,
        enabled=row.enabled,
        unlimited=row.unlimited,
        ratio_ppm=ratio_ppm,
        channels=channels,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        budget_micros=row.budget_micros if row.budget_period is not None else None,
        budget_period=row.budget_period,
        balance_micros=row.balance_micros,
    )


def _token(row: models.Token) -> TokenRecord:
    """The token's record without its user (the caller links it)."""
    return TokenRecord(
        id=row.id,
        name=row.name,
        quota_micros=_stricter(row.quota_micros, row.admin_quota_micros),
        used_micros=row.used_micros,
        models=_models(row.models, row.admin_models),
        expires_at=_stricter(_epoch(row.expires_at), _epoch(row.admin_expires_at)),
        enabled=row.enabled and row.admin_enabled,
        allowed_ips=_ip_fence(row.allowed_ips, row.admin_allowed_ips),
        rpm_limit=_stricter(row.rpm_limit, row.admin_rpm_limit),
        tpm_limit=_stricter(row.tpm_limit, row.admin_tpm_limit),
        budget_period=key_budget_period(row),
    )


def _load_channels(session: Session) -> list[ChannelRecord]:
    return [
        ChannelRecord(
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
        for row in session.scalars(select(models.Channel).where(models.Channel.enabled.is_(True)))
    ]


def _load_prices(session: Session) -> tuple[dict[str, Price], list[tuple[str, Price]]]:
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
    return prices, patterns
