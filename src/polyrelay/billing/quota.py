"""Reserve before the upstream call, settle after: neither a key's limit nor its user's balance
is overdrawn by more than what real costs exceed their estimates (see docs/billing.md).

Reservations live on the in-memory token and user records, so admission is a few
integer operations on the event loop (atomic within the process). Settled spend is
persisted by the batching writer, with a ledger entry, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyrelay.billing.meter import Price
from polyrelay.errors import RelayError
from polyrelay.store.snapshot import TokenRecord, UserRecord

def charge(token: TokenRecord, micros: int) -> int:
    """Apply the token's user's group multiplier (integer parts per million, rounded once)."""
    user = token.user
    if user is None or user.ratio_ppm == 1_000_000:
        return micros
    return (micros * user.ratio_ppm + 500_000) // 1_000_000


@dataclass(slots=True)
class Reservation:
    token: TokenRecord
    micros: int
    user: UserRecord | None = None
    open: bool = True

    def settle(self, cost_micros: int) -> None:
        """Replace the hold by the real cost (0 refunds it). Idempotent.

        Only the in-memory records change here; the caller persists the charge (the relay
        through the batching writer, the task engine in its own transaction).
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


def reserve(token: TokenRecord, micros: int, minimum: int | None = None) -> Reservation:
    """Hold up to ``micros`` on the token's own limit and on its user's balance, or refuse with 429.

    A call is admitted while what remains covers its ``minimum`` (the part of its cost known
    before the upstream answers, e.g. the prompt); the hold is capped at what remains, so the
    last cents of a balance stay usable. The overdraw bound that follows: a call admitted on a
    capped hold may cost its output beyond what remained (see docs/billing.md).
    """
    floor = micros if minimum is None else min(minimum, micros)
    available = token.remaining_micros
    whose = "this key has"
    user = token.user
    if user is not None and not user.unlimited:
        left = user.balance_micros - user.reserved_micros
        if available is None or left < available:
            available, whose = left, "your account has"
    if available is not None:
        if available <= 0 or available < floor:
            raise RelayError(
                429,
                f"You exceeded your current quota: {whose} {max(available, 0) / 1_000_000:.6f} USD available "
                f"and this request costs at least {floor / 1_000_000:.6f} USD.",
                type="insufficient_quota",
                code="insufficient_quota",
            )
        micros = min(micros, available)
    if user is not None:
        user.reserved_micros += micros
    token.reserved_micros += micros
    return Reservation(token, micros, user)
