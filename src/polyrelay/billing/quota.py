"""Reserve before the upstream call, settle after: neither a key's limit nor its user's balance
is overdrawn by more than what real costs exceed their estimates (see docs/billing.md).

Reservations live on the in-memory token and user records, so admission is a few
integer operations on the event loop (atomic within the process). Settled spend is
persisted by the batching writer, with a ledger entry, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyrelay.billing.meter import Price, Usage
from polyrelay.errors import RelayError
from polyrelay.relay.call import Call
from polyrelay.store.snapshot import TokenRecord, UserRecord

# A prompt token is at least ~3 bytes of JSON-encoded text; bytes/3 over-estimates the
# prompt, which is the safe side for a reservation.
_BYTES_PER_TOKEN = 3


def estimate(call: Call, price: Price | None, default_output_tokens: int) -> int:
    """Upper-leaning guess of a call's cost, held until the real usage is known."""
    if price is None:
        return 0
    guess = Usage(
        prompt_tokens=len(call.body) // _BYTES_PER_TOKEN if call.payload is not None else 0,
        completion_tokens=call.max_output_tokens if call.max_output_tokens is not None else default_output_tokens,
        images=call.images,
        characters=call.characters,
    )
    if not (price.input_per_mtok or price.output_per_mtok):
        guess.prompt_tokens = guess.completion_tokens = 0
    return price.cost(guess)


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


def reserve(token: TokenRecord, micros: int) -> Reservation:
    """Hold ``micros`` on the token's own limit and on its user's balance, or refuse with 429."""
    remaining = token.remaining_micros
    if remaining is not None and (remaining <= 0 or remaining < micros):
        raise RelayError(
            429,
            "You exceeded your current quota: this key has "
            f"{max(remaining, 0) / 1_000_000:.6f} USD left and this request may cost up to "
            f"{micros / 1_000_000:.6f} USD.",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    user = token.user
    if user is not None:
        if not user.unlimited:
            left = user.balance_micros - user.reserved_micros
            if left <= 0 or left < micros:
                raise RelayError(
                    429,
                    "You exceeded your current quota: your account has "
                    f"{max(left, 0) / 1_000_000:.6f} USD available and this request may cost up to "
                    f"{micros / 1_000_000:.6f} USD.",
                    type="insufficient_quota",
                    code="insufficient_quota",
                )
        user.reserved_micros += micros
    token.reserved_micros += micros
    return Reservation(token, micros, user)
