"""``GET /readyz``: may a balancer send this node traffic? Liveness (``/healthz``) is separate.

Ready (200) when the database answers and, with ``redis_url`` set, Redis answers too. A node
whose Redis is away still serves, with per-process rate limits, but answers 503 ("degraded")
so a balancer prefers nodes whose limits are shared; a balancer that finds no ready node should
fall back to live ones (docs/configuration.md). The probe result is cached for a second, and
concurrent callers share one probe, so polling it costs nothing measurable.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from polyrelay.store.db import ping

_CACHE_S = 1.0
_TIMEOUT_S = 2.0


class Readiness:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._at = -_CACHE_S
        self._answer: tuple[int, dict[str, Any]] = (503, {})
        # Its own thread: a probe must not queue behind usage flushes or reports, and a hung
        # database holds only this thread (later probes time out: 503).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyrelay-readyz")

    async def respond(self, request: Request) -> Response:
        if time.monotonic() - self._at >= _CACHE_S:
            async with self._lock:
                if time.monotonic() - self._at >= _CACHE_S:
                    self._answer = await self._probe(request)
                    self._at = time.monotonic()
        status, body = self._answer
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    async def _probe(self, request: Request) -> tuple[int, dict[str, Any]]:
        state = request.app.state
        limiter = state.limiter
        database, redis = await asyncio.gather(self._database(state.db), limiter.check())
        redis_state = "not_configured" if redis is None else "ok" if redis else "down"
        ready = database and redis is not False
        body = {
            "status": "ready" if ready else "degraded" if database else "unavailable",
            "database": "ok" if database else "down",
            "redis": redis_state,
            "limits_shared": limiter.shared,
        }
        return (200 if ready else 503), body

    async def _database(self, engine: Engine) -> bool:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                await loop.run_in_executor(self._executor, ping, engine)
        except Exception:
            return False
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False)
