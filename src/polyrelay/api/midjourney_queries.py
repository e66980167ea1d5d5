"""Midjourney task queries and operations on a task: fetch, list, queue, query, image, cancel, seed."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.scrub import scrub_json
from polyrelay.api import midjourney_images as images
from polyrelay.api.midjourney_context import (
    FAILURE,
    FAMILY,
    MODES,
    MjContext,
    MjError,
    NOT_FOUND,
    OK,
    endpoint,
    invalid,
    mj_error,
    mj_json,
)
from polyrelay.api.midjourney_submit import image_base
from polyrelay.providers import midjourney as upstream
from polyrelay.fetch import FetchError
from polyrelay.tasks import queries
from polyrelay.providers.base import CANCEL, IN_PROGRESS, NOT_START, SUBMITTED, TaskView
from polyrelay.tasks.engine import TaskEngine


# /mj/task/queue: tasks an upstream holds in its queue or runs (a MODAL task waits for the caller).
_QUEUED = [NOT_START, SUBMITTED, IN_PROGRESS]


def render_task(ctx: MjContext, task: TaskView) -> dict[str, Any]:
    return ctx.tasks.adaptors[FAMILY].render(task, image_base(ctx))  # type: ignore[call-arg]


@endpoint
async def fetch(ctx: MjContext) -> Response:
    task = await ctx.own_task(ctx.request.path_params["task_id"])
    return mj_json(render_task(ctx, task))


@endpoint
async def list_by_condition(ctx: MjContext) -> Response:
    payload = await ctx.payload()
    ids = payload.get("ids")
    if ids is None:
        return mj_json([])  # midjourney-proxy answers [] when no ids are given
    if not isinstance(ids, list):
        raise invalid("ids must be a list of task ids.")
    ids = [str(i) for i in ids][:1000]
    found = {t.id: t for t in await ctx.tasks.list_for_token(FAMILY, ctx.token.id, ids, limit=len(ids) or 1)}
    return mj_json([render_task(ctx, found[i]) for i in ids if i in found])


@endpoint
async def list_recent(ctx: MjContext) -> Response:
    return mj_json([render_task(ctx, t) for t in await ctx.tasks.list_for_token(FAMILY, ctx.token.id, None, 100)])


@endpoint
async def queue(ctx: MjContext) -> Response:
    """The key's tasks its upstreams hold queued or running, oldest first (midjourney-proxy's /task/queue)."""
    found = await ctx.tasks.run_db(queries.queued, ctx.tasks.db, FAMILY, ctx.token.id, _QUEUED)
    return mj_json([render_task(ctx, t) for t in found])


_TEXT_FIELDS = ("prompt", "promptEn", "description", "state")


def _page_number(payload: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = payload.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{name} must be an integer in {low}..{high}.")
    return value


@endpoint
async def query(ctx: MjContext) -> Response:
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
    return mj_json({
        "content": [render_task(ctx, t) for t in found],
        "pageable": {"sort": sort, "pageNumber": number, "pageSize": size, "offset": number * size,
                     "paged": True, "unpaged": False},
        "totalPages": pages, "totalElements": total, "last": number >= pages - 1, "size": size, "number": number,
        "sort": sort, "numberOfElements": len(found), "first": number == 0, "empty": not found,
    })


async def image(request: Request) -> Response:
    """``GET /mj/image/{id}``: the task's result image through polyrelay (no key: links go into <img> tags)."""
    task_id = request.path_params["task_id"]
    if request.path_params.get("mode") is not None and request.path_params["mode"] not in MODES:
        return await not_found(request)
    tasks: TaskEngine = request.app.state.tasks
    task = await tasks.get(task_id)
    if task is None or task.family != FAMILY:
        return mj_error(MjError(404, NOT_FOUND, f"Task {task_id} does not exist."))
    channel = next((c for c in tasks.spine.snapshot.channels if c.id == task.channel_id), None)
    try:
        response = await images.serve(request, task, channel.base_url if channel else None)
    except FetchError as exc:
        return mj_error(MjError(502, FAILURE, f"The image of task {task_id} could not be fetched: {exc}."))
    if response is None:
        return mj_error(MjError(404, NOT_FOUND, f"Task {task_id} has no image yet."))
    return response


@endpoint
async def cancel(ctx: MjContext) -> Response:
    task = await ctx.own_task(ctx.request.path_params["task_id"])
    if task.finished:
        raise invalid(f"Task {task.id} has already finished ({task.status}).")
    channel = next((c for c in ctx.tasks.spine.snapshot.channels if c.id == task.channel_id), None)
    if channel is not None:
        try:  # best effort: midjourney-proxy forks without cancel answer 404, the task still ends here
            key = channel.keys[int(task.properties.get("key_index", 0)) % len(channel.keys)]
            await upstream.call(ctx.tasks.session, channel, key, "POST", f"/mj/task/{task.upstream_id}/cancel",
                                {}, task.mode, timeout_s=10)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
    if await ctx.tasks.finish(task, CANCEL, "cancelled by the caller") is None:
        raise invalid(f"Task {task.id} has already finished.")
    return mj_json({"code": OK, "description": "Cancelled", "result": task.id})


@endpoint
async def image_seed(ctx: MjContext) -> Response:
    task = await ctx.own_task(ctx.request.path_params["task_id"])
    channel = next((c for c in ctx.tasks.spine.snapshot.channels if c.id == task.channel_id), None)
    if channel is None:
        raise MjError(503, FAILURE, f"The channel that made task {task.id} is not available now.")
    key = channel.keys[int(task.properties.get("key_index", 0)) % len(channel.keys)]
    try:
        status, reply = await upstream.call(
            ctx.tasks.session, channel, key, "GET", f"/mj/task/{task.upstream_id}/image-seed", None, task.mode
        )
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise MjError(502, FAILURE, f"The upstream is unreachable ({type(exc).__name__}).") from None
    if not isinstance(reply, dict):
        raise MjError(502, FAILURE, f"The upstream answered HTTP {status} without a result.")
    reply = scrub_json(reply, channel.keys)
    return mj_json({"code": reply.get("code", FAILURE), "description": reply.get("description", ""),
                  "result": reply.get("result")}, 200 if status < 500 else 502)


async def not_found(request: Request) -> Response:
    return mj_error(MjError(404, NOT_FOUND, f"Invalid URL ({request.method} {request.url.path})."))
