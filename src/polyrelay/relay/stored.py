"""Routing for calls about an object an upstream stores (a Response retrieved, deleted, cancelled by id).

Such a call names no model, so it cannot be routed by (kind, model), priced or reserved:
it goes to the caller's channels (its user's group) that speak the kind *natively* — a
bridged channel stores nothing — highest priority first, and to the next one when a
channel answers 404 (the object lives on another upstream or account). It is free, so
admission is the key, the IP fence and the rate limit only. A 404 from every channel is
the caller's 404; a channel that failed meanwhile makes it that failure instead, since
the object may live there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from polyrelay.errors import RelayError
from polyrelay.providers.base import Reply, Target
from polyrelay.relay import failover
from polyrelay.relay.admission import for_user
from polyrelay.relay.bridge import speaks_natively
from polyrelay.relay.routing import Health, by_priority, candidates, target_for
from polyrelay.store.snapshot import ChannelRecord, Snapshot, TokenRecord


def holders(snapshot: Snapshot, token: TokenRecord, kind: str) -> list[list[ChannelRecord]]:
    """The caller's channels that speak ``kind`` natively, by priority, highest first."""
    return for_user(token, by_priority(c for c in snapshot.channels if speaks_natively(c, kind)))


async def first_holder(
    groups: list[list[ChannelRecord]], attempt: Callable[[Target], Awaitable[Reply]], health: Health, what: str,
) -> Reply:
    """The answer of the first channel that knows the object; ``what`` names it in the errors."""
    missing: RelayError | None = None
    failed: RelayError | None = None
    for channel in candidates(groups):
        target = target_for(channel, "")
        try:
            answer = await attempt(target)
        except failover.ChannelFailed as failure:
            failure.error.scrub(channel.keys)
            health.failed(target, failure.error.message, rest_key=failure.rest_key)
            failed = failure.error
            continue
        except RelayError as error:
            if error.status != 404:
                raise error.scrub(channel.keys)
            missing = error.scrub(channel.keys)  # not on this upstream: perhaps on the next
            continue
        health.succeeded(channel)
        return answer
    if failed is not None and failed.status in (401, 403):  # our keys were refused, not the caller's
        raise RelayError(502, f"Every channel that may hold {what} refused polyrelay's credentials: {failed.message}",
                         type="upstream_error", code="upstream_auth_failed")
    if failed is not None:
        raise failed
    if missing is not None:
        raise missing
    raise RelayError(404, f"No channel of yours can look up {what}: none speaks this API natively.",
                     code="not_found")
