"""The Midjourney family (midjourney-proxy protocol): submit, query, act on tasks.

Callers see polyrelay task ids and only their own key's tasks. A submit is priced by
its action (``mj_imagine``, ``mj_upscale``, ... see ``ACTION_MODELS``) times the speed
mode's multiplier, reserved on the key, and charged when the upstream accepts it;
the task engine refunds it if the task fails, is cancelled or times out.
Errors come as midjourney-proxy's ``{code, description}``: 3 not found, 4 the request
is at fault (with HTTP 400/401/403/413/429 as the case is), 9 gateway/upstream failure.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polyrelay.api import midjourney_images as images
from polyrelay.api.openai import read_body
from polyrelay.billing.meter import Usage
from polyrelay.billing.quota import require_price, reserve
from polyrelay.errors import RelayError
from polyrelay.providers import midjourney as upstream
from polyrelay.providers.base import Target
from polyrelay.relay.fetch import FetchError
from polyrelay.relay.auth import authenticate, check_model_allowed
from polyrelay.relay.routing import candidates, pick_key
from polyrelay.store.snapshot import ChannelRecord, TokenRecord
from polyrelay.tasks import queries, store
from polyrelay.tasks.base import (CANCEL, IN_PROGRESS, NOT_START, RANK, SUBMITTED, SUCCESS, TERMINAL,
                                  TaskView)
from polyrelay.tasks.engine import TaskEngine, new_task_id
from polyrelay.tasks.notify import valid_hook

FAMILY = "midjourney"
OK, NOT_FOUND, VALIDATION, FAILURE, EXISTED, IN_QUEUE, QUEUE_FULL = 1, 3, 4, 9, 21, 22, 23
_ACCEPTED = frozenset({OK, EXISTED, IN_QUEUE})  # new-api passes 21/22 to callers as 1
_FAILOVER_STATUSES = frozenset({401, 403, 408, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})
_KEY_STATUSES = frozenset({401, 403, 429})  # the key itself is refused: rest it
_SPEED_FLAGS = re.compile(r"\s*--(?:fast|relax|turbo)\b", re.IGNORECASE)
_SIMPLE_CHANGE = re.compile(r"^\s*(\S+)\s+(?:([UV])([1-4])|(R))\s*$", re.IGNORECASE)
# /mj/task/queue: tasks an upstream holds in its queue or runs (a MODAL task waits for the caller).
_QUEUED = [NOT_START, SUBMITTED, IN_PROGRESS]
_MODES = {"mj-fast": "fast", "mj-relax": "relax", "mj-turbo": "turbo", "fast": "fast", "relax": "relax",
          "turbo": "turbo"}
# Large inputs are sent upstream but not stored with the task.
_UNSTORED = frozenset({"base64Array", "base64", "maskBase64", "sourceBase64", "targetBase64", "image"})

# Billable model name per action, as in new-api.
ACTION_MODELS = {
    "IMAGINE": "mj_imagine", "UPSCALE": "mj_upscale", "VARIATION": "mj_variation", "REROLL": "mj_reroll",
    "DESCRIBE": "mj_describe", "BLEND": "mj_blend", "ZOOM": "mj_zoom", "PAN": "mj_pan", "SHORTEN": "mj_shorten",
    "SWAP_FACE": "swap_face", "CUSTOM_ZOOM": "mj_custom_zoom", "INPAINT": "mj_inpaint",
    "LOW_VARIATION": "mj_low_variation", "HIGH_VARIATION": "mj_high_variation", "MODAL": "mj_modal",
    "VIDEO": "mj_video", "ACTION": "mj_action",
}
# customId fragment -> action, most specific first (new-api's mapping).
_CUSTOM_ID_ACTIONS = (
    ("low_variation", "LOW_VARIATION"), ("high_variation", "HIGH_VARIATION"), ("variation", "VARIATION"),
    ("upsample", "UPSCALE"), ("reroll", "REROLL"), ("CustomZoom", "CUSTOM_ZOOM"), ("Outpaint", "ZOOM"),
    ("Inpaint", "INPAINT"), ("pan_", "PAN"),
)


class MjError(Exception):
    def __init__(self, status: int, code: int, description: str, properties: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status, self.code, self.description, self.properties = status, code, description, properties


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(error: MjError) -> Response:
    body: dict[str, Any] = {"code": error.code, "description": error.description, "result": None}
    if error.properties is not None:
        body["properties"] = error.properties
    return _json(body, error.status)


def _from_relay(error: RelayError) -> MjError:
    code = NOT_FOUND if error.status == 404 else VALIDATION if error.status < 500 else FAILURE
    return MjError(error.status, code, error.message)


def caller_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, key = authorization.partition(" ")
        return key.strip() if scheme.lower() == "bearer" else authorization.strip()
    return request.headers.get("mj-api-secret")


def action_for_custom_id(custom_id: str) -> str:
    for fragment, action in _CUSTOM_ID_ACTIONS:
        if fragment in custom_id:
            return action
    return "ACTION"


def _invalid(description: str) -> MjError:
    return MjError(400, VALIDATION, description)


class _Context:
    """One caller request: who it is, which speed mode, the engine."""

    def __init__(self, request: Request) -> None:
        mode = request.path_params.get("mode")
        if mode is not None and mode not in _MODES:
            raise MjError(404, NOT_FOUND, f"Invalid URL ({request.method} {request.url.path}).")
        self.request = request
        self.mode = _MODES.get(mode or "mj-fast", "fast")
        self.tasks: TaskEngine = request.app.state.tasks
        self.token: TokenRecord = authenticate(self.tasks.relay.snapshot, caller_key(request))

    async def payload(self) -> dict[str, Any]:
        body = await read_body(self.request)
        try:
            payload = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise _invalid(f"The request body is not valid JSON: {exc}.") from None
        if not isinstance(payload, dict):
            raise _invalid("The request body must be a JSON object.")
        return payload

    async def own_task(self, task_id: Any) -> TaskView:
        """The caller's own task, else code 3 (a foreign task looks exactly like a missing one)."""
        task = await self.tasks.get(str(task_id)) if task_id else None
        if task is None or task.family != FAMILY or task.token_id != self.token.id:
            raise MjError(404, NOT_FOUND, f"Task {task_id} does not exist.")
        return task


def endpoint(handler: Callable[[_Context], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(_Context(request))
        except RelayError as error:
            return _error(_from_relay(error))
        except MjError as error:
            return _error(error)

    return run


# ---- submits ---------------------------------------------------------------------------------------

def _check_banned(ctx: _Context, prompt: str) -> None:
    lowered = prompt.lower()
    for word in ctx.request.app.state.settings.midjourney.banned_words:
        if word and word.lower() in lowered:
            raise MjError(200, 24, "The prompt may contain a banned word.", {"promptEn": prompt, "bannedWord": word})


def _clean_prompt(ctx: _Context, payload: dict[str, Any]) -> None:
    """Operator option ``strip_speed_flags``: the speed is the route's (/mj-fast...), not the prompt's."""
    prompt = payload.get("prompt")
    if isinstance(prompt, str) and ctx.request.app.state.settings.midjourney.strip_speed_flags:
        payload["prompt"] = _SPEED_FLAGS.sub("", prompt).strip()


def _require_prompt(ctx: _Context, payload: dict[str, Any]) -> None:
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("prompt must not be blank.")
    _clean_prompt(ctx, payload)
    _check_banned(ctx, payload["prompt"])


def image_base(ctx: _Context) -> str:
    """Where forwarded image links point ("" when forwarding is off)."""
    settings = ctx.request.app.state.settings.midjourney
    if not settings.forward_images:
        return ""
    return (settings.public_base_url or str(ctx.request.base_url)).rstrip("/")


def _cost(ctx: _Context, model: str) -> tuple[int, bool]:
    snapshot = ctx.tasks.relay.snapshot
    check_model_allowed(ctx.token, model)
    price = snapshot.price_for(model)
    require_price(ctx.token, model, price)
    if price is None:
        return 0, False
    multiplier = ctx.request.app.state.settings.midjourney.mode_multipliers.get(ctx.mode, 1.0)
    return round(price.cost(Usage(images=1, source="request")) * multiplier), True


def _channels(ctx: _Context, model: str, parent: TaskView | None) -> list[ChannelRecord]:
    snapshot = ctx.tasks.relay.snapshot
    if parent is not None:
        channel = next((c for c in snapshot.channels if c.id == parent.channel_id), None)
        if channel is None:
            raise MjError(503, FAILURE, f"The channel that made task {parent.id} is not available now.")
        return [channel]
    found = [c for c in candidates(snapshot, model) if c.type == upstream.TYPE]
    if not found:
        raise MjError(503, FAILURE, f"No channel serves '{model}'.")
    return found


async def _submit(
    ctx: _Context, path: str, action: str, payload: dict[str, Any], parent: TaskView | None = None
) -> Response:
    """Reserve, send to the first channel that answers, persist task and charge, answer code 1."""
    started = time.perf_counter()
    hook = payload.get("notifyHook") or ""
    if hook and not (isinstance(hook, str) and valid_hook(hook)):
        raise _invalid("notifyHook must be an http(s) URL.")
    model = ACTION_MODELS[action]
    cost, priced = _cost(ctx, model)
    channels = _channels(ctx, model, parent)
    # We poll and call back ourselves; "task_id" is some relays' spelling of taskId.
    body = {k: v for k, v in payload.items() if k not in ("notifyHook", "task_id")}
    if parent is not None:
        body["taskId"] = parent.upstream_id
    reservation = reserve(ctx.token, cost)
    charged = 0
    try:
        try:
            status, reply, channel, key_index, attempts = await _send(ctx, channels, path, body, model)
        except MjError as error:
            _log_refused(ctx, path, model, None, error.status, error.description, len(channels), started)
            raise
        if not isinstance(reply, dict):
            _log_refused(ctx, path, model, channel, 502, f"HTTP {status} without a result", attempts, started)
            raise MjError(502, FAILURE, f"Channel '{channel.name}' answered HTTP {status} without a result.")
        code = reply.get("code")
        if status >= 400 or code not in _ACCEPTED or not reply.get("result"):
            answer = status if status >= 400 else 200
            _log_refused(ctx, path, model, channel, answer,
                         f"upstream code {code}: {reply.get('description', '')}", attempts, started)
            return _json({"code": code if isinstance(code, int) else FAILURE,
                          "description": reply.get("description", ""), "result": None,
                          "properties": reply.get("properties") or {}}, answer)
        properties = reply.get("properties") or {}
        initial = properties.get("status") if properties.get("status") in RANK else SUBMITTED
        now = store.now_ms()
        task_id = new_task_id()
        row = {
            "id": task_id, "token_id": ctx.token.id, "token_name": ctx.token.name, "family": FAMILY,
            "action": action, "model": model, "mode": ctx.mode, "parent_id": parent.id if parent else None,
            "channel_id": channel.id, "upstream_id": str(reply["result"]), "status": initial,
            "progress": "0%", "request": {k: v for k, v in payload.items() if k not in _UNSTORED},
            "result": {}, "fail_reason": "", "cost_micros": cost, "settlement": "held", "submit_time": now,
            "start_time": None, "finish_time": None,
            "next_poll_at": None if initial in TERMINAL else now + int(ctx.tasks.settings.poll_interval_s * 1000),
            "poll_count": 0, "lease_owner": None, "lease_expires_at": None, "notify_hook": hook,
            "properties": {"key_index": key_index, "upstream_code": code, "image_base": image_base(ctx)},
            "updated_at": now,
        }
        charge_log = {
            "request_id": f"task-{task_id}", "created_at": datetime.now(timezone.utc), "token_id": ctx.token.id,
            "token_name": ctx.token.name, "channel_id": channel.id, "channel_name": channel.name,
            "family": FAMILY, "endpoint": path.removeprefix("/").replace("/", "."), "model": model, "upstream_model": model,
            "status_code": 200, "images": 1, "usage_source": "request", "price_set": priced,
            "attempts": attempts, "latency_ms": (time.perf_counter() - started) * 1000,
            "client_ip": ctx.request.client.host if ctx.request.client else "",
        }
        await ctx.tasks.create(row, charge_log)
        charged = cost
        return _json({"code": OK, "description": reply.get("description") or "Submit success",
                      "result": task_id, "properties": {k: v for k, v in properties.items()
                                                        if k not in ("discordInstanceId", "discordChannelId")}})
    finally:
        reservation.settle(charged)


async def _send(
    ctx: _Context, channels: list[ChannelRecord], path: str, body: dict[str, Any], model: str
) -> tuple[int, Any, ChannelRecord, int, int]:
    """Fail over on transport errors, 401/403/429, 5xx and code 23 (queue full); any other answer is final.

    Every attempt feeds the channel's health like the sync relay path does: failures count
    towards its cooldown; an answer that blames the request (codes 4, 24...) counts as healthy.
    """
    health = ctx.tasks.relay.health
    last = "no channel tried"
    queue_full: tuple[int, Any, ChannelRecord, int, int] | None = None
    for attempt, channel in enumerate(channels, 1):
        key_index = pick_key(channel)
        target = Target(channel=channel, key_index=key_index, key=channel.keys[key_index], upstream_model=model)
        try:
            status, reply = await upstream.call(ctx.tasks.session, channel, target.key, "POST", path, body, ctx.mode)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last = f"channel '{channel.name}' is unreachable ({type(exc).__name__})"
            health.failed(target, last, rest_key=False)
            continue
        if status in _FAILOVER_STATUSES:
            last = f"channel '{channel.name}' answered HTTP {status}"
            health.failed(target, last, rest_key=status in _KEY_STATUSES)
            continue
        if isinstance(reply, dict) and reply.get("code") == QUEUE_FULL:
            last = f"channel '{channel.name}' answered code 23 ({reply.get('description', '')})"
            health.failed(target, last, rest_key=False)
            queue_full = (status, reply, channel, key_index, attempt)
            continue
        health.succeeded(channel)
        return status, reply, channel, key_index, attempt
    if queue_full is not None:
        return queue_full  # every channel's queue is full: the caller gets code 23 as the upstream said
    raise MjError(502, FAILURE, f"No channel accepted the task: {last}.")


def _log_refused(ctx: _Context, path: str, model: str, channel: ChannelRecord | None, status: int, error: str,
                 attempts: int, started: float) -> None:
    """A usage-log row, uncharged, for a submit no upstream accepted."""
    ctx.tasks.relay.writer.record_usage(
        {"request_id": f"mj-{uuid.uuid4().hex}", "created_at": datetime.now(timezone.utc), "token_id": ctx.token.id,
         "token_name": ctx.token.name, "channel_id": channel.id if channel else None,
         "channel_name": channel.name if channel else "", "family": FAMILY,
         "endpoint": path.removeprefix("/").replace("/", "."), "model": model, "upstream_model": model,
         "status_code": status, "usage_source": "", "cost_micros": 0, "attempts": attempts,
         "latency_ms": (time.perf_counter() - started) * 1000, "error": error[:2000],
         "client_ip": ctx.request.client.host if ctx.request.client else ""},
        ctx.token.id, 0,
    )


@endpoint
async def imagine(ctx: _Context) -> Response:
    payload = await ctx.payload()
    _require_prompt(ctx, payload)
    return await _submit(ctx, "/mj/submit/imagine", "IMAGINE", payload)


@endpoint
async def shorten(ctx: _Context) -> Response:
    payload = await ctx.payload()
    _require_prompt(ctx, payload)
    return await _submit(ctx, "/mj/submit/shorten", "SHORTEN", payload)


@endpoint
async def blend(ctx: _Context) -> Response:
    payload = await ctx.payload()
    images = payload.get("base64Array")
    if not isinstance(images, list) or not 2 <= len(images) <= 5:
        raise _invalid("base64Array must hold 2 to 5 images.")
    return await _submit(ctx, "/mj/submit/blend", "BLEND", payload)


@endpoint
async def describe(ctx: _Context) -> Response:
    payload = await ctx.payload()
    if not payload.get("base64") and not payload.get("link"):
        raise _invalid("base64 or link is required.")
    return await _submit(ctx, "/mj/submit/describe", "DESCRIBE", payload)


@endpoint
async def swap_face(ctx: _Context) -> Response:
    payload = await ctx.payload()
    if not (payload.get("sourceBase64") or payload.get("sourceUrl")) or not (
        payload.get("targetBase64") or payload.get("targetUrl")
    ):
        raise _invalid("sourceBase64 and targetBase64 are required.")
    return await _submit(ctx, "/mj/insight-face/swap", "SWAP_FACE", payload)


@endpoint
async def action(ctx: _Context) -> Response:
    payload = await ctx.payload()
    custom_id = payload.get("customId")
    if not payload.get("taskId") or not isinstance(custom_id, str) or not custom_id:
        raise _invalid("taskId and customId are required.")
    parent = await ctx.own_task(payload["taskId"])
    return await _submit(ctx, "/mj/submit/action", action_for_custom_id(custom_id), payload, parent)


@endpoint
async def modal(ctx: _Context) -> Response:
    payload = await ctx.payload()
    if not payload.get("taskId"):
        raise _invalid("taskId is required.")
    if isinstance(payload.get("prompt"), str) and payload["prompt"]:
        _clean_prompt(ctx, payload)
        _check_banned(ctx, payload["prompt"])
    parent = await ctx.own_task(payload["taskId"])
    return await _submit(ctx, "/mj/submit/modal", "MODAL", payload, parent)


@endpoint
async def video(ctx: _Context) -> Response:
    """``{prompt, motion low|high, image}``; ``{action: "extend", index 0..3, taskId | task_id}`` extends one."""
    payload = await ctx.payload()
    parent_id = payload.get("taskId") or payload.get("task_id")
    payload.pop("task_id", None)
    if isinstance(payload.get("prompt"), str) and payload["prompt"]:
        _clean_prompt(ctx, payload)
        _check_banned(ctx, payload["prompt"])
    motion = payload.get("motion")
    if motion is not None and motion not in ("low", "high"):
        raise _invalid("motion must be low or high.")
    extend = str(payload.get("action") or "").lower() == "extend"
    if extend or parent_id:
        index = payload.get("index")
        if not parent_id:
            raise _invalid("taskId is required to extend a video.")
        if extend and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 3):
            raise _invalid("index must be 0..3.")
        payload["taskId"] = str(parent_id)
        parent = await ctx.own_task(parent_id)
        return await _submit(ctx, "/mj/submit/video", "VIDEO", payload, parent)
    if motion is None:
        raise _invalid("motion (low or high) is required.")
    if not payload.get("image") and not (isinstance(payload.get("prompt"), str) and payload["prompt"].strip()):
        raise _invalid("image (the first frame) or prompt is required.")
    return await _submit(ctx, "/mj/submit/video", "VIDEO", payload)


_CHANGE_BUTTONS = {"UPSCALE": "MJ::JOB::upsample::{index}::", "VARIATION": "MJ::JOB::variation::{index}::",
                   "REROLL": "MJ::JOB::reroll::"}


async def _change(ctx: _Context, task_id: Any, change: Any, index: Any, extra: dict[str, Any]) -> Response:
    """The legacy change: the parent's matching button as an action (plus proxies), else ``/mj/submit/change``."""
    if not task_id:
        raise _invalid("taskId must not be blank.")
    change = str(change or "").upper()
    if change not in _CHANGE_BUTTONS:
        raise _invalid("action must be UPSCALE, VARIATION or REROLL.")
    if change != "REROLL" and (isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 4):
        raise _invalid("index must be 1..4.")
    parent = await ctx.own_task(task_id)
    if parent.status != SUCCESS:
        raise _invalid(f"Task {parent.id} has not succeeded ({parent.status}).")
    prefix = _CHANGE_BUTTONS[change].format(index=index)
    buttons = (parent.result or {}).get("buttons") or []
    custom_id = next((b.get("customId") for b in buttons
                      if isinstance(b, dict) and str(b.get("customId", "")).startswith(prefix)), None)
    common = {k: extra[k] for k in ("notifyHook", "state") if k in extra}
    if custom_id:
        return await _submit(ctx, "/mj/submit/action", change, {"taskId": parent.id, "customId": custom_id, **common},
                             parent)
    body = {"taskId": parent.id, "action": change, **({"index": index} if change != "REROLL" else {}), **common}
    return await _submit(ctx, "/mj/submit/change", change, body, parent)


@endpoint
async def change(ctx: _Context) -> Response:
    payload = await ctx.payload()
    return await _change(ctx, payload.get("taskId"), payload.get("action"), payload.get("index"), payload)


@endpoint
async def simple_change(ctx: _Context) -> Response:
    """``{content: "<task id> U2"}`` (U1..U4, V1..V4 or R)."""
    payload = await ctx.payload()
    match = _SIMPLE_CHANGE.match(str(payload.get("content") or ""))
    if match is None:
        raise _invalid("content must be '<task id> U1..U4 | V1..V4 | R'.")
    task_id, letter, digit, reroll = match.groups()
    if reroll:
        return await _change(ctx, task_id, "REROLL", None, payload)
    return await _change(ctx, task_id, "UPSCALE" if letter.upper() == "U" else "VARIATION", int(digit), payload)


# ---- queries ---------------------------------------------------------------------------------------

def _render(ctx: _Context, task: TaskView) -> dict[str, Any]:
    return ctx.tasks.adaptors[FAMILY].render(task, image_base(ctx))  # type: ignore[call-arg]


@endpoint
async def fetch(ctx: _Context) -> Response:
    task = await ctx.own_task(ctx.request.path_params["task_id"])
    return _json(_render(ctx, task))


@endpoint
async def list_by_condition(ctx: _Context) -> Response:
    payload = await ctx.payload()
    ids = payload.get("ids")
    if ids is None:
        return _json([])  # midjourney-proxy answers [] when no ids are given
    if not isinstance(ids, list):
        raise _invalid("ids must be a list of task ids.")
    ids = [str(i) for i in ids][:1000]
    found = {t.id: t for t in await ctx.tasks.list_for_token(FAMILY, ctx.token.id, ids, limit=len(ids) or 1)}
    return _json([_render(ctx, found[i]) for i in ids if i in found])


@endpoint
async def list_recent(ctx: _Context) -> Response:
    return _json([_render(ctx, t) for t in await ctx.tasks.list_for_token(FAMILY, ctx.token.id, None, 100)])


@endpoint
async def queue(ctx: _Context) -> Response:
    """The key's tasks its upstreams hold queued or running, oldest first (midjourney-proxy's /task/queue)."""
    found = await ctx.tasks.run_db(queries.queued, ctx.tasks.db, FAMILY, ctx.token.id, _QUEUED)
    return _json([_render(ctx, t) for t in found])


_TEXT_FIELDS = ("prompt", "promptEn", "description", "state")


def _page_number(payload: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = payload.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{name} must be an integer in {low}..{high}.")
    return value


@endpoint
async def query(ctx: _Context) -> Response:
    """Paged query, answered as a Spring ``Page`` (trueai's / plus's ``/mj/task/query``)."""
    payload = await ctx.payload()
    number = _page_number(payload, "pageNumber", 0, 0, 1_000_000)
    size = _page_number(payload, "pageSize", 10, 1, 100)
    field, _, direction = str(payload.get("sort") or "id,desc").partition(",")
    descending = direction.strip().lower() != "asc"
    statuses = [str(s) for s in payload.get("statusSet") or [] if s] or None
    if payload.get("status"):
        statuses = [str(payload["status"])]
    ids = payload.get("ids")
    spec = queries.TaskQuery(
        family=FAMILY, token_id=ctx.token.id, offset=number * size, limit=size, sort=field.strip() or "id",
        descending=descending, ids=[str(i) for i in ids][:1000] if isinstance(ids, list) and ids else None,
        actions=[str(payload["action"]).upper()] if payload.get("action") else None, statuses=statuses,
        texts={name: str(payload[name]) for name in _TEXT_FIELDS if payload.get(name)},
    )
    adaptor = ctx.tasks.adaptors[FAMILY]
    found, total = await ctx.tasks.run_db(queries.page, ctx.tasks.db, spec,
                                          lambda task, name: adaptor.render(task).get(name))
    sort = {"sorted": True, "unsorted": False, "empty": False}
    pages = (total + size - 1) // size
    return _json({
        "content": [_render(ctx, t) for t in found],
        "pageable": {"sort": sort, "pageNumber": number, "pageSize": size, "offset": number * size,
                     "paged": True, "unpaged": False},
        "totalPages": pages, "totalElements": total, "last": number >= pages - 1, "size": size, "number": number,
        "sort": sort, "numberOfElements": len(found), "first": number == 0, "empty": not found,
    })


async def image(request: Request) -> Response:
    """``GET /mj/image/{id}``: the task's result image through polyrelay (no key: links go into <img> tags)."""
    task_id = request.path_params["task_id"]
    if request.path_params.get("mode") is not None and request.path_params["mode"] not in _MODES:
        return await not_found(request)
    tasks: TaskEngine = request.app.state.tasks
    task = await tasks.get(task_id)
    if task is None or task.family != FAMILY:
        return _error(MjError(404, NOT_FOUND, f"Task {task_id} does not exist."))
    channel = next((c for c in tasks.relay.snapshot.channels if c.id == task.channel_id), None)
    try:
        response = await images.serve(request, task, channel.base_url if channel else None)
    except FetchError as exc:
        return _error(MjError(502, FAILURE, f"The image of task {task_id} could not be fetched: {exc}."))
    if response is None:
        return _error(MjError(404, NOT_FOUND, f"Task {task_id} has no image yet."))
    return response


@endpoint
async def cancel(ctx: _Context) -> Response:
    task = await ctx.own_task(ctx.request.path_params["task_id"])
    if task.finished:
        raise _invalid(f"Task {task.id} has already finished ({task.status}).")
    channel = next((c for c in ctx.tasks.relay.snapshot.channels if c.id == task.channel_id), None)
    if channel is not None:
        try:  # best effort: midjourney-proxy forks without cancel answer 404, the task still ends here
            key = channel.keys[int(task.properties.get("key_index", 0)) % len(channel.keys)]
            await upstream.call(ctx.tasks.session, channel, key, "POST", f"/mj/task/{task.upstream_id}/cancel",
                                {}, task.mode, timeout_s=10)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
    if await ctx.tasks.finish(task, CANCEL, "cancelled by the caller") is None:
        raise _invalid(f"Task {task.id} has already finished.")
    return _json({"code": OK, "description": "Cancelled", "result": task.id})


@endpoint
async def image_seed(ctx: _Context) -> Response:
    task = await ctx.own_task(ctx.request.path_params["task_id"])
    channel = next((c for c in ctx.tasks.relay.snapshot.channels if c.id == task.channel_id), None)
    if channel is None:
        raise MjError(503, FAILURE, f"The channel that made task {task.id} is not available now.")
    key = channel.keys[int(task.properties.get("key_index", 0)) % len(channel.keys)]
    try:
        status, reply = await upstream.call(
            ctx.tasks.session, channel, key, "GET", f"/mj/task/{task.upstream_id}/image-seed", None, task.mode
        )
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise MjError(502, FAILURE, f"Channel '{channel.name}' is unreachable ({type(exc).__name__}).") from None
    if not isinstance(reply, dict):
        raise MjError(502, FAILURE, f"Channel '{channel.name}' answered HTTP {status} without a result.")
    return _json({"code": reply.get("code", FAILURE), "description": reply.get("description", ""),
                  "result": reply.get("result")}, 200 if status < 500 else 502)


async def not_found(request: Request) -> Response:
    return _error(MjError(404, NOT_FOUND, f"Invalid URL ({request.method} {request.url.path})."))


def routes() -> list[BaseRoute]:
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/mj/submit/imagine", imagine, "POST"),
        ("/mj/submit/action", action, "POST"),
        ("/mj/submit/blend", blend, "POST"),
        ("/mj/submit/describe", describe, "POST"),
        ("/mj/submit/modal", modal, "POST"),
        ("/mj/submit/shorten", shorten, "POST"),
        ("/mj/submit/video", video, "POST"),
        ("/mj/submit/change", change, "POST"),
        ("/mj/submit/simple-change", simple_change, "POST"),
        ("/mj/insight-face/swap", swap_face, "POST"),
        ("/mj/task/{task_id}/fetch", fetch, "GET"),
        ("/mj/task/list-by-condition", list_by_condition, "POST"),
        ("/mj/task/list-by-ids", list_by_condition, "POST"),
        ("/mj/task/list", list_recent, "GET"),
        ("/mj/task/queue", queue, "GET"),
        ("/mj/task/query", query, "POST"),
        ("/mj/image/{task_id}", image, "GET"),
        ("/mj/task/{task_id}/cancel", cancel, "POST"),
        ("/mj/task/{task_id}/image-seed", image_seed, "GET"),
    ]
    result: list[BaseRoute] = []
    for prefix in ("", "/{mode}"):
        result.extend(Route(prefix + path, handler, methods=[method]) for path, handler, method in table)
    return result
