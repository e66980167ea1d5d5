"""Validation of JSON body fields; each failure is a 400 ApiError naming the field.

Every number is bounded by the column it lands in, every string by its column's length,
so nothing an admin or user sends reaches the database as a value it would refuse
(PostgreSQL refuses what SQLite forgives: integers past the column, NUL characters).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from polyrelay.api.admin.common import INT32_MAX, ApiError, aware

# Any single amount of money: a billion dollars, so sums of many stay far inside a BigInteger.
MAX_MICROS = 10**15
_MAX_LIST_ITEMS = 1000
_EMAIL = re.compile(r"[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f.]+(\.[^@\s\x00-\x1f.]+)+")


def field_int(data: dict[str, Any], key: str, *, minimum: int = 0, maximum: int = INT32_MAX,
              nullable: bool = False) -> int | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ApiError(400, "invalid_field",
                       f"'{key}' must be an integer from {minimum} to {maximum}{' or null' if nullable else ''}.")
    return value


def field_number(data: dict[str, Any], key: str, *, minimum: float, maximum: float) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not minimum <= value <= maximum:
        raise ApiError(400, "invalid_field", f"'{key}' must be a number from {minimum:g} to {maximum:g}.")
    return float(value)


def field_str(data: dict[str, Any], key: str, *, max_len: int = 128, choices: tuple[str, ...] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ApiError(400, "invalid_field", f"'{key}' must be a non-empty string of at most {max_len} characters.")
    if choices is not None and value not in choices:
        raise ApiError(400, "invalid_field", f"'{key}' must be one of {', '.join(choices)}.")
    return value.strip()


def field_choice(data: dict[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    """One of ``choices``, or null."""
    value = data.get(key)
    if value is not None and value not in choices:
        raise ApiError(400, "invalid_field", f"'{key}' must be one of {', '.join(choices)}, or null.")
    return value


def field_email(data: dict[str, Any], key: str) -> str | None:
    """An optional e-mail address, lower-cased; null clears it. Only the shape is checked: a verification
    mail is what proves an address."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value.strip()):
        raise ApiError(400, "invalid_field", f"'{key}' must be an e-mail address of at most 254 characters or null.")
    return value.strip().lower()


def field_text(data: dict[str, Any], key: str, *, max_len: int) -> str:
    """An optional free-text field: absent or null is ""."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError(400, "invalid_field", f"'{key}' must be a string of at most {max_len} characters.")
    return value


def field_bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"'{key}' must be true or false.")
    return value


def field_str_list(data: dict[str, Any], key: str, *, nullable: bool = True, max_len: int = 256) -> list[str] | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, list) or len(value) > _MAX_LIST_ITEMS \
            or not all(isinstance(v, str) and 0 < len(v) <= max_len for v in value):
        raise ApiError(400, "invalid_field", f"'{key}' must be a list of at most {_MAX_LIST_ITEMS} strings of 1 to "
                                             f"{max_len} characters{' or null' if nullable else ''}.")
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
        return aware(datetime.fromisoformat(value.replace("Z", "+00:00"))).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves year 9999 past the calendar
        raise ApiError(400, "invalid_field", f"'{key}' must be an ISO 8601 time.") from None


def check_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(400, "unknown_field", f"Unknown field(s): {', '.join(unknown)}.")


def commit_conflict(what: str) -> ApiError:
    return ApiError(409, "conflict", f"{what} already exists.")
