"""The batching writer: usage logs, spend and channel health reach the database off the hot path.

Requests append to in-memory buffers; every ``interval`` (at most 100 ms) one
transaction writes everything buffered. Graceful shutdown flushes the rest, so only a
hard kill (SIGKILL, power loss) can lose what was settled in the last interval. The same
transaction adds the rows to the daily rollups the dashboard reads (``store/rollups.py``).

No row can poison the writer. Values are bounded to their columns as they are recorded
(``bulk.bound_for``). A batch the database still refuses is written again row by row, each
usage row in one transaction with its money (ledger charge, balance, spend); a row refused
again is retried with its free text blanked (so its money still commits), else kept in
``dead_letters`` with the error, logged once, and the rest of the batch commits. Only
when the database does not answer at all (connection lost, locked) is the batch kept
in memory and retried whole; that is logged when it starts and when it ends.

The flush runs on the DB thread, which shares the GIL with the event loop: whenever that
thread runs Python, or hands the GIL back and forth quickly, a request waits. Measured with
``bench/run.py`` (json, c=1, added p99, SQLite, A/B interleaved): median 11.7 ms before
(9-24 ms), 2.3 ms after three changes. Usage and ledger rows become driver tuples on the
loop as they are recorded (``BulkInsert.row``); balance, spend and read-back are Core
statements built once (an ORM ``session.execute(update(...))`` cost 0.5-0.8 ms of Python
each, these ~0.1 ms); and on SQLite rows go in ~35 per ``INSERT`` instead of by
``executemany``, which releases and retakes the GIL around every row (that step alone:
4.5 -> 2.3 ms). A 0.5 ms ``sys.setswitchinterval`` did not help; one ``INSERT`` for the
whole batch helped less (3.9 ms).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, bindparam, case, insert, null, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from polyrelay.background import stop_task
from polyrelay.store import models
from polyrelay.store.bulk import Bounds, BulkInsert, integer_range
from polyrelay.store.changes import CHANNELS
from polyrelay.store.db import bump_records_version
from polyrelay.store.periods import PeriodRow, charges_of, count
from polyrelay.telemetry import metrics
from polyrelay.store.rollups import Rollups

if TYPE_CHECKING:
    from polyrelay.billing.quota import Reservation, Spendable
    from polyrelay.store.snapshot import TokenRecord, UserRecord

log = logging.getLogger("polyrelay")

_USAGE = BulkInsert(models.UsageLog.__table__)
_LEDGER = BulkInsert(models.LedgerEntry.__table__)
_CHANNEL_BOUNDS = Bounds(models.Channel.__table__)
_EVENT_BOUNDS = Bounds(models.ChannelEvent.__table__)
_EVENTS = insert(models.ChannelEvent.__table__)
_DEAD_BOUNDS = Bounds(models.DeadLetter.__table__)
_DEAD_LETTER = insert(models.DeadLetter.__table__)
# A charge is booked between 0 and what the columns it lands in can hold.
_MICROS_MIN, _MICROS_MAX = integer_range(models.User.__table__.c.balance_micros.type)
# Core statements built once, run with executemany (see the module docstring for why not ORM ``update``).
# A balance or spend that would leave BIGINT becomes NULL, which the NOT NULL column refuses on both
# backends: PostgreSQL would fail on the overflow itself, SQLite would silently store a float.
_USERS, _TOKENS = models.User.__table__, models.Token.__table__
_CHARGE = (update(_USERS).where(_USERS.c.id == bindparam("row_id"))
           .values(balance_micros=case((_USERS.c.balance_micros >= bindparam("floor"),
                                        _USERS.c.balance_micros - bindparam("micros")), else_=null())))
_SPEND = (update(_TOKENS).where(_TOKENS.c.id == bindparam("row_id"))
          .values(used_micros=case((_TOKENS.c.used_micros <= bindparam("ceiling"),
                                    _TOKENS.c.used_micros + bindparam("micros")), else_=null())))
_LAST_USED = update(_TOKENS).where(_TOKENS.c.id == bindparam("row_id")).values(last_used_at=bindparam("when"))
_BALANCES = select(_USERS.c.id, _USERS.c.balance_micros).where(_USERS.c.id.in_(bindparam("ids", expanding=True)))
_SPENT = select(_TOKENS.c.id, _TOKENS.c.used_micros).where(_TOKENS.c.id.in_(bindparam("ids", expanding=True)))


@dataclass(slots=True)
class _Posting:
    """One usage row and the money that commits, or fails, with it."""

    log: tuple[Any, ...]
    token_id: int | None
    micros: int  # the spend on the token; with ``user``, the charge on the user's balance too
    token: TokenRecord | None = None  # the in-memory records whose ``unflushed_micros`` include it
    user: UserRecord | None = None
    ledger: tuple[Any, ...] | None = None
    leases: tuple[Spendable, ...] = ()  # the budget leases it was spent from: told once it is committed
    periods: tuple[PeriodRow, ...] = ()  # the periods of periodic budgets it counts in


@dataclass(slots=True)
class _Batch:
    logs: list[tuple[Any, ...]] = field(default_factory=list)  # driver parameters, from BulkInsert.row
    spend: dict[int, int] = field(default_factory=dict)  # token id -> micro-USD to add
    last_used: dict[int, datetime] = field(default_factory=dict)
    channels: dict[int, dict[str, Any]] = field(default_factory=dict)  # channel id -> columns
    events: list[dict[str, Any]] = field(default_factory=list)  # channel_events rows (the health trail)
    ledger: list[tuple[Any, ...]] = field(default_factory=list)  # charge entries, one per charged request
    balances: dict[int, int] = field(default_factory=dict)  # user id -> micro-USD charged (to subtract)
    users: dict[int, UserRecord] = field(default_factory=dict)  # in-memory records to reconcile after commit
    tokens: dict[int, TokenRecord] = field(default_factory=dict)
    postings: list[_Posting] = field(default_factory=list)  # ``logs`` and ``ledger`` row by row, to split on failure
    periods: dict[PeriodRow, int] = field(default_factory=dict)  # micro-USD to add to each budget period

    def __bool__(self) -> bool:
        return bool(self.logs or self.spend or self.last_used or self.channels or self.ledger or self.events)

    def parts(self) -> list[_Batch]:
        """The batch as batches of one usage row with its own money, then channel health and last use."""
        parts = [_one(posting) for posting in self.postings]
        if self.last_used or self.channels or self.events:
            parts.append(_Batch(last_used=self.last_used, channels=self.channels, events=self.events))
        return parts


def _one(posting: _Posting) -> _Batch:
    part = _Batch(logs=[posting.log], postings=[posting])
    if posting.token_id is not None and posting.micros:
        part.spend[posting.token_id] = posting.micros
    if posting.token is not None:
        part.tokens[posting.token.id] = posting.token
    charges_of(posting.periods, posting.micros, part.periods)
    if posting.user is not None and posting.ledger is not None:
        part.users[posting.user.id] = posting.user
        part.balances[posting.user.id] = posting.micros
        part.ledger.append(posting.ledger)
    return part


@dataclass(slots=True)
class _Outcome:
    """What a flush did: the parts no longer pending (committed or kept aside), the money read back
    after them, and the parts left for the next flush because the database did not answer."""

    done: list[_Batch] = field(default_factory=list)
    balances: dict[int, int] = field(default_factory=dict)
    used: dict[int, int] = field(default_factory=dict)
    left: list[_Batch] = field(default_factory=list)
    error: str = ""  # why ``left`` is not empty

    def add(self, part: _Batch, read_back: tuple[dict[int, int], dict[int, int]]) -> None:
        self.done.append(part)
        self.balances.update(read_back[0])
        self.used.update(read_back[1])


def _unanswered(error: BaseException) -> bool:
    """The database did not take the write for a reason of its own (down, restarting, locked, a
    deadlock): the rows are fine, so they wait in memory rather than being kept aside."""
    return isinstance(error, (OperationalError, InterfaceError)) or bool(getattr(error, "connection_invalidated", False))


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class BatchWriter:
    """Owns the process's single database thread; every write goes through it in order."""

    def __init__(self, engine: Engine, interval_s: float, executor: ThreadPoolExecutor) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._interval_s = interval_s
        self._executor = executor
        self._batch = _Batch()
        self._rollups = Rollups(_USAGE.positions(self._dialect))
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._waiting = False  # the database stopped answering; logged once until it answers again
        self._kept_aside = 0  # writes kept in dead_letters or dropped since start (written on the DB thread)

    def record_usage(
        self, row: dict[str, Any], token_id: int | None, cost_micros: int, charged: Reservation | None = None
    ) -> None:
        """Queue a usage-log row; with ``charged`` (the settled reservation) and a cost, also the
        ledger charge and the user's balance delta, committed in the same transaction as the row."""
        micros = min(max(cost_micros, 0), _MICROS_MAX)
        if micros != cost_micros:  # a price typo: the row, the ledger and the balance book the same amount
            row = {**row, "cost_micros": micros}
        posting = _Posting(_USAGE.row(self._dialect, row), token_id, micros)
        batch = self._batch
        batch.logs.append(posting.log)
        batch.postings.append(posting)
        if token_id is not None:
            batch.last_used[token_id] = row["created_at"]
            if micros:
                batch.spend[token_id] = batch.spend.get(token_id, 0) + micros
                if charged is not None:
                    posting.leases, posting.periods = charged.leases, charged.periods
                    charges_of(posting.periods, micros, batch.periods)
                    token = posting.token = charged.token
                    token.unflushed_micros += micros
                    batch.tokens[token_id] = token
                    user = charged.user
                    if user is not None:
                        posting.user = user
                        user.unflushed_micros += micros
                        batch.users[user.id] = user
                        batch.balances[user.id] = batch.balances.get(user.id, 0) + micros
                        posting.ledger = _LEDGER.row(self._dialect, {
                            "created_at": row["created_at"], "user_id": user.id, "token_id": token_id,
                            "kind": "charge", "amount_micros": -micros, "request_id": row["request_id"],
                            "note": "",
                        })
                        batch.ledger.append(posting.ledger)

    def record_channel(self, channel_id: int, **columns: Any) -> None:
        self._batch.channels.setdefault(channel_id, {}).update(_CHANNEL_BOUNDS.apply(columns))

    def record_channel_event(self, channel_id: int, kind: str, reason: str, actor: str = "auto") -> None:
        """Queue a row of the channel's health trail; it commits with the health columns it explains."""
        self._batch.events.append(_EVENT_BOUNDS.apply({
            "channel_id": channel_id, "created_at": datetime.now(timezone.utc), "kind": kind, "reason": reason,
            "actor": actor}))

    @property
    def waiting(self) -> bool:
        """The database stopped answering and rows wait in memory (for alerts)."""
        return self._waiting

    @property
    def kept_aside(self) -> int:
        """Writes this process kept in dead_letters, or dropped, since it started (for alerts)."""
        return self._kept_aside

    def queued(self) -> int:
        """Usage rows waiting for the next flush (a number that keeps growing means commits fail)."""
        return len(self._batch.logs)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="polyrelay-batch-writer")

    async def close(self) -> None:
        await stop_task(self._task)
        await self.flush()
        if self._batch:
            log.error("stopping with %d usage rows unwritten: the database did not answer", self.queued())

    async def flush(self) -> None:
        async with self._flush_lock:
            batch, self._batch = self._batch, _Batch()
            if not batch:
                return
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            try:
                outcome = await loop.run_in_executor(self._executor, self._commit, batch)
            except Exception:  # a bug, not the database: keep the money and say so
                log.exception("usage flush failed; will retry")
                metrics.flushed(time.perf_counter() - started, ok=False)
                self._merge_back(batch)
                return
            metrics.flushed(time.perf_counter() - started, ok=not outcome.left)
            self._reconcile(outcome)
            for part in outcome.left:
                self._merge_back(part)
            self._note_answering(outcome)

    def _reconcile(self, outcome: _Outcome) -> None:
        """Charges committed or kept aside are no longer this process's to remember, nor part of the budget
        leases they were spent from; the balances read back replace the in-memory ones. Same loop step, so
        no charge is counted twice or not at all."""
        users: dict[int, UserRecord] = {}
        tokens: dict[int, TokenRecord] = {}
        for part in outcome.done:
            for user_id, micros in part.balances.items():
                users[user_id] = user = part.users[user_id]
                user.unflushed_micros -= micros
            for token_id, token in part.tokens.items():
                tokens[token_id] = token
                token.unflushed_micros -= part.spend.get(token_id, 0)
            for posting in part.postings:
                for lease in posting.leases:
                    lease.spent(posting.micros)
        for user_id, balance in outcome.balances.items():
            if user_id in users:
                users[user_id].balance_micros = balance - users[user_id].unflushed_micros
        for token_id, used in outcome.used.items():
            if token_id in tokens:
                tokens[token_id].used_micros = used + tokens[token_id].unflushed_micros

    def _note_answering(self, outcome: _Outcome) -> None:
        if outcome.left and not self._waiting:
            self._waiting = True
            log.error("usage flush failed, the database did not answer (%s); keeping %d rows and retrying "
                      "every %.1f s", outcome.error, self.queued(), self._interval_s)
        elif not outcome.left and self._waiting:
            self._waiting = False
            log.warning("usage flush: the database answers again; the rows kept meanwhile are written")

    def _merge_back(self, batch: _Batch) -> None:
        current = self._batch
        current.logs[:0] = batch.logs
        current.postings[:0] = batch.postings
        for token_id, micros in batch.spend.items():
            current.spend[token_id] = current.spend.get(token_id, 0) + micros
        for token_id, when in batch.last_used.items():
            current.last_used.setdefault(token_id, when)
        for channel_id, columns in batch.channels.items():
            current.channels[channel_id] = {**columns, **current.channels.get(channel_id, {})}
        current.events[:0] = batch.events
        current.ledger[:0] = batch.ledger
        for user_id, micros in batch.balances.items():
            current.balances[user_id] = current.balances.get(user_id, 0) + micros
        current.users.update(batch.users)
        current.tokens.update(batch.tokens)
        for row, micros in batch.periods.items():
            current.periods[row] = current.periods.get(row, 0) + micros

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception:  # a bug in reconciling: say so, and keep the writer alive
                log.exception("usage flush failed")

    def _commit(self, batch: _Batch) -> _Outcome:
        """On the DB thread: the batch in one transaction, else row by row; never raises for a bad row."""
        outcome = _Outcome()
        try:
            outcome.add(batch, self._write(batch))
            return outcome
        except Exception as error:
            if _unanswered(error):
                outcome.left, outcome.error = [batch], _first_line(error)
                return outcome
            log.warning("usage flush of %d rows refused (%s); writing them one by one", len(batch.logs),
                        _first_line(error))
        parts = batch.parts()
        for index, part in enumerate(parts):
            try:
                outcome.add(part, self._write_or_keep_aside(part))
            except Exception as error:  # only when the database stopped answering meanwhile
                outcome.left, outcome.error = parts[index:], _first_line(error)
                break
        return outcome

    def _write_or_keep_aside(self, part: _Batch) -> tuple[dict[int, int], dict[int, int]]:
        """One part in its own transaction; refused, its money without its free text plus a dead letter
        of the whole row; refused again, only the dead letter (the money is then not booked)."""
        errors: list[str] = []
        attempts = [part]
        if part.logs:
            attempts.append(replace(part, logs=[_USAGE.stripped(self._dialect, row) for row in part.logs]))
        attempts.append(_Batch(users=part.users, tokens=part.tokens))  # books nothing, reads the money back
        for number, attempt in enumerate(attempts):
            letter = None if number == 0 else self._dead_letter(part, errors, committed=attempt is not attempts[-1])
            try:
                read_back = self._write(attempt, letter)
            except Exception as error:
                if _unanswered(error):
                    raise
                errors.append(_first_line(error))
                continue
            if letter is not None:
                self._kept_aside += 1
                log.error("usage row %s kept in dead_letters (%s): %s", letter["request_id"] or "(channel health)",
                          "written with its text blanked" if letter["committed"] else "not written, not charged",
                          letter["error"])
            return read_back
        self._kept_aside += 1
        log.error("write dropped, even its dead letter was refused (%s): %s", "; ".join(errors),
                  self._payload(part))
        return {}, {}

    def _dead_letter(self, part: _Batch, errors: list[str], *, committed: bool) -> dict[str, Any]:
        request_id = _USAGE.named(self._dialect, part.logs[0])["request_id"] if part.logs else ""
        return _DEAD_BOUNDS.apply({"created_at": datetime.now(timezone.utc), "request_id": request_id,
                                   "committed": committed, "row": self._payload(part), "error": "; ".join(errors)})

    def _payload(self, part: _Batch) -> str:
        if not part.postings:
            return json.dumps({"channels": part.channels, "last_used": part.last_used, "events": part.events},
                              default=str)
        posting = part.postings[0]
        ledger = _LEDGER.named(self._dialect, posting.ledger) if posting.ledger is not None else None
        return json.dumps({"usage_log": _USAGE.named(self._dialect, posting.log), "ledger": ledger}, default=str)

    def _write(self, batch: _Batch, dead_letter: dict[str, Any] | None = None) -> tuple[dict[int, int], dict[int, int]]:
        """One transaction; returns the committed balances and token spend it touched."""
        with Session(self._engine) as session, session.begin():
            connection = session.connection()
            if dead_letter is not None:
                connection.execute(_DEAD_LETTER, dead_letter)
            _USAGE.execute(connection, batch.logs)
            self._rollups.upsert(connection, batch.logs)  # the daily sums commit with the rows they count
            _LEDGER.execute(connection, batch.ledger)
            if batch.balances:
                connection.execute(_CHARGE, [{"row_id": i, "micros": m, "floor": _MICROS_MIN + m}
                                             for i, m in batch.balances.items()])
            if batch.spend:
                connection.execute(_SPEND, [{"row_id": i, "micros": m, "ceiling": _MICROS_MAX - m}
                                            for i, m in batch.spend.items()])
            count(connection, batch.periods)
            if batch.last_used:
                connection.execute(_LAST_USED, [{"row_id": i, "when": when} for i, when in batch.last_used.items()])
            for channel_id, columns in batch.channels.items():
                columns = {**columns, "updated_at": datetime.now(timezone.utc)}
                session.execute(update(models.Channel).where(models.Channel.id == channel_id).values(**columns))
            if batch.events:
                connection.execute(_EVENTS, batch.events)
            if any("enabled" in columns for columns in batch.channels.values()):
                bump_records_version(session, CHANNELS)  # a channel left rotation: every process must see it
            balances = dict(connection.execute(_BALANCES, {"ids": list(batch.users)}).all()) if batch.users else {}
            used = dict(connection.execute(_SPENT, {"ids": list(batch.tokens)}).all()) if batch.tokens else {}
            return balances, used
