"""Submitting a task, the same for every family, on the relay's spine.

Admission (the same as a relayed call's), the failover loop over the channels that serve
the family's kind, then the task and its charge stored in one transaction. A family
supplies only what differs: how to send its request to one channel and key (``send``),
how to read the upstream's acceptance (``accept``, which raises a RelayError for a
refusal) and, where its upstream has one, which answer means "busy, try another channel".
Whatever happens after the reservation, it is settled exactly once and a usage row says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from polyrelay.billing.meter import Usage
from polyrelay.billing.quota import charge
from polyrelay.errors import RelayError
from polyrelay.providers.base import SUBMITTED, TERMINAL, Target, TaskView
from polyrelay.relay import failover
from polyrelay.relay.admission import admit, fixed_cost
from polyrelay.relay.routing import candidates, target_for
from polyrelay.relay.settlement import Outcome, note_attempt, usage_row
from polyrelay.scrub import scrub_json
from polyrelay.store.snapshot import ChannelRecord, TokenRecord
from polyrelay.tasks import store
from polyrelay.tasks.engine import TaskEngine, new_task_id


@dataclass(slots=True)
class Accepted:
    """The upstream took the job: its id for it, its first state, and what to keep with the task."""

    upstream_id: str
    status: str = SUBMITTED
    result: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Order:
    """What a family asks the engine to run and bill."""

    family: str
    action: str
    model: str  # the billed model name; also the name channels are chosen by
    kind: str  # only channels whose type serves this kind run it (``polyrelay.kinds``)
    endpoint: str  # for the usage log, e.g. "suno.submit.music"
    request: dict[str, Any]  # stored with the task (leave large inputs out)
    usage: Usage = field(default_factory=lambda: Usage(source="request"))  # billable quantities at submit
    notify_hook: str = ""
    mode: str = ""
    parent: TaskView | None = None  # follow-ups go to the parent's channel and key
    multiplier: float = 1.0  # on the model's price (Midjourney's speed modes)


Send = Callable[[ChannelRecord, str], Awaitable[tuple[int, Any]]]  # (channel, key) -> (HTTP status, body)
Accept = Callable[[int, Any], Accepted]  # raises RelayError when the upstream refused the job
Busy = Callable[[int, Any], bool]  # an answer that means "this channel is full": try the next


def channel_and_key(engine: TaskEngine, task: TaskView) -> tuple[ChannelRecord, str]:
    """The channel and key that submitted ``task``: its polls, results and follow-ups must use them."""
    channel = next((c for c in engine.spine.snapshot.channels if c.id == task.channel_id), None)
    if channel is None or not channel.keys:
        raise RelayError(503, f"The channel that ran task {task.id} is not available now.", type="upstream_error",
                         code="channel_unavailable")
    return channel, channel.keys[int(task.properties.get("key_index", 0)) % len(channel.keys)]


def _targets(engine: TaskEngine, order: Order, groups: list[list[ChannelRecord]]) -> Iterable[Target]:
    if order.parent is not None:
        channel, key = channel_and_key(engine, order.parent)
        index = int(order.parent.properties.get("key_index", 0)) % len(channel.keys)
        return [Target(channel, index, key, channel.upstream_model(order.model))]
    return (target_for(channel, order.model) for channel in candidates(groups))


def _attempt(send: Send, busy: Busy | None) -> Callable[[Target], Awaitable[tuple[int, Any]]]:
    async def attempt(target: Target) -> tuple[int, Any]:
        channel = target.channel
        try:
            status, body = await send(channel, target.key)
        except failover.TRANSPORT_ERRORS as exc:
            raise failover.transport_failed(exc) from None
        if failover.fails_over(status):
            raise failover.status_failed(status)
        if busy is not None and busy(status, body):
            raise failover.ChannelFailed(
                RelayError(503, "The upstream is busy.", type="upstream_error", code="channel_busy"),
                fallback=(status, body))
        return status, body

    return attempt


async def _run(
    engine: TaskEngine, order: Order, outcome: Outcome, send: Send, busy: Busy | None, *, price_required: bool = True,
) -> failover.Tried[tuple[int, Any]]:
    """Admit ``order`` (its fixed cost held), then the first channel's answer; inside the settler's guard."""
    spine = engine.spine
    cost = fixed_cost(order.usage, order.multiplier)
    pinned = channel_and_key(engine, order.parent)[0] if order.parent is not None else None
    groups = await admit(spine.snapshot, spine.limiter, spine.budgets, outcome, order.kind, cost, pinned=pinned,
                   price_required=price_required)
    assert outcome.token is not None
    outcome.fixed_cost = charge(outcome.token, cost(outcome.price)[0]) if outcome.price is not None else 0
    outcome.usage = order.usage
    return await failover.first_answer(order.model, _targets(engine, order, groups), _attempt(send, busy),
                                       spine.health, on_attempt=note_attempt(outcome), trace=outcome.trace)


async def submit(
    engine: TaskEngine, token: TokenRecord, order: Order, send: Send, accept: Accept, client_ip: str = "",
    busy: Busy | None = None, properties: dict[str, Any] | None = None,
) -> TaskView:
    """Run ``order`` on the first channel that answers; the stored task, charged in the same transaction."""
    task_id = new_task_id()
    outcome = Outcome(f"task-{task_id}", order.family, order.endpoint[:64], order.model, client_ip, token=token)
    with engine.spine.settler.guard(outcome):
        tried = await _run(engine, order, outcome, send, busy)
        keys = tried.target.channel.keys
        try:
            accepted = accept(*tried.answer)
        except RelayError as refused:  # the upstream's refusal, relayed: never with our key in it
            raise refused.scrub(keys)
        accepted.result = scrub_json(accepted.result, keys, credentials=False)
        outcome.status = 200
        cost = outcome.cost()
        row = usage_row(outcome, cost)
        periods = outcome.reservation.periods if outcome.reservation is not None else ()
        task = await engine.create(_task_row(engine, token, order, accepted, tried.target, cost, task_id, properties),
                                   row, periods)
        engine.spine.settler.charged(outcome, row)
        return task


async def call_once(
    engine: TaskEngine, token: TokenRecord, order: Order, send: Send, client_ip: str = ""
) -> tuple[int, Any]:
    """A family call that creates no task (Luma's ``file_upload``): the upstream's (status, body).

    Admitted and routed like a submit of the same model, but nothing is polled, so it settles at
    once: charged the model's price when one is set and the upstream accepted (HTTP < 400), free
    otherwise. Unlike a submit, an unpriced model is not refused for metered keys: these calls
    are helpers, which relays do not bill.
    """
    outcome = Outcome(f"{order.family}-{uuid.uuid4().hex}", order.family, order.endpoint[:64], order.model, client_ip,
                      token=token)
    with engine.spine.settler.guard(outcome):
        tried = await _run(engine, order, outcome, send, None, price_required=False)
    status, body = tried.answer
    body = scrub_json(body, tried.target.channel.keys, credentials=status >= 400)  # a refusal may echo a token
    outcome.status = status
    if status >= 400:
        outcome.error = f"upstream HTTP {status}"
    engine.spine.settler.finish(outcome)
    return status, body


def _task_row(
    engine: TaskEngine, token: TokenRecord, order: Order, accepted: Accepted, target: Target, cost: int,
    task_id: str, properties: dict[str, Any] | None,
) -> dict[str, Any]:
    now = store.now_ms()
    # Settlement happens only in the poller's or finish()'s transitions, so an upstream that says
    # "already finished" at submit is confirmed by the first poll rather than stored terminal.
    status = SUBMITTED if accepted.status in TERMINAL else accepted.status
    return {
        "id": task_id, "token_id": token.id, "token_name": token.name, "family": order.family,
        "action": order.action, "model": order.model, "mode": order.mode,
        "parent_id": order.parent.id if order.parent else None, "channel_id": target.channel.id,
        "upstream_id": accepted.upstream_id, "status": status, "progress": "0%", "request": order.request,
        "result": accepted.result, "fail_reason": "", "cost_micros": cost, "settlement": "held",
        "submit_time": now, "start_time": None, "finish_time": None,
        "next_poll_at": now + int(engine.settings.poll_interval_s * 1000),
        "poll_count": 0, "lease_owner": None, "lease_expires_at": None, "notify_hook": order.notify_hook,
        "properties": {**(properties or {}), **accepted.properties, "key_index": target.key_index},
        "updated_at": now,
    }
