"""Budget leases: every node spends metered money it has leased from the database, so admission stays
local and the money served never exceeds what an account holds, whatever the number of nodes.

A *subject* is a user with a prepaid balance (``u:<id>``), a key with its own limit (``t:<id>``), or
one period of a periodic budget: a key's (``t:<id>@d<start>``, ``w``, ``m``) or a user's cap
(``b:<id>@...``), whose money is the budget minus what was charged under that period
(``billing.periods``). A new period is a new subject, so leases of the old period keep only the
calls admitted in it, and the new one is granted against its own, empty, count.
Per subject and node, ``budget_leases`` holds the part of the subject's money that node may hold
and spend: its holds in flight, its charges not yet committed, and what is still free. A grant
runs in one transaction that locks the subject's row and leaves the live leases of all nodes
together within what the subject has (its balance, or its limit minus its committed spend), so
the sum of what the nodes can spend never exceeds it. A call is admitted from the node's own
lease with a few integer operations; only when the lease runs short does the call wait for a
grant (which also asks for the next calls' share, and is asked ahead of time when the lease runs
low). Committed charges shrink the lease they were spent from; idle leases go back; a node that
stops renewing its leases (crashed, cut off) loses them when they expire, and stops spending them
itself before they do. The last money of a subject can be held short of a call's estimate (the
"capped hold" of docs/billing.md) only by a node that holds all of the subject's live leases, so
at most one such call is in flight across the cluster: the single-node overdraft bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from polyrelay.background import every, stop_task
from polyrelay.billing.periods import Period, PeriodClock
from polyrelay.billing.quota import Reservation, decide
from polyrelay.errors import RelayError
from polyrelay.store import models
from polyrelay.store.periods import spent_in
from polyrelay.store.snapshot import TokenRecord, UserRecord

log = logging.getLogger("polyrelay")


_TEN_YEARS_S = 10 * 366 * 86_400


class BudgetSettings(BaseModel):
    """How big leases are and how long they live (see docs/scaling.md)."""

    calls_per_grant: int = Field(default=32, ge=1, le=10_000,
                                 description="A grant asks for this many calls' estimates at once.")
    renew_s: float = Field(default=2.0, gt=0, le=60, description="Leases are renewed (and idle ones returned) this often.")
    ttl_s: float = Field(default=15.0, gt=0, le=600,
                         description="A lease not renewed for this long counts for nothing on other nodes.")
    idle_s: float = Field(default=3.0, ge=0, le=600,
                          description="The free part of a lease unused for this long goes back to the account.")
    clock_offset_s: float = Field(default=0.0, ge=-_TEN_YEARS_S, le=_TEN_YEARS_S,
                                  description="Seconds added to the clock budget periods are reckoned on, for "
                                              "drills and tests that must cross a period boundary; 0 in production.")

    @model_validator(mode="after")
    def _renewed_before_expiry(self) -> BudgetSettings:
        # A node stops spending its leases 2 x renew_s before they expire: there must be time left to spend them.
        if self.ttl_s <= 2 * self.renew_s:
            raise ValueError("budget.ttl_s must be more than twice budget.renew_s")
        return self


_Record = UserRecord | TokenRecord
# ("u", user id, None): a balance; ("t", token id, period or None): a key's limit; ("b", user id, period): a user's cap.
_Key = tuple[str, int, Period | None]


@dataclass(slots=True, eq=False)
class Lease:
    """This node's share of one subject's money, as the hot path sees it."""

    key: _Key
    record: _Record
    micros: int = 0  # holds + charges not committed yet + what is free; never more than the row says
    held: int = 0  # estimates held on it by calls in flight
    unflushed: int = 0  # charges settled on it that the database does not hold yet
    written: int = 0  # what the database row says, as far as this node has told it
    basis: int | None = None  # a key's limit or a user's cap when last granted: a changed one asks again
    used_at: float = 0.0  # monotonic time of the last hold
    dry_until: float = 0.0  # the last grant found the subject exhausted: calls are decided without asking till then
    dry_mark: int = 0  # the lowest ``headroom()`` since: a top-up or refund seen since ends the wait at once
    commits: int = 0  # committed charges taken out of the lease so far
    dry_commits: int = 0  # ``commits`` at the exhausted grant: one committed since may have freed money
    alone: bool = False  # no other node held any of the subject at the last grant

    def free(self) -> int:
        return self.micros - self.held - self.unflushed

    def busy(self) -> int:
        return self.held + self.unflushed

    def limit(self) -> int | None:
        """The limit the subject's money comes from (None for a balance)."""
        kind = self.key[0]
        if kind == "t":
            return self.record.quota_micros  # type: ignore[union-attr]
        return self.record.budget_micros if kind == "b" else None  # type: ignore[union-attr]

    def current(self) -> bool:
        return self.key[0] == "u" or self.basis == self.limit()

    @property
    def period_row(self) -> tuple[str, str, int] | None:
        """The ``budget_periods`` row its charges count in: (subject, period, start)."""
        kind, row_id, period = self.key
        if period is None:
            return None
        return f"{'t' if kind == 't' else 'u'}:{row_id}", period.kind, period.start

    def headroom(self) -> int:
        """What grows when the subject gets money back: a user's balance, a key's unspent limit."""
        kind, record = self.key[0], self.record
        if kind == "u":
            return record.balance_micros  # type: ignore[union-attr]
        return -record.used_micros if kind == "t" else 0  # type: ignore[union-attr]

    def hold(self, micros: int) -> None:
        self.held += micros

    def settled(self, held: int, cost: int) -> None:
        """A call's hold became its charge, which the database does not hold yet."""
        self.held -= held
        self.unflushed += cost

    def spent(self, micros: int) -> None:
        """A charge the database now holds: it no longer needs this lease."""
        self.micros = max(self.micros - micros, 0)
        self.unflushed = max(self.unflushed - micros, 0)
        self.commits += 1

    def dry(self, now: float) -> bool:
        """Exhausted at the last grant, and nothing seen since says there is more.

        A grant can find the money short only because a charge committed while it was asked for
        counted twice (in the balance and still in this node's row): after a commit, ask again.
        """
        if self.dry_until <= now or not self.current() or self.commits != self.dry_commits:
            return False
        headroom = self.headroom()
        if headroom > self.dry_mark:
            return False
        self.dry_mark = headroom  # charges since lower it; only money coming back raises it
        return True


@dataclass(slots=True)
class _Ask:
    key: _Key
    want: int  # what the next calls would like
    must: int  # what this call cannot do without
    busy: int  # what the node holds in flight or spent uncommitted: a shrinking lease keeps it
    returned: int  # the lease minus what its row says: what the node gave back since (<= 0)
    shrink: bool  # the limit changed since the last grant: a lease over it shrinks


@dataclass(slots=True)
class _Grant:
    key: _Key
    delta: int  # added to the lease (negative: shrunk to fit a limit lowered meanwhile)
    others: int  # what the other live nodes hold of the subject
    left: int  # what stays free after this grant
    written: int  # the row now


@dataclass(slots=True)
class _Renewal:
    changes: list[tuple[_Key, int]] = field(default_factory=list)  # (lease, micros to add to its row)
    released: list[_Key] = field(default_factory=list)  # empty and idle: forgotten once their rows are gone


_PERIOD_LETTER = {"daily": "d", "weekly": "w", "monthly": "m"}


def _subject(key: _Key) -> str:
    kind, row_id, period = key
    return f"{kind}:{row_id}" if period is None else f"{kind}:{row_id}@{_PERIOD_LETTER[period.kind]}{period.start}"


_LEASES = models.BudgetLease.__table__
_USERS, _TOKENS = models.User.__table__, models.Token.__table__
_LOCK_USER = update(_USERS).where(_USERS.c.id == bindparam("row_id")).values(balance_micros=_USERS.c.balance_micros)
_LOCK_TOKEN = update(_TOKENS).where(_TOKENS.c.id == bindparam("row_id")).values(used_micros=_TOKENS.c.used_micros)
_USER = select(_USERS.c.balance_micros, _USERS.c.unlimited, _USERS.c.budget_micros).where(
    _USERS.c.id == bindparam("row_id"))
_TOKEN = select(_TOKENS.c.used_micros, _TOKENS.c.quota_micros, _TOKENS.c.admin_quota_micros).where(
    _TOKENS.c.id == bindparam("row_id"))
_OTHERS = select(func.coalesce(func.sum(_LEASES.c.micros), 0)).where(
    _LEASES.c.subject == bindparam("subject"), _LEASES.c.node != bindparam("node"),
    _LEASES.c.expires_at > bindparam("now"))
_MINE = select(_LEASES.c.micros).where(_LEASES.c.node == bindparam("node"), _LEASES.c.subject == bindparam("subject"))
# Rows change by differences, never by absolute values: a grant and a renewal queued in either order add up.
_ADD_TO = (update(_LEASES).where(_LEASES.c.node == bindparam("b_node"), _LEASES.c.subject == bindparam("b_subject"))
           .values(micros=_LEASES.c.micros + bindparam("delta")))
_NEW = insert(_LEASES)
_RENEW = update(_LEASES).where(_LEASES.c.node == bindparam("b_node")).values(expires_at=bindparam("expires"))
_EMPTY = delete(_LEASES).where(_LEASES.c.node == bindparam("b_node"), _LEASES.c.micros <= 0)
_FORGET_NODE = delete(_LEASES).where(_LEASES.c.node == bindparam("b_node"))
_EXPIRED = delete(_LEASES).where(_LEASES.c.expires_at < bindparam("before"))
# How long an exhausted subject's calls are decided on what the node has, without a transaction each; a top-up
# this node sees (its own admin API, or the change feed) ends it, another node's key limit raised waits this long.
_DRY_S = 0.5
# Where money is plenty, a grant takes at least this fraction of what is free, so a busy node asks
# rarely; where it is scarce, at most half of it, so nodes sharing it each get a part.
_PLENTY_SHARE = 16
_UNLIMITED = 1 << 62  # what an unlimited subject "has": any grant fits


def _now_ms() -> int:
    return int(time.time() * 1000)


def _unavailable() -> RelayError:
    return RelayError(503, "polyrelay cannot reach its database to check this account's money; try again shortly.",
                      type="server_error", code="billing_unavailable", headers={"retry-after": "2"})


class Budgets:
    """This node's leases; every reservation of the node goes through ``reserve``."""

    def __init__(self, engine: Engine, executor: ThreadPoolExecutor, settings: BudgetSettings | None = None,
                 node: str | None = None) -> None:
        self._engine = engine
        self._executor = executor  # the DB thread: grants and renewals run in order, one at a time
        self._settings = settings or BudgetSettings()
        self.clock = PeriodClock(self._settings.clock_offset_s)  # the periods of periodic budgets
        self.node = node or uuid.uuid4().hex
        self._leases: dict[_Key, Lease] = {}
        self._asking: dict[_Key, asyncio.Future[None]] = {}
        self._valid_until = 0.0  # monotonic: leases may be spent until then (renewed in time)
        self._task: asyncio.Task[None] | None = None
        self._renewing = True  # the last renewal worked; a change of state is logged once
        self._sweep_at = 0.0
        # A grant or renewal reads what each lease gave back since its row was written, writes the row, and
        # records what it wrote: one at a time, or two would both give back the same money.
        self._writing = asyncio.Lock()
        self._ahead: set[asyncio.Task[None]] = set()  # grants asked ahead of the calls (kept referenced)

    # --- hot path ---------------------------------------------------------------------------

    async def reserve(self, token: TokenRecord, estimate: int, minimum: int) -> Reservation:
        """Hold up to ``estimate`` for ``token``'s call, at least ``minimum``, or refuse it with 429.

        Unmetered (an unlimited user and a key without a limit): held in memory only, never refused.
        """
        leases = self._leases_of(token)
        if not leases:
            return Reservation.hold(token, estimate, ())
        need = max(estimate, 1)  # an empty account refuses even a free call
        if self._covers(leases, need):
            return self._hold(token, estimate, leases)
        for _ in range(3):  # grants other calls asked for first may cover this one too
            pending = {id(f): f for f in (self._asking.get(lease.key) for lease in leases) if f is not None}
            if not pending:
                break
            await asyncio.gather(*(asyncio.shield(f) for f in pending.values()))
            if self._covers(leases, need):
                return self._hold(token, estimate, leases)
        short = tuple(lease for lease in leases if lease.free() < need or not lease.current()) or leases
        now = time.monotonic()
        if now >= self._valid_until or not all(lease.dry(now) for lease in short):
            for _ in range(2):
                commits = [lease.commits for lease in short]
                await self._ask(short, need)
                if time.monotonic() >= self._valid_until:
                    raise _unavailable()
                if self._covers(leases, need):
                    return self._hold(token, estimate, leases)
                if commits == [lease.commits for lease in short]:
                    break  # else a charge committed meanwhile may have counted twice in that grant: once more
        free = min(lease.free() for lease in leases)
        # The last money: held short of the estimate only by a node that holds all of it (one such call at a time).
        alone = all(lease.alone for lease in leases if lease.free() < need)
        try:
            micros = decide(free, estimate, minimum, *_whose(leases), capped=alone)
        except RelayError:
            for lease in short:  # a fragment too small for this call may make up another node's
                lease.micros = min(lease.micros, lease.busy())
            raise
        return self._hold(token, micros, leases)

    def _covers(self, leases: tuple[Lease, ...], estimate: int) -> bool:
        if time.monotonic() >= self._valid_until:
            return False
        return all(lease.free() >= estimate and lease.current() for lease in leases)

    def _leases_of(self, token: TokenRecord) -> tuple[Lease, ...]:
        found: tuple[Lease, ...] = ()
        if token.quota_micros is not None:
            period = self.clock.current(token.budget_period) if token.budget_period is not None else None
            found = (self._lease(("t", token.id, period), token),)
        user = token.user
        if user is not None:
            if not user.unlimited:
                found = (*found, self._lease(("u", user.id, None), user))
            if user.budget_micros is not None and user.budget_period is not None:
                found = (*found, self._lease(("b", user.id, self.clock.current(user.budget_period)), user))
        return found

    def _lease(self, key: _Key, record: _Record) -> Lease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = Lease(key, record)
        elif lease.record is not record:  # the snapshot replaced the record: its holds moved with it
            lease.record = record
        return lease

    def _hold(self, token: TokenRecord, micros: int, leases: tuple[Lease, ...]) -> Reservation:
        now = time.monotonic()
        for lease in leases:
            lease.used_at = now
        reservation = Reservation.hold(token, micros, leases)
        low = micros * self._settings.calls_per_grant // 4
        running_low = tuple(lease for lease in leases if lease.free() < low and not lease.dry(now))
        if running_low and not any(lease.key in self._asking for lease in running_low):
            ahead = asyncio.get_running_loop().create_task(self._ask_quietly(running_low, micros))  # the next calls'
            self._ahead.add(ahead)
            ahead.add_done_callback(self._ahead.discard)
        return reservation

    # --- grants -----------------------------------------------------------------------------

    async def _ask_quietly(self, leases: tuple[Lease, ...], estimate: int) -> None:
        try:
            await self._ask(leases, estimate)
        except RelayError:
            pass  # the call that needs it will ask again, and say so
        except Exception:
            log.exception("budget grant asked ahead failed")

    async def _ask(self, leases: tuple[Lease, ...], estimate: int) -> list[_Grant]:
        """One transaction granting each lease what the next ``calls_per_grant`` calls need."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        for lease in leases:
            self._asking[lease.key] = future
        target = estimate * self._settings.calls_per_grant
        try:
            async with self._writing:
                commits = [lease.commits for lease in leases]
                asks = [_Ask(lease.key, want=max(target - lease.free(), 0), must=max(estimate - lease.free(), 0),
                             busy=lease.busy(), returned=lease.micros - lease.written, shrink=not lease.current())
                        for lease in leases]
                started = time.monotonic()
                grants = await loop.run_in_executor(self._executor, self._grant, asks, _now_ms())
                for lease, grant in zip(leases, grants):
                    lease.micros = max(lease.micros + grant.delta, 0)
                    lease.written = grant.written
        except SQLAlchemyError as error:
            self._note_renewal(False, error)
            raise _unavailable() from None
        finally:
            for lease in leases:
                if self._asking.get(lease.key) is future:
                    del self._asking[lease.key]
            future.set_result(None)
        for lease, grant, seen in zip(leases, grants, commits):
            lease.basis = lease.limit()
            lease.alone = grant.others <= 0
            if grant.left <= 0:  # the subject is exhausted for now: the next calls don't ask again at once
                lease.dry_until, lease.dry_mark, lease.dry_commits = started + _DRY_S, lease.headroom(), seen
        self._renewed(started)  # the grant's transaction renewed every lease of this node
        return grants

    def _grant(self, asks: list[_Ask], now: int) -> list[_Grant]:
        """On the DB thread: lock each subject's row, grant what fits beside every live lease.

        The node's own row first learns what the node gave back since it was last written (its
        committed charges and idle money), so the grant sees everything that is free. Beyond what
        this call must have, a grant takes the next calls' share or a sixteenth of what is free,
        whichever is more, but at most half of it.
        """
        grants: list[_Grant] = []
        with Session(self._engine) as session, session.begin():
            connection = session.connection()
            for ask in asks:
                subject = _subject(ask.key)
                has = _has(connection, ask.key)
                others = int(connection.execute(_OTHERS, {"subject": subject, "node": self.node,
                                                          "now": now}).scalar_one())
                was = connection.execute(_MINE, {"subject": subject, "node": self.node}).scalar()
                mine = max((was or 0) + ask.returned, 0)
                free = has - others - mine
                if free >= 0:
                    want = max(ask.want, free // _PLENTY_SHARE)
                    delta = min(free, max(ask.must, min(want, free // 2)))
                elif ask.shrink:  # a key's limit was lowered under its lease: keep only what is in use
                    delta = min(max(free, ask.busy - mine), 0)
                else:  # charges the writer committed since the ask was made count twice for a moment
                    delta = 0
                written = mine + delta
                if was is None:
                    connection.execute(_NEW, {"node": self.node, "subject": subject, "micros": written,
                                              "expires_at": now})
                elif written != was:
                    connection.execute(_ADD_TO, {"b_node": self.node, "b_subject": subject, "delta": written - was})
                grants.append(_Grant(ask.key, delta, others, free - delta, written))
            connection.execute(_RENEW, {"b_node": self.node, "expires": now + int(self._settings.ttl_s * 1000)})
        return grants

    # --- commits, renewal, shutdown ----------------------------------------------------------

    def start(self) -> None:
        self._task = every(self._settings.renew_s, self._renew_round, "budget lease renewal", wait_first=True)

    async def close(self) -> None:
        """Give every lease back; after the writer's last flush, whose charges left them."""
        await stop_task(self._task)
        for ahead in list(self._ahead):
            await stop_task(ahead)
        loop = asyncio.get_running_loop()
        try:
            async with self._writing:
                await loop.run_in_executor(self._executor, self._forget)
                self._leases.clear()
        except SQLAlchemyError:
            log.warning("could not return this node's budget leases; they expire in %.0f s", self._settings.ttl_s)

    def _forget(self) -> None:
        with Session(self._engine) as session, session.begin():
            session.connection().execute(_FORGET_NODE, {"b_node": self.node})

    async def _renew_round(self) -> None:
        """One scheduled renewal; the database away is noted (once), not logged with a traceback each time."""
        try:
            await self.renew()
        except SQLAlchemyError as error:
            self._note_renewal(False, error)

    async def renew(self) -> None:
        """Extend this node's leases, give back idle money and write what committed charges used up."""
        loop = asyncio.get_running_loop()
        async with self._writing:
            renewal = self._renewal()
            started = time.monotonic()
            await loop.run_in_executor(self._executor, self._renew, renewal, _now_ms())
            for key, delta in renewal.changes:
                lease = self._leases.get(key)
                if lease is not None:
                    lease.written += delta
            for key in renewal.released:
                lease = self._leases.get(key)
                if lease is not None and key not in self._asking and lease.micros <= 0 and lease.busy() <= 0:
                    del self._leases[key]
        self._renewed(started)

    def _renewal(self) -> _Renewal:
        """Idle leases shrink to what they hold; every lease's row learns what it gave back."""
        renewal = _Renewal()
        idle_before = time.monotonic() - self._settings.idle_s
        for key, lease in list(self._leases.items()):
            if key in self._asking:
                continue
            busy = lease.busy()
            if lease.used_at < idle_before:
                lease.micros = min(lease.micros, busy)
            if lease.micros != lease.written:
                renewal.changes.append((key, lease.micros - lease.written))
            if lease.micros <= 0 and busy <= 0:
                renewal.released.append(key)  # its row reaches 0 with this renewal and is deleted
        return renewal

    def _renew(self, renewal: _Renewal, now: int) -> None:
        with Session(self._engine) as session, session.begin():
            connection = session.connection()
            if renewal.changes:
                connection.execute(_ADD_TO, [{"b_node": self.node, "b_subject": _subject(key), "delta": delta}
                                             for key, delta in renewal.changes])
            connection.execute(_EMPTY, {"b_node": self.node})
            connection.execute(_RENEW, {"b_node": self.node, "expires": now + int(self._settings.ttl_s * 1000)})
            if time.monotonic() >= self._sweep_at:  # rows of nodes long gone
                self._sweep_at = time.monotonic() + 60
                connection.execute(_EXPIRED, {"before": now - 60_000})

    def _renewed(self, started: float) -> None:
        valid_until = started + self._settings.ttl_s - 2 * self._settings.renew_s
        if valid_until > self._valid_until:
            self._valid_until = valid_until
        self._note_renewal(True)

    def _note_renewal(self, ok: bool, error: BaseException | None = None) -> None:
        if ok and not self._renewing:
            log.warning("budget leases renewed again: metered calls are admitted")
        elif not ok and self._renewing:
            log.error("budget leases cannot be renewed, the database does not answer (%s); metered calls are "
                      "refused with 503 once this node's leases run out", type(error).__name__)
        self._renewing = ok

    # --- reports ----------------------------------------------------------------------------

    def leased_micros(self) -> int:
        """Money this node holds leases on (for /api/system)."""
        return sum(lease.micros for lease in self._leases.values())


def _has(connection: Connection, key: _Key) -> int:
    """What a subject has, its row locked: a balance; a key's limit or a user's cap, minus what was
    committed against it (for a period: charged under that period)."""
    kind, row_id, period = key
    if kind in ("u", "b"):
        connection.execute(_LOCK_USER, {"row_id": row_id})
        user = connection.execute(_USER, {"row_id": row_id}).first()
        if user is None:
            return 0
        if kind == "u":
            return _UNLIMITED if user.unlimited else user.balance_micros
        if user.budget_micros is None or period is None:
            return 0  # the cap was lifted meanwhile: this node stops asking once its snapshot says so
        return user.budget_micros - spent_in(connection, f"u:{row_id}", period.kind, period.start)
    connection.execute(_LOCK_TOKEN, {"row_id": row_id})
    token = connection.execute(_TOKEN, {"row_id": row_id}).first()
    if token is None:
        return 0
    limits = [q for q in (token.quota_micros, token.admin_quota_micros) if q is not None]
    if not limits:
        return _UNLIMITED
    used = token.used_micros if period is None else spent_in(connection, f"t:{row_id}", period.kind, period.start)
    return min(limits) - used


def _whose(leases: Iterable[Lease]) -> tuple[str, str]:
    """Which limit refused, and when it resets: the smaller of what remains decides the message."""
    tightest = min(leases, key=Lease.free)
    kind, _, period = tightest.key
    if period is None:
        return ("this key has" if kind == "t" else "your account has"), ""
    whose = "this key's" if kind == "t" else "your account's"
    return f"{whose} {period.kind} budget has", f" The budget resets at {period.resets_at()}."
