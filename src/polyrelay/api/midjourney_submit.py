"""Midjourney submits: prompt checks and each /mj/submit/* action, on the task spine (tasks.submit)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.responses import Response

from polyrelay.scrub import scrub_json
from polyrelay import kinds
from polyrelay.api.common import client_ip
from polyrelay.api.midjourney_context import (
    ACTION_MODELS,
    FAILURE,
    FAMILY,
    IN_QUEUE,
    EXISTED,
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
from polyrelay.errors import RelayError
from polyrelay.providers import midjourney as upstream
from polyrelay.providers.base import RANK, SUBMITTED, SUCCESS, TaskView
from polyrelay.store.snapshot import ChannelRecord
from polyrelay.tasks.notify import valid_hook
from polyrelay.tasks.submit import Accepted, Order, submit


_ACCEPTED = frozenset({OK, EXISTED, IN_QUEUE})  # new-api passes 21/22 to callers as 1
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


def _busy(status: int, reply: Any) -> bool:
    """Code 23: this channel's queue is full, another's may not be (all full: the caller gets code 23)."""
    return isinstance(reply, dict) and reply.get("code") == QUEUE_FULL


async def _submit(
    ctx: MjContext, path: str, action: str, payload: dict[str, Any], parent: TaskView | None = None
) -> Response:
    """Submit on the task spine (admission, failover, stored task and charge); answer code 1 with our task id."""
    hook = payload.get("notifyHook") or ""
    if hook and not (isinstance(hook, str) and valid_hook(hook)):
        raise invalid("notifyHook must be an http(s) URL.")
    # We poll and call back ourselves; "task_id" is some relays' spelling of taskId.
    body = {k: v for k, v in payload.items() if k not in ("notifyHook", "task_id")}
    if parent is not None:
        body["taskId"] = parent.upstream_id
    settings = ctx.request.app.state.settings.midjourney
    order = Order(FAMILY, action, ACTION_MODELS[action], kinds.MIDJOURNEY, path.removeprefix("/").replace("/", "."),
                  {k: v for k, v in payload.items() if k not in _UNSTORED}, Usage(images=1, source="request"),
                  notify_hook=hook, mode=ctx.mode, parent=parent,
                  multiplier=settings.mode_multipliers.get(ctx.mode, 1.0))
    accepted_reply: dict[str, Any] = {}
    sent_with: list[str] = []  # the keys of the channel that answered last: its reply may echo them

    async def send(channel: ChannelRecord, key: str) -> tuple[int, Any]:
        sent_with[:] = channel.keys
        return await upstream.call(ctx.tasks.session, channel, key, "POST", path, body, ctx.mode)

    def accept(status: int, reply: Any) -> Accepted:
        if not isinstance(reply, dict):
            raise RelayError(502, f"The channel answered HTTP {status} without a result.", type="upstream_error")
        code = reply.get("code")
        if status >= 400 or code not in _ACCEPTED or not reply.get("result"):
            refused = {"code": code if isinstance(code, int) else FAILURE, "description": reply.get("description", ""),
                       "result": None, "properties": reply.get("properties") or {}}
            error = RelayError(status if status >= 400 else 400, f"upstream code {code}: {reply.get('description', '')}",
                               code="upstream_refused")
            raise error.with_raw(FAMILY, orjson.dumps(refused), status=status if status >= 400 else 200)
        accepted_reply.update(reply)
        properties = reply.get("properties") or {}
        initial = properties.get("status") if properties.get("status") in RANK else SUBMITTED
        return Accepted(str(reply["result"]), initial, properties={"upstream_code": code})

    task = await submit(ctx.tasks, ctx.token, order, send, accept, client_ip(ctx.request), busy=_busy,
                        properties={"image_base": image_base(ctx)})
    accepted = scrub_json(accepted_reply, tuple(sent_with))
    properties = accepted.get("properties") or {}
    return mj_json({"code": OK, "description": accepted.get("description") or "Submit success",
                    "result": task.id, "properties": {k: v for k, v in properties.items()
                                                      if k not in ("discordInstanceId", "discordChannelId")}})


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
