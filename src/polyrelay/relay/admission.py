"""One admission for every family: who the caller is, what it may use, and the money held for it.

Sync relays, task submits, one-off task calls and uploads all pass here, in this order:
key (enabled, unexpired, its user enabled) and IP fence when the request arrives, before
its body is read; then, once the family knows the model, the model allow-list, the
channels that can serve the request's kind and model (narrowed to the caller's group),
the price rule, the rate limits, and a reservation of the estimated cost.
"""

from __future__ import annotations

from collections.abc import Callable

from polyrelay.billing.meter import Price, Usage
from polyrelay.billing.budget import Budgets
from polyrelay.billing.quota import charge, require_price
from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call
from polyrelay.relay.auth import authenticate, check_client_ip, check_model_allowed
from polyrelay.relay.routing import routes
from polyrelay.relay.settlement import Outcome
from polyrelay.store.snapshot import ChannelRecord, Snapshot, TokenRecord
from polyrelay.telemetry import metrics

# A prompt token is at least ~3 bytes of JSON-encoded text; bytes/3 over-estimates the
# prompt, which is the safe side for a reservation.
_BYTES_PER_TOKEN = 3

# (estimate, minimum) of a call's cost in micro-USD under a price, before the group multiplier.
CostOf = Callable[[Price], tuple[int, int]]


def caller(snapshot: Snapshot, key: str | None, client_ip: str) -> TokenRecord:
    """The key's record, after the checks that need nothing but the key and the address; a refusal is
    counted (``polyrelay_refusals_total``): it is no relayed request, so no usage row counts it."""
    try:
        token = authenticate(snapshot, key)
        if token.allowed_ips is not None:
            check_client_ip(token, client_ip)
    except RelayError as error:
        metrics.refused(error.code or str(error.status))
        raise
    return token


async def rate_limit(limiter: RateLimiter, token: TokenRecord) -> None:
    """Take the call's place in the key's and user's rate limits; a refusal is counted like the key's."""
    try:
        await limiter.acquire(token)
    except RelayError as error:
        metrics.refused(error.code or str(error.status))
        raise


async def admit(
    snapshot: Snapshot, limiter: RateLimiter, budgets: Budgets, outcome: Outcome, kind: str, cost: CostOf, *,
    pinned: ChannelRecord | None = None, price_required: bool = True,
) -> list[list[ChannelRecord]]:
    """Admit ``outcome``'s call of ``kind`` (its token authenticated): the channels it may try, by priority.

    ``pinned`` replaces routing for follow-ups that must run where their parent task ran. On
    return ``outcome.price`` and ``outcome.reservation`` are set: from here on the caller must
    settle, whatever happens.
    """
    token = outcome.token
    assert token is not None, "authenticate first"
    model = outcome.model
    check_model_allowed(token, model)
    groups = channel_groups(snapshot, token, kind, model, pinned)
    if not groups:
        raise RelayError(404, f"The model '{model}' does not exist or no channel serves it for this request.",
                         code="model_not_found", param="model")
    outcome.price = price = snapshot.price_for(model)
    if price_required:
        require_price(token, model, price)
    await rate_limit(limiter, token)
    estimate, minimum = cost(price) if price is not None else (0, 0)
    outcome.reservation = await budgets.reserve(token, charge(token, estimate), charge(token, minimum))
    return groups


def channel_groups(snapshot: Snapshot, token: TokenRecord, kind: str, model: str,
                   pinned: ChannelRecord | None = None) -> list[list[ChannelRecord]]:
    """The channels ``token`` may try for ``kind`` and ``model``, by priority: routing (or ``pinned``)
    narrowed to its user's group. Empty: nothing serves the call for this key."""
    return for_user(token, [[pinned]] if pinned is not None else routes(snapshot, kind, model))


def for_user(token: TokenRecord, groups: list[list[ChannelRecord]]) -> list[list[ChannelRecord]]:
    """``groups`` without the channels ``token``'s user group may not use (empty groups dropped)."""
    allowed = token.user.channels if token.user is not None else None
    if allowed is None:
        return groups
    return [kept for group in groups if (kept := [c for c in group if c.name in allowed])]


def call_cost(call: Call, default_output_tokens: int) -> CostOf:
    """A relayed call's cost: the minimum is the part known up front (prompt, images, characters,
    per-request price); the estimate adds its output limit (else ``default_output_tokens``)."""

    def cost(price: Price) -> tuple[int, int]:
        per_token = bool(price.input_per_mtok or price.output_per_mtok)
        prompt = len(call.body) // _BYTES_PER_TOKEN if call.payload is not None and per_token else 0
        minimum = price.cost(Usage(prompt_tokens=prompt, images=call.images, characters=call.characters))
        if not per_token or not price.output_per_mtok:
            return minimum, minimum
        output = call.max_output_tokens if call.max_output_tokens is not None else default_output_tokens
        return minimum + -(-output * price.output_per_mtok // 1_000_000), minimum  # output rounded up

    return cost


def no_cost(price: Price) -> tuple[int, int]:
    """The cost of a free call (``Call.free``): nothing is held."""
    return 0, 0


def fixed_cost(usage: Usage, multiplier: float = 1.0) -> CostOf:
    """The cost of a task submit: known up front, so estimate and minimum are the same."""

    def cost(price: Price) -> tuple[int, int]:
        micros = round(price.cost(usage) * multiplier)
        return micros, micros

    return cost
