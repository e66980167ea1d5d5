"""The in-memory view of keys, channels and prices that the hot path reads.

Loaded whole from the database at start and again whenever ``meta.records_version``
changes, so a request never waits on a query. Run-time state (quota reservations,
channel health, key rotation) lives on these objects and survives a reload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from polyrelay.billing.meter import Price
from polyrelay.patterns import ModelPatterns, is_wildcard
from polyrelay.store import models


@dataclass(slots=True, eq=False)
class TokenRecord:
    id: int
    name: str
    quota_micros: int | None
    used_micros: int  # settled spend: persisted plus settled here and not yet flushed
    models: ModelPatterns | None
    expires_at: float | None  # epoch seconds
    enabled: bool
    reserved_micros: int = 0  # estimates held by requests in flight

    @property
    def remaining_micros(self) -> int | None:
        if self.quota_micros is None:
            return None
        return self.quota_micros - self.used_micros - self.reserved_micros


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
    _routes: dict[str, list[list[ChannelRecord]]] = field(default_factory=dict)

    def price_for(self, model: str) -> Price | None:
        """Exact price, else the first matching wildcard, else ``default``, else None."""
        price = self.prices.get(model)
        if price is not None:
            return price
        for pattern, candidate in self.price_patterns:
            if fnmatchcase(model, pattern):
                return candidate
        return self.prices.get("default")

    def routes(self, model: str) -> list[list[ChannelRecord]]:
        """Channels serving ``model``, grouped by priority, highest first (memoised)."""
        groups = self._routes.get(model)
        if groups is None:
            by_priority: dict[int, list[ChannelRecord]] = {}
            for channel in self.channels:
                if channel.serves(model):
                    by_priority.setdefault(channel.priority, []).append(channel)
            groups = [by_priority[p] for p in sorted(by_priority, reverse=True)]
            if len(self._routes) < 10_000:  # bound memory against callers inventing names
                self._routes[model] = groups
        return groups

    def model_names(self) -> list[str]:
        """Every concrete model name some enabled channel declares (mapping aliases included)."""
        names: set[str] = set()
        for channel in self.channels:
            names.update(channel.models.exact)
            names.update(k for k in channel.model_mapping if not is_wildcard(k))
        return sorted(names)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def load_snapshot(session: Session, previous: Snapshot | None = None) -> Snapshot:
    """Read every hot-path record; carry run-time state over from ``previous``."""
    version_row = session.get(models.Meta, "records_version")
    old_tokens = {t.id: t for t in previous.tokens_by_hash.values()} if previous else {}
    old_channels = {c.id: c for c in previous.channels} if previous else {}

    tokens: dict[str, TokenRecord] = {}
    for row in session.scalars(select(models.Token)):
        record = TokenRecord(
            id=row.id,
            name=row.name,
            quota_micros=row.quota_micros,
            used_micros=row.used_micros,
            models=ModelPatterns(row.models) if row.models is not None else None,
            expires_at=_epoch(row.expires_at),
            enabled=row.enabled,
        )
        if (old := old_tokens.get(row.id)) is not None:
            # Spend settled here but not yet flushed is in old.used and not in the row; with
            # several processes the row also holds theirs. Spend only grows, so take the larger.
            record.used_micros = max(record.used_micros, old.used_micros)
            record.reserved_micros = old.reserved_micros
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
    )
