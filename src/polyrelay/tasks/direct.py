"""A call to a task family's upstream that creates no task (Luma's ``file_upload``).

It goes where a submit of the same model would (the key's allow-list, the model's
channels of the family's type, failover on transport errors and 401/403/408/429/5xx),
but nothing is polled, so it settles at once: charged the model's price when one is
set and the upstream accepted (HTTP < 400), free otherwise. Unlike a submit, an
unpriced model is not refused for metered keys: these calls are helpers, which
relays do not bill. Every call that reached an upstream gets a usage-log row.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

from polyrelay.billing.quota import charge, reserve
from polyrelay.errors import RelayError
from polyrelay.relay.auth import check_model_allowed
from polyrelay.store.snapshot import TokenRecord
from polyrelay.tasks.engine import TaskEngine
from polyrelay.tasks.submit import Answer, Order, Send, first_answer, targets


async def call_once(
    engine: TaskEngine, token: TokenRecord, order: Order, send: Send, client_ip: str = ""
) -> tuple[int, Any]:
    """The upstream's (status, body); raises RelayError when no channel answered."""
    started = time.perf_counter()
    check_model_allowed(token, order.model)
    price = engine.relay.snapshot.price_for(order.model)
    cost = charge(token, price.cost(order.usage)) if price is not None else 0
    tried = targets(engine, order)
    reservation = reserve(token, cost)
    answer: Answer | None = None
    error = ""
    try:
        answer = await first_answer(tried, send)
        if answer.status >= 400:
            error = f"upstream HTTP {answer.status}"
        return answer.status, answer.body
    except RelayError as exc:
        error = exc.message
        raise
    finally:
        charged = cost if answer is not None and answer.status < 400 else 0
        reservation.settle(charged)
        channel = answer.channel if answer is not None else None
        engine.relay.writer.record_usage(
            {"request_id": f"{order.family}-{uuid.uuid4().hex}", "created_at": datetime.now(timezone.utc),
             "token_id": token.id, "token_name": token.name, "channel_id": channel.id if channel else None,
             "channel_name": channel.name if channel else "", "family": order.family,
             "endpoint": order.endpoint[:64], "model": order.model,
             "upstream_model": channel.upstream_model(order.model) if channel else "",
             "status_code": answer.status if answer is not None else 502, "usage_source": "request",
             "cost_micros": charged, "price_set": price is not None,
             "attempts": answer.attempts if answer is not None else len(tried),
             "latency_ms": (time.perf_counter() - started) * 1000, "error": error[:2000], "client_ip": client_ip,
             "user_id": token.user.id if token.user is not None else None},
            token.id, charged, reservation,
        )
