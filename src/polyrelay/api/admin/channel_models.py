"""``POST /api/channels/{id}/models``: the model names a channel's upstream lists, to fill in its model list.

One GET of the upstream's own list with the channel's first key, in the dialect of its type (OpenAI
and every OpenAI-compatible type: ``/v1/models``; Anthropic: ``/v1/models``; Gemini:
``/v1beta/models``). It goes through the checked fetch (``polyrelay.fetch``: pinned address, size
and time limits, private hosts only with ``allow_private_image_hosts``), and nothing is saved: the
console puts the names in the edit dialog for the administrator to keep or trim.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, not_found, path_int, run_db
from polyrelay.fetch import FetchError, FetchPolicy, pinned_request
from polyrelay.keys import key_hint
from polyrelay.store import models

_MAX_LISTED = 5000
_ANTHROPIC_VERSION = "2023-06-01"


def _listing(channel_type: str, base_url: str, key: str) -> tuple[str, dict[str, str]]:
    """The list's URL and the headers that authenticate it, for a channel of ``channel_type``."""
    if channel_type == "anthropic":
        return f"{base_url}/v1/models?limit=1000", {"x-api-key": key, "anthropic-version": _ANTHROPIC_VERSION}
    if channel_type == "gemini":
        return f"{base_url}/v1beta/models?pageSize=1000", {"x-goog-api-key": key}
    return f"{base_url}/v1/models", {"Authorization": f"Bearer {key}"}


def _names(body: Any) -> list[str]:
    """Model names from an OpenAI or Anthropic (``data[].id``) or Gemini (``models[].name``) list."""
    if not isinstance(body, dict):
        return []
    items = body.get("data") if isinstance(body.get("data"), list) else body.get("models")
    names = []
    for item in items if isinstance(items, list) else []:
        name = item.get("id") or item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and 0 < len(name) <= 256:
            names.append(name.removeprefix("models/"))
    return sorted(set(names))[:_MAX_LISTED]


@endpoint()
async def channel_upstream_models(request: Request, _: Principal) -> Response:
    """The models the channel's upstream lists (nothing is saved); `url` says where they were asked for."""
    channel_id = path_int(request)

    def load() -> tuple[str, str, list[str]] | None:
        with Session(engine_of(request)) as session:
            row = session.get(models.Channel, channel_id)
            return (row.type, row.base_url, list(row.keys)) if row is not None else None

    found = await run_db(request, load)
    if found is None:
        raise not_found(f"Channel {channel_id}")
    channel_type, base_url, keys = found
    url, headers = _listing(channel_type, base_url, keys[0])
    policy = FetchPolicy(allow_private=request.app.state.settings.allow_private_image_hosts)

    async def read(response: aiohttp.ClientResponse) -> Any:
        return orjson.loads(await response.read())

    shown = url.split("?", 1)[0]
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            body = await pinned_request(http, "GET", url, policy, read, headers=headers)
    except FetchError as exc:
        raise ApiError(502, "upstream_failed", f"GET {shown}: {str(exc).replace(keys[0], key_hint(keys[0]))}.") from None
    except orjson.JSONDecodeError:
        raise ApiError(502, "upstream_failed", f"GET {shown}: the answer is not JSON.") from None
    return json_response({"url": shown, "models": _names(body)})
