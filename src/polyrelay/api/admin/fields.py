"""Validation of JSON body fields; each failure is a 400 ApiError naming the field."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from polyrelay.api.admin.common import ApiError, aware


def field_int(data: dict[str, Any], key: str, *, minimum: int | None = None, nullable: bool = False) -> int | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_field", f"'{key}' must be an integer{' or null' if nullable else ''}.")
    if minimum is not None and value < minimum:
        raise ApiError(400, "invalid_field", f"'{key}' must be at least {minimum}.")
    return value


def field_str(data: dict[str, Any], key: str, *, max_len: int = 128, choices: tuple[str, ...] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ApiError(400, "invalid_field", f"'{key}' must be a non-empty string of at most {max_len} characters.")
    if choices is not None and value not in choices:
        raise ApiError(400, "invalid_field", f"'{key}' must be one of {', '.join(choices)}.")
    return value.strip()


def field_bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"'{key}' must be true or false.")
    return value


def field_str_list(data: dict[str, Any], key: str, *, nullable: bool = True) -> list[str] | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError(400, "invalid_field", f"'{key}' must be a list of strings{' or null' if nullable else ''}.")
    return list(value)


def field_datetime(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"'{key}' must be an ISO 8601 time or null.")
    return parse_time(value, key)


def parse_time(value: str, key: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_field", f"'{key}' must be an ISO 8601 time.") from None
    return aware(parsed).astimezone(timezone.utc)


def check_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(400, "unknown_field", f"Unknown field(s): {', '.join(unknown)}.")


def commit_conflict(what: str) -> ApiError:
    return ApiError(409, "conflict", f"{what} already exists.")
