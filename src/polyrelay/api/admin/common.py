"""Shared plumbing of the admin API: the error type and JSON replies, the DB thread, the body, path ids."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response


_MAX_PAGE = 1000
INT32_MAX = 2**31 - 1  # Integer columns (ids, limits): PostgreSQL refuses anything larger
INT64_MAX = 2**63 - 1  # BigInteger columns
_MAX_BODY_BYTES = 1024 * 1024  # a record's JSON; far more than any record needs


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
    """Make an admin change visible to this process's relay now: reloads just the records the change
    log names (other processes get them the same way, woken by NOTIFY on PostgreSQL; store.feed)."""
    await request.app.state.feed.catch_up()


async def read_raw(request: Request, limit: int) -> bytes:
    """The body's bytes, refused with 413 once they outgrow ``limit``: a flood is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, limit: int = _MAX_BODY_BYTES) -> dict[str, Any]:
    """The JSON object sent, refused with 413 once it outgrows ``limit``."""
    raw = await read_raw(request, limit)
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    _refuse_nul(data, "")
    return data


def _refuse_nul(value: Any, where: str) -> None:
    """PostgreSQL stores no NUL character in text: refuse it anywhere in the body, naming the field."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ApiError(400, "invalid_field", f"'{where or 'body'}' must not contain a NUL character.")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else key
            if "\x00" in key:
                raise ApiError(400, "invalid_field", f"The field name '{name!r}' must not contain a NUL character.")
            _refuse_nul(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{where}[{index}]")


def check_url(request: Request) -> None:
    """Path and query values with a NUL character never reach a query (PostgreSQL would fail on them)."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if "\x00" in str(value):
            raise ApiError(400, "invalid_query", f"'{name}' must not contain a NUL character.")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"The body is larger than the {limit} bytes this endpoint accepts.")


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None


def path_int(request: Request, name: str = "id") -> int:
    """A record id from the path: 1..INT32_MAX, the range of the id columns."""
    raw = request.path_params.get(name, "")
    try:
        value: int | None = int(raw)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= INT32_MAX:
        raise ApiError(400, "invalid_id", f"'{name}' must be an integer from 1 to {INT32_MAX}, not '{raw[:40]}'.")
    return value


def paging(request: Request) -> tuple[int, int]:
    return query_int(request, "limit", 100, 1, _MAX_PAGE), query_int(request, "offset", 0, 0, INT32_MAX)


def query_int(request: Request, name: str, default: int | None = None, minimum: int = 0,
              maximum: int = INT32_MAX) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "invalid_query", f"'{name}' is required.")
        return default
    try:
        value: int | None = int(raw)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:
        raise ApiError(400, "invalid_query", f"'{name}' must be an integer from {minimum} to {maximum}.")
    return value
