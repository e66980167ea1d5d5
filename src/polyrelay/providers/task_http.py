"""One JSON request to a task upstream, for the task families' adaptors (submit and poll).

Returns the status and the parsed JSON (None when the body is empty or not JSON);
transport errors and timeouts propagate, so the submit path fails over and the
poller retries.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from polyrelay.store.snapshot import ChannelRecord
from polyrelay.telemetry import tracing

POLL_TIMEOUT_S = 30.0  # a status query that takes longer is retried next round


async def request_json(
    session: aiohttp.ClientSession,
    channel: ChannelRecord,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> tuple[int, Any]:
    headers = {"accept": "application/json", **headers}
    if isinstance(body, dict):
        body = orjson.dumps(body)
        headers.setdefault("content-type", "application/json")
    tracing.inject(headers)  # inside a submit's attempt only
    timeout = aiohttp.ClientTimeout(total=timeout_s or channel.timeout_s, sock_connect=channel.connect_timeout_s)
    async with session.request(method, url, headers=headers, data=body, timeout=timeout) as response:
        raw = await response.read()
        try:
            return response.status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return response.status, None


def poll_timeout(channel: ChannelRecord) -> float:
    return min(channel.timeout_s, POLL_TIMEOUT_S)
