"""Midjourney submits: prompt checks, pricing and reservation, channel failover, and each /mj/submit/* action."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import aiohttp
from starlette.responses import Response

from polyrelay.api.common import client_ip
from polyrelay.api.midjourney_context import (
    ACTION_MODELS,
    EXISTED,
    FAILURE,
    FAMILY,
    IN_QUEUE,
    MjContext,
    MjError,
    OK,
    QUEUE_FULL,
    action_for_custom_id,
    endpoint,
    invalid,
    mj_json,
)
from polyrelay.billing.meter import Usage
from polyrelay.billing.quota import charge, require_price, reserve
from polyrelay.providers import midjourney as upstream
from polyrelay.providers.base import Target
from polyrelay.relay.auth import check_model_allowed
from polyrelay.relay.routing import candidates, pick_key
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.tasks import store
from polyrelay.tasks.base import RANK, SUBMITTED, SUCCESS, TERMINAL, TaskView
from polyrelay.tasks.engine import new_task_id
from polyrelay.tasks.notify import valid_hook


_ACCEPTED = frozenset({OK, EXISTED, IN_QUEUE})  # new-api passes 21/22 to callers as 1
_FAILOVER_STATUSES = frozenset({401, 403, 408, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})
_KEY_STATUSES = frozenset({401, 403, 429})  # the key itself is refused: rest it
_SPEED_FLAGS = re.compile(r"\s*--(?:fast|relax|turbo)\b", re.IGNORECASE)
_SIMPLE_CHANGE = re.compile(r"^\s*(\S+)\s+(?:([UV])([1-4])|(R))\s*$", re.IGNORECASE)


# Large inputs are sent upstream but not stored with the task.
_UNSTORED = frozenset({"base64Array", "base64", "maskBase64", "sourceBase64", "targetBase64", "image"})


def _check_banned(ctx: MjContext, prompt: str) -> None:
    lowered = prompt.lower()
    for word in ctx.request.app.state.settings.midjourney.banned_words:
        if word and word.lower() in lowered:
            raise MjError(200, 24, "The prompt may contain a banned word.", {"promptEn": prompt, "bannedWord": word})


def _clean_prompt(ctx: MjContext, payload: dict[str, Any]) -> None:
    """Operator option ``strip_speed_flags``: the speed is the route's (/mj-fast...), not the prompt's."""
    prompt = payload.get("prompt")
    if isinstance(prompt, str) and ctx.request.app.state.settings.midjourney.strip_speed_flags:
        payload["prompt"] = _SPEED_FLAGS.sub("", prompt).strip()


def _require_prompt(ctx: MjContext, payload: dict[str, Any]) -> None:
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt must not be blank.")
    _clean_prompt(ctx, payload)
    _check_banned(ctx, payload["prompt"])


def image_base(ctx: MjContext) -> str:
    """Where forwarded image links point ("" when forwarding is off)."""
    settings = ctx.request.app.state.settings.midjourney
    if not settings.forward_images:
        return ""
    return (settings.public_base_url or str(ctx.request.base_url)).rstrip("/")


def _cost(ctx: MjContext, model: str) -> tuple[int, bool]:
    snapshot = ctx.tasks.relay.snapshot
    check_model_allowed(ctx.token, model)
    price = snapshot.price_for(model)
    require_price(ctx.token, model, price)
    if price is None:
        return 0, False
    multiplier = ctx.request.app.state.settings.midjourney.mode_multipliers.get(ctx.mode, 1.0)
    return charge(ctx.token, round(price.cost(Usage(images=1, source="request")) * multiplier)), True


def _channels(ctx: MjContext, model: str, parent: TaskView | None) -> list[ChannelRecord]:
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
    ctx: MjContext, path: str, action: str, payload: dict[str, Any], parent: TaskView | None = None
) -> Response:
    """Reserve, send to the first channel that answers, persist task and charge, answer code 1."""
    started = time.perf_counter()
    hook = payload.get("notifyHook") or ""
    if hook and not (isinstance(hook, str) and valid_hook(hook)):
        raise invalid("notifyHook must be an http(s) URL.")
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
            return mj_json({"code": code if isinstance(code, int) else FAILURE,
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
            "client_ip": client_ip(ctx.request),
        }
        await ctx.tasks.create(row, charge_log)
        charged = cost
        return mj_json({"code": OK, "description": reply.get("description") or "Submit success",
                      "result": task_id, "properties": {k: v for k, v in properties.items()
                                                        if k not in ("discordInstanceId", "discordChannelId")}})
    finally:
        reservation.settle(charged)


async def _send(
    ctx: MjContext, channels: list[ChannelRecord], path: str, body: dict[str, Any], model: str
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


def _log_refused(ctx: MjContext, path: str, model: str, channel: ChannelRecord | None, status: int, error: str,
                 attempts: int, started: float) -> None:
    """A usage-log row, uncharged, for a submit no upstream accepted."""
    ctx.tasks.relay.writer.record_usage(
        {"request_id": f"mj-{uuid.uuid4().hex}", "created_at": datetime.now(timezone.utc), "token_id": ctx.token.id,
         "token_name": ctx.token.name, "channel_id": channel.id if channel else None,
         "channel_name": channel.name if channel else "", "family": FAMILY,
         "endpoint": path.removeprefix("/").replace("/", "."), "model": model, "upstream_model": model,
         "status_code": status, "usage_source": "", "cost_micros": 0, "attempts": attempts,
         "latency_ms": (time.perf_counter() - started) * 1000, "error": error[:2000],
         "client_ip": client_ip(ctx.request)},
        ctx.token.id, 0,
    )


@endpoint
async def imagine(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    _require_prompt(ctx, payload)
    return await _submit(ctx, "/mj/submit/imagine", "IMAGINE", payload)


@endpoint
async def shorten(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    _require_prompt(ctx, payload)
    return await _submit(ctx, "/mj/submit/shorten", "SHORTEN", payload)


@endpoint
async def blend(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    images = payload.get("base64Array")
    if not isinstance(images, list) or not 2 <= len(images) <= 5:
        raise invalid("base64Array must hold 2 to 5 images.")
    return await _submit(ctx, "/mj/submit/blend", "BLEND", payload)


@endpoint
async def describe(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    if not payload.get("base64") and not payload.get("link"):
        raise invalid("base64 or link is required.")
    return await _submit(ctx, "/mj/submit/describe", "DESCRIBE", payload)


@endpoint
async def swap_face(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    if not (payload.get("sourceBase64") or payload.get("sourceUrl")) or not (
        payload.get("targetBase64") or payload.get("targetUrl")
    ):
        raise invalid("sourceBase64 and targetBase64 are required.")
    return await _submit(ctx, "/mj/insight-face/swap", "SWAP_FACE", payload)


@endpoint
async def action(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    custom_id = payload.get("customId")
    if not payload.get("taskId") or not isinstance(custom_id, str) or not custom_id:
        raise invalid("taskId and customId are required.")
    parent = await ctx.own_task(payload["taskId"])
    return await _submit(ctx, "/mj/submit/action", action_for_custom_id(custom_id), payload, parent)


@endpoint
async def modal(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    if not payload.get("taskId"):
        raise invalid("taskId is required.")
    if isinstance(payload.get("prompt"), str) and payload["prompt"]:
        _clean_prompt(ctx, payload)
        _check_banned(ctx, payload["prompt"])
    parent = await ctx.own_task(payload["taskId"])
    return await _submit(ctx, "/mj/submit/modal", "MODAL", payload, parent)


@endpoint
async def video(ctx: MjContext) -> Response:
    """``{prompt, motion low|high, image}``; ``{action: "extend", index 0..3, taskId | task_id}`` extends one."""
    payload = await ctx.payload()
    parent_id = payload.get("taskId") or payload.get("task_id")
    payload.pop("task_id", None)
    if isinstance(payload.get("prompt"), str) and payload["prompt"]:
        _clean_prompt(ctx, payload)
        _check_banned(ctx, payload["prompt"])
    motion = payload.get("motion")
    if motion is not None and motion not in ("low", "high"):
        raise invalid("motion must be low or high.")
    extend = str(payload.get("action") or "").lower() == "extend"
    if extend or parent_id:
        index = payload.get("index")
        if not parent_id:
            raise invalid("taskId is required to extend a video.")
        if extend and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 3):
            raise invalid("index must be 0..3.")
        payload["taskId"] = str(parent_id)
        parent = await ctx.own_task(parent_id)
        return await _submit(ctx, "/mj/submit/video", "VIDEO", payload, parent)
    if motion is None:
        raise invalid("motion (low or high) is required.")
    if not payload.get("image") and not (isinstance(payload.get("prompt"), str) and payload["prompt"].strip()):
        raise invalid("image (the first frame) or prompt is required.")
    return await _submit(ctx, "/mj/submit/video", "VIDEO", payload)


_CHANGE_BUTTONS = {"UPSCALE": "MJ::JOB::upsample::{index}::", "VARIATION": "MJ::JOB::variation::{index}::",
                   "REROLL": "MJ::JOB::reroll::"}


async def _change(ctx: MjContext, task_id: Any, change: Any, index: Any, extra: dict[str, Any]) -> Response:
    """The legacy change: the parent's matching button as an action (plus proxies), else ``/mj/submit/change``."""
    if not task_id:
        raise invalid("taskId must not be blank.")
    change = str(change or "").upper()
    if change not in _CHANGE_BUTTONS:
        raise invalid("action must be UPSCALE, VARIATION or REROLL.")
    if change != "REROLL" and (isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 4):
        raise invalid("index must be 1..4.")
    parent = await ctx.own_task(task_id)
    if parent.status != SUCCESS:
        raise invalid(f"Task {parent.id} has not succeeded ({parent.status}).")
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
async def change(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    return await _change(ctx, payload.get("taskId"), payload.get("action"), payload.get("index"), payload)


@endpoint
async def simple_change(ctx: MjContext) -> Response:
    """``{content: "<task id> U2"}`` (U1..U4, V1..V4 or R)."""
    payload = await ctx.payload()
    match = _SIMPLE_CHANGE.match(str(payload.get("content") or ""))
    if match is None:
        raise invalid("content must be '<task id> U1..U4 | V1..V4 | R'.")
    task_id, letter, digit, reroll = match.groups()
    if reroll:
        return await _change(ctx, task_id, "REROLL", None, payload)
    return await _change(ctx, task_id, "UPSCALE" if letter.upper() == "U" else "VARIATION", int(digit), payload)
