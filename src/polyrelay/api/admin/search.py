"""Free-text search in list endpoints (``q``): a bounded substring, matched case-insensitively with LIKE."""

from __future__ import annotations

from polyrelay.api.admin.common import ApiError

MAX_QUERY = 128


def contains_pattern(text: str) -> str:
    """A LIKE pattern (escape character ``\\``) for values containing ``text``; its wildcards match themselves."""
    if len(text) > MAX_QUERY:
        raise ApiError(400, "invalid_query", f"'q' must be at most {MAX_QUERY} characters.")
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
