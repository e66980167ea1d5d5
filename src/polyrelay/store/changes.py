"""The change log: which hot-path records an admin write changed, so every process reloads just those.

A write names its records (``token(7)``, ``user(3)``, ``CHANNELS``, ...) and ``record`` stores them
in ``record_changes`` in the writer's own transaction, under the next ``meta.records_version``.
That version is taken with the ``meta`` row locked until commit, so versions commit in order and
a reader that saw version *n* has seen every version before it. On PostgreSQL the same
transaction sends a ``NOTIFY`` (delivered at commit) that wakes the other processes at once; they
also poll the version as a safety net (see ``store.feed``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Integer, String, delete, func, insert, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from polyrelay.store import models

NOTIFY_CHANNEL = "polyrelay_records"
VERSION_KEY = "records_version"

# Kinds of change. Users and tokens are named one by one (their tables are large); the small
# tables are reloaded whole, so they are named without an id.
USER, TOKEN = "user", "token"
CHANNELS, PRICES, GROUPS = ("channels", None), ("prices", None), ("groups", None)
EVERYTHING = ("all", None)  # a writer that cannot say: every process reloads everything

Change = tuple[str, int | None]

# A reader further behind than this reloads everything: one full read is cheaper than many partial ones.
MAX_VERSIONS_BEHIND = 1000
MAX_RECORDS = 5000
RETENTION_MS = 3_600_000  # rows older than this are pruned; a process behind that far reloads everything


class RecordChange(models.Base):
    """One record changed by the write that made ``version`` (see module docstring)."""

    __tablename__ = "record_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)  # epoch milliseconds, for pruning


def user(user_id: int) -> Change:
    return (USER, user_id)


def token(token_id: int) -> Change:
    return (TOKEN, token_id)


def of_row(row: object) -> Change:
    """The change that writing this ORM row makes (for code shared by several record kinds)."""
    if isinstance(row, models.User):
        return user(row.id)
    if isinstance(row, models.Token):
        return token(row.id)
    if isinstance(row, models.Channel):
        return CHANNELS
    if isinstance(row, models.Group):
        return GROUPS
    if isinstance(row, models.Price):
        return PRICES
    return EVERYTHING


def record(session: Session, changes: Iterable[Change]) -> int:
    """Log ``changes`` under the next records version, in the caller's transaction; returns that version."""
    names = set(changes) or {EVERYTHING}
    row = session.get(models.Meta, VERSION_KEY, with_for_update=True)  # held to commit: versions commit in order
    if row is None:
        version = 1
        session.add(models.Meta(key=VERSION_KEY, value="1"))
    else:
        version = int(row.value) + 1
        row.value = str(version)
    at_ms = int(time.time() * 1000)
    session.execute(insert(RecordChange), [{"version": version, "kind": kind, "record_id": record_id, "at_ms": at_ms}
                                          for kind, record_id in sorted(names, key=lambda n: (n[0], n[1] or 0))])
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :version)"),
                        {"channel": NOTIFY_CHANNEL, "version": str(version)})
    return version


@dataclass(slots=True)
class Pending:
    """What changed after a reader's version, up to ``version``."""

    version: int
    users: set[int] = field(default_factory=set)
    tokens: set[int] = field(default_factory=set)
    channels: bool = False
    prices: bool = False
    groups: bool = False


def current_version(session: Session) -> int:
    row = session.get(models.Meta, VERSION_KEY)
    return int(row.value) if row is not None else 0


def pending(session: Session, since: int) -> Pending | None:
    """The records changed after version ``since``; None when only a full reload can catch up
    (too far behind, the log pruned past ``since``, or a writer that named nothing)."""
    version = current_version(session)
    if version <= since:
        return Pending(since)
    if version - since > MAX_VERSIONS_BEHIND:
        return None
    rows = session.execute(select(RecordChange.version, RecordChange.kind, RecordChange.record_id)
                           .where(RecordChange.version > since, RecordChange.version <= version)).all()
    if {r.version for r in rows} != set(range(since + 1, version + 1)):
        return None  # pruned: some versions are gone
    result = Pending(version)
    for _, kind, record_id in rows:
        if kind == USER and record_id is not None:
            result.users.add(record_id)
        elif kind == TOKEN and record_id is not None:
            result.tokens.add(record_id)
        elif (kind, record_id) == CHANNELS:
            result.channels = True
        elif (kind, record_id) == PRICES:
            result.prices = True
        elif (kind, record_id) == GROUPS:
            result.groups = True
        else:
            return None
    if len(result.users) + len(result.tokens) > MAX_RECORDS:
        return None
    return result


def prune(session: Session, now_ms: int | None = None) -> int:
    """Delete log rows older than the retention, keeping the newest version's (a fresh reader needs none)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    newest = session.scalar(select(func.max(RecordChange.version)))
    if newest is None:
        return 0
    result = session.execute(delete(RecordChange).where(RecordChange.at_ms < now_ms - RETENTION_MS,
                                                        RecordChange.version < newest))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
