"""Submitting a task, the same for every family: price, reserve, send with failover, persist task and charge.

A family supplies only what differs: how to send its request to one channel and key
(``send``) and how to read the upstream's acceptance (``accept``, which raises a
RelayError for a refusal). The reservation is settled to the charge when the task is
stored, and released otherwise, whatever happens in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiohttp

from polyrelay.billing.meter import Usage
from polyrelay.billing.quota import charge, require_price, reserve
from polyrelay.errors import RelayError
from polyrelay.relay.auth import check_model_allowed
from polyrelay.relay.routing import candidates, pick_key
from polyrelay.store.snapshot import ChannelRecord, TokenRecord
from polyrelay.tasks import store
from polyrelay.tasks.base import SUBMITTED, TERMINAL, TaskView
from polyrelay.tasks.engine import TaskEngine, new_task_id

# Statuses that say "this channel or key cannot serve now", so another channel may (as in the pipeline).
FAILOVER_STATUSES = frozenset({401, 403, 408, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})


@dataclass(slots=True)
class Accepted:
    """The upstream took the job: its id for it, and its first state."""

    upstream_id: str
    status: str = SUBMITTED
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Order:
    """What a family asks the engine to run and bill."""

    family: str
    action: str
    model: str  # the billed model name; also the name channels are chosen by
    channel_type: str  # only channels of this type serve the family
    endpoint: str  # for the usage log, e.g. "suno.submit.music"
    request: dict[str, Any]  # stored with the task (leave large inputs out)
    usage: Usage = field(default_factory=lambda: Usage(source="request"))  # billable quantities at submit
    notify_hook: str = ""
    mode: str = ""
    parent: TaskView | None = None  # follow-ups go to the parent's channel and key


Send = Callable[[ChannelRecord, str], Awaitable[tuple[int, Any]]]  # (channel, key) -> (HTTP status, body)
Accept = Callable[[int, Any], Accepted]  # raises RelayError when the upstream refused the job


def channel_and_key(engine: TaskEngine, task: TaskView) -> tuple[ChannelRecord, str]:
    """The channel and key that submitted ``task``: its polls, results and follow-ups must use them."""
    channel = next((c for c in engine.relay.snapshot.channels if c.id == task.channel_id), None)
    if channel is None or not channel.keys:
        raise RelayError(503, f"The channel that ran task {task.id} is not available now.", type="upstream_error",
                         code="channel_unavailable")
    return channel, channel.keys[int(task.properties.get("key_index", 0)) % len(channel.keys)]


def cost_of(engine: TaskEngine, token: TokenRecord, order: Order) -> tuple[int, bool]:
    """(micro-USD, whether a price is set), after the key's allow-list and price checks."""
    check_model_allowed(token, order.model)
    price = engine.relay.snapshot.price_for(order.model)
    require_price(token, order.model, price)
    return (charge(token, price.cost(order.usage)), True) if price is not None else (0, False)


def targets(engine: TaskEngine, order: Order) -> list[tuple[ChannelRecord, int]]:
    """(channel, key index) pairs to try in order: the parent's own, else the model's channels of the type."""
    if order.parent is not None:
        channel, _ = channel_and_key(engine, order.parent)
        return [(channel, int(order.parent.properties.get("key_index", 0)) % len(channel.keys))]
    channels = [c for c in candidates(engine.relay.snapshot, order.model) if c.type == order.channel_type]
    if not channels:
        raise RelayError(503, f"No channel serves '{order.model}'.", type="upstream_error", code="no_channel")
    return [(c, pick_key(c)) for c in channels]


async def submit(
    engine: TaskEngine, token: TokenRecord, order: Order, send: Send, accept: Accept, client_ip: str = ""
) -> TaskView:
    """Run ``order`` on the first channel that answers; the stored task, charged in the same transaction."""
    started = time.perf_counter()
    cost, priced = cost_of(engine, token, order)
    tried = targets(engine, order)
    reservation = reserve(token, cost)
    charged = 0
    try:
        answer = await first_answer(tried, send)
        accepted = accept(answer.status, answer.body)
        task = await engine.create(*_records(engine, token, order, accepted, answer.channel, answer.key_index, cost,
                                             priced, answer.attempts, started, client_ip))
        charged = cost
        return task
    finally:
        reservation.settle(charged)


@dataclass(slots=True)
class Answer:
    """The first upstream answer that was not a reason to try the next channel."""

    channel: ChannelRecord
    key_index: int
    attempts: int
    status: int
    body: Any


async def first_answer(tried: list[tuple[ChannelRecord, int]], send: Send) -> Answer:
    """Send to each (channel, key) in turn, past transport errors and 401/403/408/429/5xx; 502 when none answered."""
    last = "no channel tried"
    for attempt, (channel, key_index) in enumerate(tried, 1):
        try:
            status, body = await send(channel, channel.keys[key_index])
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last = f"channel '{channel.name}' is unreachable ({type(exc).__name__})"
            continue
        if status in FAILOVER_STATUSES:
            last = f"channel '{channel.name}' answered HTTP {status}"
            continue
        return Answer(channel, key_index, attempt, status, body)
    raise RelayError(502, f"No channel accepted the task: {last}.", type="upstream_error", code="upstream_failed")


def _records(
    engine: TaskEngine, token: TokenRecord, order: Order, accepted: Accepted, channel: ChannelRecord,
    key_index: int, cost: int, priced: bool, attempts: int, started: float, client_ip: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    now = store.now_ms()
    task_id = new_task_id()
    # Settlement happens only in the poller's or finish()'s transitions, so an upstream that says
    # "already finished" at submit is confirmed by the first poll rather than stored terminal.
    status = SUBMITTED if accepted.status in TERMINAL else accepted.status
    row = {
        "id": task_id, "token_id": token.id, "token_name": token.name, "family": order.family,
        "action": order.action, "model": order.model, "mode": order.mode,
        "parent_id": order.parent.id if order.parent else None, "channel_id": channel.id,
        "upstream_id": accepted.upstream_id, "status": status, "progress": "0%", "request": order.request,
        "result": accepted.result, "fail_reason": "", "cost_micros": cost, "settlement": "held",
        "submit_time": now, "start_time": None, "finish_time": None,
        "next_poll_at": now + int(engine.settings.poll_interval_s * 1000),
        "poll_count": 0, "lease_owner": None, "lease_expires_at": None, "notify_hook": order.notify_hook,
        "properties": {"key_index": key_index}, "updated_at": now,
    }
    charge_log = {
        "request_id": f"task-{task_id}", "created_at": datetime.now(timezone.utc), "token_id": token.id,
        "token_name": token.name, "channel_id": channel.id, "channel_name": channel.name, "family": order.family,
        "endpoint": order.endpoint[:64], "model": order.model, "upstream_model": channel.upstream_model(order.model),
        "status_code": 200, "images": order.usage.images, "seconds": order.usage.seconds,
        "usage_source": "request", "price_set": priced, "attempts": attempts,
        "latency_ms": (time.perf_counter() - started) * 1000, "client_ip": client_ip,
    }
    return row, charge_log
