"""Which SDK sent a request whose path does not say: the shared ``/v1/models`` and unknown ``/v1/*`` paths.

The ``anthropic`` SDK sends ``anthropic-version`` (and ``x-api-key``), Google's sends
``x-goog-api-key`` or ``?key=`` (and uses ``/v1beta/``), OpenAI's a Bearer key: each must
get its answers, errors included, in the shape its client parses.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api import anthropic, gemini, openai
from polyrelay.errors import RelayError

OPENAI, ANTHROPIC, GEMINI = "openai", "anthropic", "gemini"
_RENDER: dict[str, Callable[[RelayError], Response]] = {
    OPENAI: openai.error_response, ANTHROPIC: anthropic.error_response, GEMINI: gemini.error_response}


def of(request: Request) -> str:
    if request.url.path.startswith("/v1beta/"):
        return GEMINI
    headers = request.headers
    if "anthropic-version" in headers or ("x-api-key" in headers and "authorization" not in headers):
        return ANTHROPIC
    if "x-goog-api-key" in headers or "key" in request.query_params:
        return GEMINI
    return OPENAI


def error_response(request: Request, error: RelayError) -> Response:
    """``error`` in the shape of the SDK that sent ``request``."""
    return _RENDER[of(request)](error)
