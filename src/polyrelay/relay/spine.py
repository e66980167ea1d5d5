"""What the task engine and the task families need of the relay: its records and its shared services.

The ``Relay`` is one such spine; the engine is given it as this narrower type, so task
code can reach the snapshot, admission's rate limiter, settlement, channel health and the
file store, but not the synchronous hot path.
"""

from __future__ import annotations

from typing import Protocol

from polyrelay.billing.budget import Budgets
from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.relay.routing import Health
from polyrelay.relay.settlement import Settler
from polyrelay.store.files import FileStore
from polyrelay.store.snapshot import Snapshot


class Spine(Protocol):
    snapshot: Snapshot  # replaced whole when the records change: read it anew each time
    limiter: RateLimiter
    budgets: Budgets
    settler: Settler
    health: Health
    files: FileStore | None
