"""A fake Azure OpenAI resource: per-deployment URLs, ``api-version`` and the ``api-key`` header.

It checks what is Azure-specific (deployment exists, api-version given, api-key
valid; Azure's own error bodies otherwise) and then answers like OpenAI, by handing
the request to ``openai_upstream``'s handlers with the key in OpenAI's header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from tests.fakes import openai_upstream

DEPLOYMENTS = web.AppKey("deployments", set)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(body=orjson.dumps({"error": {"code": code, "message": message}}), status=status,
                        content_type="application/json")


@web.middleware
async def _azure(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Runs before the recording middleware reads the body, so the request can still be cloned."""
    deployment = request.match_info.get("deployment")
    if deployment is None:
        return await handler(request)
    if not request.query.get("api-version"):
        return _error(404, "404", "Resource not found")  # what Azure answers without api-version
    if deployment not in request.app[DEPLOYMENTS]:
        return _error(404, "DeploymentNotFound", "The API deployment for this resource does not exist.")
    if "Authorization" in request.headers:
        return _error(400, "400", "Send the key as 'api-key', not as a bearer token (fake's check).")
    key = request.headers.get("api-key")
    if key not in request.app[openai_upstream.KEYS]:
        return _error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint.")
    return await handler(request.clone(headers={**request.headers, "Authorization": f"Bearer {key}"}))


def create_app(keys: set[str], deployments: set[str]) -> web.Application:
    app = openai_upstream.create_app(keys)
    app[DEPLOYMENTS] = deployments
    base = "/openai/deployments/{deployment}"
    app.middlewares.append(_azure)
    app.router.add_post(base + "/chat/completions", openai_upstream.chat_completions)
    app.router.add_post(base + "/embeddings", openai_upstream.embeddings)
    return app
