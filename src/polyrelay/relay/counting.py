"""Token counting endpoints (Claude's ``count_tokens``, Gemini's ``countTokens``): free, and answered
natively where a channel can count, else estimated here.

A count is never charged and needs no price (``Call.free``). When a channel that counts
natively serves the model for the key, the call is relayed like any other (admitted,
routed, logged at cost 0); when only channels of other types would serve the dialect's
calls for that model, the count is a local estimate (``estimate``), with no upstream
call and no usage row; when nothing serves the model, admission's 404 answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response

from polyrelay.providers.base import Call
from polyrelay.relay.admission import channel_groups
from polyrelay.relay.auth import check_model_allowed
from polyrelay.relay.pipeline import Relay
from polyrelay.store.snapshot import TokenRecord


async def count_tokens(relay: Relay, call: Call, token: TokenRecord, served_kind: str,
                       estimate: Callable[[Call], dict[str, Any]]) -> Response:
    """The count for ``call`` (kind: the native count), whose dialect's other calls are of ``served_kind``."""
    check_model_allowed(token, call.model)
    snapshot = relay.snapshot
    if channel_groups(snapshot, token, call.kind, call.model) or not channel_groups(
            snapshot, token, served_kind, call.model):
        return await relay.handle(call, token)
    # BPE on a long prompt (and the tokenizer's first load) would stall the loop.
    counted = await asyncio.to_thread(estimate, call)
    return Response(orjson.dumps(counted), media_type="application/json", headers={"x-request-id": call.request_id})
