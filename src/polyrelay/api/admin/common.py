"""Shared plumbing of the admin API: the error type and JSON replies, the DB thread, the body, path ids."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.store.snapshot import load_snapshot


_MAX_PAGE = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type="application/json",
        headers=headers,
    )


def error_response(error: ApiError) -> Response:
    return json_response({"error": {"status": error.status, "code": error.code, "message": error.message}}, error.status)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist.")


def engine_of(request: Request) -> Engine:
    return request.app.state.db


async def run_db(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """Database work on the process's DB thread (the one the batching writer uses)."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.db_executor, fn, *args)


async def run_report(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """A read-only scan (logs, stats, exports) on the report threads, so a big one never delays usage flushes."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.report_executor, fn, *args)


async def reload_snapshot(request: Request) -> None:
    """Make an admin change visible to this process's relay now (others follow within snapshot_refresh_s)."""
    relay = request.app.state.relay

    def read() -> Any:
        with Session(engine_of(request)) as session:
            return load_snapshot(session, relay.snapshot)

    fresh = await run_db(request, read)
    relay.snapshot = fresh.adopt(relay.snapshot)


async def read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return data


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None


def path_int(request: Request, name: str = "id") -> int:
    try:
        return int(request.path_params[name])
    except (KeyError, ValueError):
        raise ApiError(400, "invalid_id", f"'{request.path_params.get(name)}' is not an id.") from None


def paging(request: Request) -> tuple[int, int]:
    limit = query_int(request, "limit", 100)
    offset = query_int(request, "offset", 0)
    if not 1 <= limit <= _MAX_PAGE or offset < 0:
        raise ApiError(400, "invalid_query", f"'limit' must be 1..{_MAX_PAGE} and 'offset' >= 0.")
    return limit, offset


def query_int(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "invalid_query", f"'{name}' is required.")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"'{name}' must be an integer.") from None
