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

_ERROR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_QUERY_FILTERS = [
    ("start", "string", "ISO 8601; rows at or after"),
    ("end", "string", "ISO 8601; rows before"),
    ("user_id", "integer", "admin only"),
    ("token_id", "integer", ""),
    ("model", "string", ""),
    ("channel_id", "integer", "admin only"),
    ("status", "string", "an HTTP status code, 'ok' (< 400) or 'error' (>= 400)"),
]
_PAGING = [("limit", "integer", "1..1000, default 100"), ("offset", "integer", "default 0")]
# GET paths (by their last segment) whose query differs from _PAGING.
_QUERIES = {
    "tasks": [("family", "string", "midjourney, suno, luma, kling, flux or stability"),
              ("status", "string", "engine statuses, comma-separated, case-insensitive"),
              ("limit", "integer", "1..100, default 20"),
              ("before", "integer", "a submit_time in epoch ms: the previous page's next_before"),
              ("user_id", "integer", "admin only")],
    "stats": [("days", "integer", "1..90, default 14"), ("user_id", "integer", "admin only")],
    "system": [],
    "video": [],
}


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
            "responses": {"200": {"description": "OK"}, "4XX": _ERROR},
        }
        if description:
            operation["description"] = description
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "integer" if name == "id" else "string"}}
            for name in re.findall(r"{(\w+)}", path)
        ]
        if method == "GET" and "/logs" in path:
            parameters += [{"name": n, "in": "query", "schema": {"type": t}, "description": d} for n, t, d in _QUERY_FILTERS]
        last = path.rsplit("/", 1)[-1]
        if method == "GET" and last in _QUERIES:
            parameters += [{"name": n, "in": "query", "schema": {"type": t}, "description": d} for n, t, d in _QUERIES[last]]
        elif method == "GET" and not re.search(r"{\w+}$", path) and not path.endswith(("aggregate", ".csv", "/me")):
            parameters += [{"name": n, "in": "query", "schema": {"type": t}, "description": d} for n, t, d in _PAGING]
        if parameters:
            operation["parameters"] = parameters
        if method in ("POST", "PATCH", "PUT"):
            operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
        if tag != "auth":
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
