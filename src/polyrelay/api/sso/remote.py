"""Calls to identity providers (discovery, token, keys, GitHub's API), under the checked outbound fetch:
every hop pinned to an address the policy accepts (no loopback or private address unless the operator
allows it), no redirects followed, bounded size and time."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from polyrelay.api.sso.settings import SsoSettings
from polyrelay.fetch import FetchError, FetchPolicy, pinned_request

_MAX_BYTES = 256 * 1024  # a discovery document, a key set or a token answer is a few kB


class ProviderError(Exception):
    """The identity provider could not be reached or answered something unusable; ``code`` goes to the user."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def policy_of(settings: SsoSettings) -> FetchPolicy:
    return FetchPolicy(allow_private=settings.allow_private_hosts, max_bytes=_MAX_BYTES, timeout_s=settings.timeout_s,
                       max_redirects=0)


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    body = await response.content.read(_MAX_BYTES + 1)
    if len(body) > _MAX_BYTES:
        raise FetchError(f"the answer is larger than {_MAX_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FetchError("the answer is not JSON") from None


async def _fetch(settings: SsoSettings, code: str, method: str, url: str, form: dict[str, str] | None,
                 headers: dict[str, str]) -> Any:
    sent = {"Accept": "application/json", "User-Agent": "polyrelay-sso", **headers}
    body = None
    if form is not None:
        body = urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        # A session per call: sign-ins are rare, and no provider cookie may outlive one.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            return await pinned_request(session, method, url, policy_of(settings), _read_json, headers=sent, body=body)
    except FetchError as exc:
        raise ProviderError(code, f"{method} {url}: {exc}") from None


async def call_json(settings: SsoSettings, code: str, method: str, url: str, *, form: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON object ``url`` answers (a form POSTed when ``form`` is given); ProviderError(``code``) otherwise."""
    data = await _fetch(settings, code, method, url, form, headers or {})
    if not isinstance(data, dict):
        raise ProviderError(code, f"{method} {url}: the answer is not a JSON object")
    return data


async def call_json_list(settings: SsoSettings, code: str, url: str, headers: dict[str, str]) -> list[Any]:
    """The JSON array ``url`` answers to a GET (GitHub's /user/emails)."""
    data = await _fetch(settings, code, "GET", url, None, headers)
    if not isinstance(data, list):
        raise ProviderError(code, f"GET {url}: the answer is not a JSON array")
    return data
