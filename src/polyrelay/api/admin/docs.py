"""The admin API's OpenAPI schema (``/openapi.json``) and a plain HTML listing of it (``/docs``).

Built from the route table in ``api/admin.py`` and the handlers' docstrings; no assets
from anywhere else.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from typing import Any

from polyrelay import __version__
from polyrelay.api.admin.common import INT32_MAX, INT64_MAX

_ERROR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_UPSTREAM_ERROR = {**_ERROR, "description": "The upstream that holds the result failed"}
_ID = {"type": "integer", "minimum": 1, "maximum": INT32_MAX}
_ID_OR_ZERO = {"type": "integer", "minimum": 0, "maximum": INT32_MAX}
_TEXT = {"type": "string"}
_QUERY_FILTERS = [
    ("start", _TEXT, "ISO 8601; rows at or after"),
    ("end", _TEXT, "ISO 8601; rows before"),
    ("user_id", _ID_OR_ZERO, "admin only"),
    ("token_id", _ID_OR_ZERO, ""),
    ("model", _TEXT, ""),
    ("channel_id", _ID_OR_ZERO, "admin only"),
    ("status", _TEXT, "an HTTP status code, 'ok' (< 400) or 'error' (>= 400)"),
]
_LIST_ONLY = [("before_id", {"type": "integer", "minimum": 1, "maximum": INT64_MAX}, "rows with a smaller id")]
_PAGING = [("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "default 100"),
           ("offset", _ID_OR_ZERO, "default 0")]
# GET paths (by their last segment, or whole) whose query differs from _PAGING.
_QUERIES = {
    "tasks": [("family", _TEXT, "midjourney, suno, luma, kling, flux or stability"),
              ("status", _TEXT, "engine statuses, comma-separated, case-insensitive"),
              ("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "default 20"),
              ("before", {"type": "integer", "minimum": 0, "maximum": 2**62},
               "a submit_time in epoch ms: the previous page's next_before"),
              ("user_id", _ID_OR_ZERO, "admin only")],
    "stats": [("days", {"type": "integer", "minimum": 1, "maximum": 90}, "default 14"),
              ("user_id", _ID_OR_ZERO, "admin only")],
    "ledger": [("kind", {"type": "string", "enum": ["charge", "refund", "topup", "adjustment", "redemption"]},
                "one kind of movement"), *_PAGING],
    "system": [],
    "health": [],
    "video": [],
    "signup": [("invite", {"type": "string", "maxLength": 32}, "an invite code: the answer says whether it is valid")],
    "invite": [],
    "accounts": [],
    "orders": [("status", _TEXT, "pending, paid, expired, failed or review"), ("user_id", _ID, "admin only"), *_PAGING],
    "options": [],
    "sso": [],
    "start": [("link", {"type": "string", "enum": ["1"]}, "1: link the identity to the signed-in user")],
    "callback": [("state", _TEXT, "as the provider sends it"), ("code", _TEXT, "as the provider sends it")],
    "/api/stats/channels": [("start", {"type": "string", "format": "date"}, "YYYY-MM-DD (UTC), default end - 13 days"),
                            ("end", {"type": "string", "format": "date"}, "YYYY-MM-DD (UTC), default today")],
}
_CREATES = frozenset({"create_user", "create_token", "my_create_token", "create_channel", "create_group",
                      "create_codes", "signup", "my_create_order", "my_playground_key", "begin_totp", "add_passkey"})
_NO_CONTENT = frozenset({"logout", "my_password", "reset_password", "disable_totp", "reset_user_2fa"})
_REDIRECTS = frozenset({"sso_start", "sso_callback"})  # browser navigations: to the provider, back to the console


def _responses(handler_name: str) -> dict[str, Any]:
    """Every status the operation answers: its success, any 4xx (the error names the field), and upstream 5xx."""
    if handler_name in _CREATES:
        success = {"201": {"description": "Created"}}
    elif handler_name in _REDIRECTS:
        success = {"303": {"description": "A redirect: to the identity provider, or back to the console"}}
    elif handler_name in _NO_CONTENT or handler_name.startswith(("delete_", "my_delete_")):
        success = {"204": {"description": "Done; no content"}}
    else:
        success = {"200": {"description": "OK"}}
    upstream = {"5XX": _UPSTREAM_ERROR} if handler_name in ("task_video", "fetch_channel_balance",
                                                            "channel_upstream_models") else {}
    return {**success, "4XX": _ERROR, **upstream}


def _query(params: list[tuple[str, dict[str, Any], str]]) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "schema": s, "description": d} for n, s, d in params]


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID if name == "id" else {"type": "string"}}


def _summary(handler: Callable[..., Any], method: str, path: str) -> tuple[str, str]:
    doc = (handler.__doc__ or "").strip()
    if doc:
        first, _, rest = doc.partition("\n")
        return first.strip(), rest.strip()
    return f"{method} {path}", ""


def schema(routes: list[tuple[str, str, Callable[..., Any], str]]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler, tag in routes:
        summary, description = _summary(handler, method, path)
        operation: dict[str, Any] = {
            "tags": [tag],
            "summary": summary,
            "operationId": handler.__name__,
            "responses": _responses(handler.__name__),
        }
        if description:
            operation["description"] = description
        parameters = [_path_parameter(name) for name in re.findall(r"{(\w+)}", path)]
        if method == "GET" and "/logs" in path:
            parameters += _query(_QUERY_FILTERS)
        last = path.rsplit("/", 1)[-1]
        query = _QUERIES.get(path, _QUERIES.get(last))  # by the whole path where the last segment is ambiguous
        if method == "GET" and query is not None:
            parameters += _query(query)
        elif method == "GET" and not re.search(r"{\w+}$", path) and not path.endswith(("aggregate", ".csv", "/me")):
            parameters += _query(_PAGING + (_LIST_ONLY if last == "logs" else []))
        if parameters:
            operation["parameters"] = parameters
        if method in ("POST", "PATCH", "PUT"):
            operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
        if tag not in ("auth", "public"):
            operation["security"] = [{"adminKey": []}, {"session": []}]
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "polyrelay admin API",
            "version": __version__,
            "description": "Money is integer micro-USD (`*_micros`). Errors: `{\"error\": {\"status\", \"code\", \"message\"}}`. "
            "Cookie-authenticated writes need an `X-Requested-With` header.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer", "description": "POLYRELAY_ADMIN_KEY / admin_key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "polyrelay_session"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"status": {"type": "integer"}, "code": {"type": "string"},
                                           "message": {"type": "string"}},
                        }
                    },
                }
            },
        },
    }


def html(routes: list[tuple[str, str, Callable[..., Any], str]]) -> str:
    rows = []
    for method, path, handler, tag in routes:
        summary, description = _summary(handler, method, path)
        rows.append(
            f"<tr><td>{html_lib.escape(tag)}</td><td><code>{method}</code></td><td><code>{html_lib.escape(path)}</code>"
            f"</td><td>{html_lib.escape(summary)}<br><small>{html_lib.escape(description)}</small></td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>polyrelay admin API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}td{padding:.3em .8em;vertical-align:top;"
        "border-bottom:1px solid #ddd}code{white-space:nowrap}</style></head><body>"
        "<h1>polyrelay admin API</h1><p>Machine-readable schema: <a href='/openapi.json'>/openapi.json</a>. "
        "Auth: <code>Authorization: Bearer &lt;admin key&gt;</code>, or the session cookie from "
        "<code>POST /api/auth/login</code> (writes then need an <code>X-Requested-With</code> header). "
        "Money is integer micro-USD.</p><table><tr><th>area</th><th>method</th><th>path</th><th>what</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
