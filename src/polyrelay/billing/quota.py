"""Reserve before the upstream call, settle after: neither a key's limit nor its user's balance
is overdrawn by more than what real costs exceed their estimates (see docs/billing.md).

Holds live on the in-memory token and user records, so a reservation is a few integer
operations on the event loop; the money they are held on is this node's budget lease
(``billing.budget``). Settled spend is persisted by the batching writer, with a ledger
entry, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from polyrelay.billing.meter import Price
from polyrelay.errors import RelayError
from polyrelay.store.periods import PeriodRow
from polyrelay.store.snapshot import TokenRecord, UserRecord


def charge(token: TokenRecord, micros: int) -> int:
    """Apply the token's user's group multiplier (integer parts per million, rounded once)."""
    user = token.user
    if user is None or user.ratio_ppm == 1_000_000:
        return micros
    return scaled(micros, user.ratio_ppm)


def scaled(micros: int, ratio_ppm: int) -> int:
    """``micros`` times a group multiplier in parts per million, rounded half up: what a caller of that group pays."""
    return (micros * ratio_ppm + 500_000) // 1_000_000


class Spendable(Protocol):
    """What a hold is held on (``billing.budget.Lease``): it counts its own holds and uncommitted
    charges, and is told when a charge is committed."""

    @property
    def period_row(self) -> PeriodRow | None: ...

    def hold(self, micros: int) -> None: ...

    def settled(self, held: int, cost: int) -> None: ...

    def spent(self, micros: int) -> None: ...


@dataclass(slots=True)
class Reservation:
    token: TokenRecord
    micros: int
    user: UserRecord | None = None
    leases: tuple[Spendable, ...] = ()  # the budget leases it was held on
    open: bool = True

    @classmethod
    def hold(cls, token: TokenRecord, micros: int, leases: tuple[Spendable, ...]) -> Reservation:
        """Add ``micros`` to what the token and its user hold in flight."""
        user = token.user
        if user is not None:
            user.reserved_micros += micros
        token.reserved_micros += micros
        for lease in leases:
            lease.hold(micros)
        return cls(token, micros, user, leases)

    @property
    def periods(self) -> tuple[PeriodRow, ...]:
        """The periods of periodic budgets its charge counts in: those of its admission."""
        return tuple(row for lease in self.leases if (row := lease.period_row) is not None)

    def settle(self, cost_micros: int, committed: bool = False) -> None:
        """Replace the hold by the real cost (0 refunds it). Idempotent.

        Only the in-memory records change here; the caller persists the charge: the relay
        through the batching writer (which tells the budget once committed), the task engine
        in its own transaction, before this (``committed``: the leases no longer include it).
        """
        if not self.open:
            return
        self.open = False
        token = self.token
        token.reserved_micros -= self.micros
        token.used_micros += cost_micros
        user = self.user
        if user is not None:
            user.reserved_micros -= self.micros
            user.balance_micros -= cost_micros
        for lease in self.leases:
            lease.settled(self.micros, cost_micros)
            if committed and cost_micros:
                lease.spent(cost_micros)


def require_price(token: TokenRecord, model: str, price: Price | None) -> None:
    """A metered key must not run a model nobody priced; an unlimited key may."""
    if price is None and token.metered:
        raise RelayError(
            403,
            f"The model '{model}' has no price set, so keys with a quota cannot use it. "
            "Ask the operator to set a price for it (or a 'default' price).",
            type="permission_error",
            code="model_price_not_set",
            param="model",
        )


def decide(available: int, micros: int, minimum: int, whose: str, note: str = "", *, capped: bool = True) -> int:
    """What to hold of ``micros`` when ``available`` is all there is, or refuse with 429.

    A call is admitted while what remains covers its ``minimum`` (the part of its cost known
    before the upstream answers, e.g. the prompt); the hold is capped at what remains, so the
    last cents of a balance stay usable (``capped=False`` forbids that: another node holds part
    of the money). The overdraw bound that follows: a call admitted on a capped hold may cost
    its output beyond what remained (see docs/billing.md). ``note`` ends a refusal's message
    (when a periodic budget resets).
    """
    if available >= micros and available > 0:
        return micros
    floor = min(minimum, micros)
    if available <= 0 or available < floor:
        raise _insufficient(f"{whose} {max(available, 0) / 1_000_000:.6f} USD available and this request costs at "
                            f"least {floor / 1_000_000:.6f} USD.{note}")
    if not capped:
        raise _insufficient(f"{whose} {available / 1_000_000:.6f} USD available here, this request may cost up to "
                            f"{micros / 1_000_000:.6f} USD, and the rest is held by requests in flight.{note}")
    return available


def _insufficient(detail: str) -> RelayError:
    return RelayError(429, f"You exceeded your current quota: {detail}", type="insufficient_quota",
                      code="insufficient_quota")
