"""What the task families' API modules share: caller auth, JSON bodies, own-task lookup, errors, submit.

A family module only knows its paths, its request fields, its billing model names and
its error shape; everything about keys, money and the task table goes through here
and ``tasks.submit``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.common import bearer_key, client_ip, read_body
from polyrelay.errors import RelayError, bad_request
from polyrelay.relay.admission import caller
from polyrelay.store.snapshot import TokenRecord
from polyrelay.providers.base import TaskView
from polyrelay.tasks.engine import TaskEngine
from polyrelay.tasks.notify import valid_hook
from polyrelay.tasks.submit import Accept, Accepted, Order, Send, call_once, submit

RenderError = Callable[[RelayError], Response]
MAX_BATCH_IDS = 1000  # most ids one batch query may name


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def not_found(task_id: Any) -> RelayError:
    """Unknown and someone else's task answer alike, on purpose."""
    return RelayError(404, f"Task {task_id} does not exist.", code="task_not_found")


def refusal(family: str, status: int, body: Any, message: str) -> RelayError:
    """An upstream's refusal of a job, its body kept so the family can relay it in its own dialect."""
    error = RelayError(status if status >= 400 else 400, message, code="upstream_refused")
    if body is not None:
        error.with_raw(family, orjson.dumps(body))
    return error


def accept_id(family: str, refused: str) -> Accept:
    """The submit check of upstreams that answer ``{"id": "..."}``: that id, else ``refused`` (with the HTTP status)."""

    def accept(status: int, body: Any) -> Accepted:
        if status >= 400 or not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise refusal(family, status if status >= 400 else 502, body, f"{refused} (HTTP {status}).")
        return Accepted(body["id"])

    return accept


def batch_ids(payload: dict[str, Any]) -> list[str]:
    """The ``ids`` of a batch query: a list of at most MAX_BATCH_IDS ids, else 400 (never silently cut)."""
    ids = payload.get("ids")
    if not isinstance(ids, list):
        raise bad_request("ids must be a list of task ids.", param="ids")
    if len(ids) > MAX_BATCH_IDS:
        raise bad_request(f"ids may name at most {MAX_BATCH_IDS} tasks, not {len(ids)}.", param="ids")
    return [str(i) for i in ids]


def hook(value: Any, name: str) -> str:
    """A caller's callback URL (http or https), or "" when none was given."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not valid_hook(value):
        raise bad_request(f"'{name}' must be an http(s) URL.", param=name)
    return value


class TaskCall:
    """One caller request to a task family: who it is and the engine."""

    def __init__(self, request: Request, family: str) -> None:
        self.request = request
        self.family = family
        self.engine: TaskEngine = request.app.state.tasks
        self.token: TokenRecord = caller(self.engine.spine.snapshot, bearer_key(request), client_ip(request))

    @property
    def client_ip(self) -> str:
        return client_ip(self.request)

    async def payload(self) -> dict[str, Any]:
        body = await read_body(self.request)
        try:
            payload = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"The request body is not valid JSON: {exc}.") from None
        if not isinstance(payload, dict):
            raise bad_request("The request body must be a JSON object.")
        return payload

    async def own(self, task_id: Any, action: str | None = None) -> TaskView:
        """The caller's own task of this family (and ``action``, when given), else 404."""
        task = await self.engine.get(str(task_id)) if task_id else None
        if (task is None or task.family != self.family or task.token_id != self.token.id
                or (action is not None and task.action != action)):
            raise not_found(task_id)
        return task

    async def own_many(self, ids: list[str]) -> list[TaskView]:
        """The caller's own tasks among ``ids`` (see ``batch_ids``), in the order asked; others are skipped."""
        found = {t.id: t for t in await self.engine.list_for_token(self.family, self.token.id, ids, len(ids) or 1)}
        return [found[i] for i in ids if i in found]

    def render(self, task: TaskView) -> dict[str, Any]:
        return self.engine.adaptors[task.family].render(task)

    async def submit(self, order: Order, send: Send, accept: Accept) -> TaskView:
        return await submit(self.engine, self.token, order, send, accept, self.client_ip)

    async def call_once(self, order: Order, send: Send) -> tuple[int, Any]:
        """A family call that creates no task (see ``tasks.submit.call_once``): the upstream's (status, body)."""
        return await call_once(self.engine, self.token, order, send, self.client_ip)


def endpoint(family: str, render_error: RenderError) -> Callable[
        [Callable[[TaskCall], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler: authenticate, run, and answer any RelayError in the family's error shape."""

    def wrap(handler: Callable[[TaskCall], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(TaskCall(request, family))
            except RelayError as error:
                return render_error(error)

        run.__name__ = handler.__name__
        return run

    return wrap
