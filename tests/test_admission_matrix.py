"""One admission for every API family: each family's representative request × each admission rule.

The gateway is configured the way an operator would: an ``openai`` channel with a model list and
one channel of every other type *without* one, each on its fake upstream. Every (family, rule)
case has its own key, so rules with state (rate limits) never share counters. Refusals must come
in the family's own error shape, with the right HTTP status, and must reach no upstream.

Families: OpenAI chat, Claude and Gemini native, Ideogram, Stability image, Recraft, Midjourney,
Suno, Luma (generation and file upload), Kling, Flux (BFL), Stability image-to-video and new-api's
``/v1/video/generations``. Rules: a good key (control), unknown / disabled / expired keys, an IP
fence, a model allow-list, a group fenced to another channel, ``rpm_limit``, an empty balance,
and (on a second gateway without prices) a metered key asking for an unpriced model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import (
    anthropic_upstream,
    bfl_upstream,
    gemini_upstream,
    ideogram_upstream,
    kling_upstream,
    luma_upstream,
    midjourney_proxy,
    openai_upstream,
    recraft_upstream,
    stability_upstream,
    stability_video_upstream,
    suno_upstream,
)
from tests.fakes.chat_providers import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY
from tests.fakes.server import FakeServer
from tests.fakes.task_clock import JOBS
from tests.image_setup import png

IDEOGRAM_KEY, RECRAFT_KEY, BFL_KEY = "ideo-matrix-key", "recraft-matrix-key", "bfl-matrix-key"
STABILITY_KEYS = list(stability_video_upstream.KEYS)  # one channel serves both Stability fakes' paths
NOBODY = "sk-adm-nobody-0123456789abcdef"  # a key no token has
UNPRICED = "sk-adm-unpriced-0123456789abcdef"  # metered, on the gateway without prices
FENCE = ["10.9.9.9/32"]  # callers come from 127.0.0.1
HI = [{"role": "user", "content": "Hi"}]
CHAT_REPLIES = {"".join(fake.CHAT_REPLY) for fake in (openai_upstream, anthropic_upstream, gemini_upstream)}

# Requests the engine makes by itself (status polls) are not relays of a caller's request.
_POLLS = frozenset({"/mj/task/list-by-condition", "/suno/fetch"})


# ---- the families --------------------------------------------------------------------------------

def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _is_json(response: httpx.Response) -> Any:
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    return response.json()


@dataclass(frozen=True)
class Family:
    id: str
    model: str  # the billed model name, as polyrelay names it
    shape: str  # the error dialect (see _refusal_message)
    send: Callable[[httpx.Client, str], httpx.Response]
    served: Callable[[httpx.Response], bool]  # the family's success answer (status already 2xx)
    other_channel: str = "openai"  # a channel that cannot serve this request, for the group rule
    unpriced_is_free: bool = False  # docs/tasks.md: Luma's file_upload is served free when unpriced


def _openai_chat(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v1/chat/completions", headers=_bearer(key),
                       json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 16})


def _claude(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                       json={"model": "claude-3-5-haiku", "max_tokens": 64, "messages": HI})


def _gemini(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v1beta/models/gemini-1.5-flash:generateContent", headers={"x-goog-api-key": key},
                       json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})


def _ideogram(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/ideogram/v1/generate", headers=_bearer(key), json={"image_request": {"prompt": "a fox"}})


def _stability(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v2beta/stable-image/generate/core", headers={**_bearer(key), "accept": "image/*"},
                       files={"prompt": (None, "a fox")})


def _recraft(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/recraft/v1/images/generations", headers=_bearer(key), json={"prompt": "a logo"})


def _midjourney(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/mj/submit/imagine", headers=_bearer(key), json={"prompt": "a red fox in the snow"})


def _suno(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/suno/submit/music", headers=_bearer(key),
                       json={"prompt": "[Verse] hello", "mv": "chirp-v3-5", "tags": "pop"})


def _luma(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/luma/generations", headers=_bearer(key), json={"user_prompt": "a cat surfing"})


def _luma_upload(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/luma/generations/file_upload", headers=_bearer(key), json={"url": "https://example.com/cat.png"})


def _kling(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/kling/v1/videos/text2video", headers=_bearer(key), json={"prompt": "a dragon"})


def _flux(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/flux/v1/flux-pro-1.1", headers=_bearer(key), json={"prompt": "a lighthouse"})


def _stability_video(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v2beta/image-to-video", headers=_bearer(key),
                       files={"image": ("frame.png", png(1024, 576), "image/png")}, data={"seed": "7"})


def _video(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v1/video/generations", headers=_bearer(key), json={"model": "kling-v1", "prompt": "a dragon"})


FAMILIES = [
    # Chat, Claude and Gemini calls may be served by any of the chat channels (they translate, and have no model
    # list), each answering in the caller's dialect.
    Family("openai", "gpt-4o-mini", "openai", _openai_chat,
           lambda r: _is_json(r)["object"] == "chat.completion" and r.json()["choices"][0]["message"]["content"]
           in CHAT_REPLIES, other_channel="midjourney"),
    Family("claude", "claude-3-5-haiku", "anthropic", _claude,
           lambda r: _is_json(r)["content"][0]["text"] in CHAT_REPLIES),
    Family("gemini", "gemini-1.5-flash", "google", _gemini,
           lambda r: _is_json(r)["candidates"][0]["content"]["parts"][0]["text"] in CHAT_REPLIES),
    Family("ideogram", "ideogram-V_2", "ideogram", _ideogram, lambda r: len(_is_json(r)["data"]) == 1),
    Family("stability", "stable-image-core", "stability", _stability,
           lambda r: r.content == stability_upstream.IMAGE and r.headers["content-type"] == "image/png"),
    Family("recraft", "recraftv3", "openai", _recraft, lambda r: len(_is_json(r)["data"]) == 1),
    Family("midjourney", "mj_imagine", "midjourney", _midjourney,
           lambda r: _is_json(r)["code"] == 1 and str(r.json()["result"]).isdigit()),
    Family("suno", "suno_music", "suno", _suno,
           lambda r: _is_json(r)["code"] == "success" and bool(r.json()["data"])),
    Family("luma", "luma_generation", "luma", _luma,
           lambda r: _is_json(r)["state"] == "pending" and r.json()["prompt"] == "a cat surfing"),
    Family("luma_upload", "luma_file_upload", "luma", _luma_upload,
           lambda r: _is_json(r)["id"].startswith("upload-") and r.json()["public_url"].endswith(".jpg"),
           unpriced_is_free=True),
    Family("kling", "kling-v1", "kling", _kling,
           lambda r: _is_json(r)["code"] == 0 and r.json()["data"]["task_status"] == "submitted"),
    Family("flux", "flux-pro-1.1", "flux", _flux,
           lambda r: _is_json(r)["polling_url"].endswith(f"/flux/v1/get_result?id={r.json()['id']}")),
    Family("stability_video", "stable-video-diffusion", "stability", _stability_video,
           lambda r: bool(_is_json(r)["id"])),
    Family("video", "kling-v1", "openai", _video,
           lambda r: _is_json(r)["object"] == "video" and r.json()["model"] == "kling-v1" and bool(r.json()["id"])),
]

PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
    "claude-3-5-haiku": {"input_per_mtok": 1, "output_per_mtok": 5},
    "gemini-1.5-flash": {"input_per_mtok": 1, "output_per_mtok": 2},
    "ideogram-V_2": {"per_image": 0.08},
    "stable-image-core": {"per_image": 0.03},
    "recraftv3": {"per_image": 0.04},
    "mj_imagine": {"per_request": 0.1},
    "suno_music": {"per_request": 0.1},
    "luma_generation": {"per_request": 0.4},
    "luma_file_upload": {"per_request": 0.005},
    "kling-v1": {"per_second": 0.028},
    "flux-pro-1.1": {"per_image": 0.04},
    "stable-video-diffusion": {"per_request": 0.2},
}
assert {f.model for f in FAMILIES} <= set(PRICES), "every family's model must be priced on the main gateway"


# ---- the rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    status: int
    code: str  # OpenAI's vocabulary (docs/configuration.md); dialects that carry a code must carry this one
    names_model: bool = False
    says: str = ""  # a word the message must contain


RULES: dict[str, Refusal | None] = {
    "control": None,
    "unknown_key": Refusal(401, "invalid_api_key"),
    "disabled_key": Refusal(401, "invalid_api_key"),
    "expired_key": Refusal(401, "expired_api_key"),
    "ip_fence": Refusal(403, "ip_not_allowed", says="127.0.0.1"),
    "model_not_allowed": Refusal(403, "model_not_allowed", names_model=True),
    "group_channels": Refusal(404, "model_not_found", names_model=True),
    "rpm_limit": Refusal(429, "rate_limit_exceeded"),
    "zero_balance": Refusal(429, "insufficient_quota", says="quota"),
    "unpriced": Refusal(403, "model_price_not_set", names_model=True),
}

ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                   429: "rate_limit_error"}
GOOGLE_STATUSES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
KLING_CODES = {401: 1000, 403: 1103, 404: 1203, 429: 1102}  # api/kling.py, Kling's own codes


def _refusal_message(shape: str, response: httpx.Response, refusal: Refusal) -> str:
    """Check the body is the family's own error shape for this refusal; its human-readable message."""
    body = _is_json(response)
    status = response.status_code
    if shape == "openai":
        error = body["error"]
        assert set(body) == {"error"} and error["code"] == refusal.code and isinstance(error["type"], str), body
        return error["message"]
    if shape == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == ANTHROPIC_TYPES[status], body
        return body["error"]["message"]
    if shape == "google":
        error = body["error"]
        assert error["code"] == status and error["status"] == GOOGLE_STATUSES[status], body
        return error["message"]
    if shape == "ideogram":
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return body["error"]
    if shape == "stability":
        assert set(body) == {"id", "name", "errors"} and body["name"] == refusal.code, body
        assert len(body["errors"]) == 1 and isinstance(body["errors"][0], str), body
        return body["errors"][0]
    if shape == "midjourney":
        assert isinstance(body["code"], int) and body["code"] != 1 and body["result"] is None, body
        return body["description"]
    if shape == "suno":
        assert {k: body[k] for k in ("code", "data")} == {"code": refusal.code, "data": None}, body
        return body["message"]
    if shape == "luma":
        assert set(body) == {"detail"} and body["detail"]["code"] == refusal.code, body
        return body["detail"]["reason"]
    if shape == "kling":
        assert body["code"] == KLING_CODES[status] and isinstance(body["request_id"], str), body
        return body["message"]
    assert shape == "flux"
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    return body["detail"]


# ---- the gateways --------------------------------------------------------------------------------

def key_of(family: Family, rule: str, spare: bool = False) -> str:
    return f"sk-adm-{family.id}-{rule}{'-spare' if spare else ''}-0123456789abcdef"


def _tokens() -> list[dict[str, Any]]:
    tokens: list[dict[str, Any]] = []
    for family in FAMILIES:
        def token(rule: str, spare: bool = False, **fields: Any) -> dict[str, Any]:
            name = f"{family.id}-{rule}{'-spare' if spare else ''}"
            return {"name": name, "key": key_of(family, rule, spare), **fields}

        tokens += [
            token("control", quota_usd=100),
            token("disabled_key", quota_usd=100, enabled=False),
            token("expired_key", quota_usd=100, expires_at="2001-01-01T00:00:00Z"),
            token("ip_fence", quota_usd=100, allowed_ips=FENCE),
            token("model_not_allowed", quota_usd=100, models=["not-this-model", "also-not-*"]),
            token("group_channels", quota_usd=100, user=f"fenced-{family.other_channel}"),
            token("rpm_limit", quota_usd=100, rpm_limit=2),
            token("rpm_limit", spare=True, quota_usd=100, rpm_limit=2),  # for a trio cut by a minute boundary
            token("zero_balance", user="broke"),
        ]
    return tokens


def _channels(fakes: dict[str, FakeServer]) -> list[dict[str, Any]]:
    keys = {"openai": [OPENAI_KEY], "anthropic": [ANTHROPIC_KEY], "gemini": [GEMINI_KEY], "ideogram": [IDEOGRAM_KEY],
            "stability": STABILITY_KEYS, "recraft": [RECRAFT_KEY], "flux": [BFL_KEY],
            "midjourney": [midjourney_proxy.SECRET], "suno": [suno_upstream.SUNO_KEY], "luma": [luma_upstream.LUMA_KEY],
            "kling": [kling_upstream.CHANNEL_KEY]}
    channels = [{"name": name, "type": name, "base_url": fakes[name].url, "keys": channel_keys}
                for name, channel_keys in keys.items()]
    channels[0]["models"] = ["gpt-4o-mini"]  # the openai channel: the only one with a model list
    return channels


def main_config(fakes: dict[str, FakeServer]) -> dict[str, Any]:
    others = {f.other_channel for f in FAMILIES}
    return {
        "channels": _channels(fakes),
        "groups": {f"only-{name}": {"channels": [name]} for name in others},
        "users": [{"name": "broke", "balance_usd": 0}]
                 + [{"name": f"fenced-{name}", "group": f"only-{name}", "unlimited": True} for name in others],
        "tokens": _tokens(),
        "prices": PRICES,
    }


def unpriced_config(fakes: dict[str, FakeServer]) -> dict[str, Any]:
    return {
        "channels": _channels(fakes),
        "tokens": [{"name": "unpriced", "key": UNPRICED, "quota_usd": 100}],
        "prices": {"some-unrelated-model": {"per_request": 1}},  # none of the families' models
    }


def _stability_app() -> Any:
    """Stability's image and image-to-video fakes as one upstream, as api.stability.ai is one host."""
    app = stability_upstream.create_app(set(STABILITY_KEYS))
    app[JOBS] = {}
    app.router.add_post("/v2beta/image-to-video", stability_video_upstream.submit)
    app.router.add_get("/v2beta/image-to-video/result/{id}", stability_video_upstream.result)
    return app


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers = {
        "openai": FakeServer(openai_upstream.create_app({OPENAI_KEY})).start(),
        "anthropic": FakeServer(anthropic_upstream.create_app({ANTHROPIC_KEY})).start(),
        "gemini": FakeServer(gemini_upstream.create_app({GEMINI_KEY})).start(),
        "ideogram": FakeServer(ideogram_upstream.create_app({IDEOGRAM_KEY})).start(),
        "stability": FakeServer(_stability_app()).start(),
        "recraft": FakeServer(recraft_upstream.create_app({RECRAFT_KEY})).start(),
        "flux": FakeServer(bfl_upstream.create_app({BFL_KEY})).start(),
        "midjourney": FakeServer(midjourney_proxy.create_app()).start(),
        "suno": FakeServer(suno_upstream.create_app()).start(),
        "luma": FakeServer(luma_upstream.create_app()).start(),
        "kling": FakeServer(kling_upstream.create_app()).start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@dataclass
class Matrix:
    gateway: Gateway
    unpriced_gateway: Gateway
    client: httpx.Client
    unpriced: httpx.Client
    fakes: dict[str, FakeServer]

    def relayed(self) -> list[str]:
        """Every caller request any fake upstream has received (the engine's status polls left out)."""
        return [f"{name} {r.method} {r.path}" for name, fake in self.fakes.items() for r in list(fake.requests)
                if r.method != "GET" and r.path not in _POLLS]


@pytest.fixture(scope="module")
def matrix(gateway_factory: Callable[..., Gateway], fakes: dict[str, FakeServer]) -> Iterator[Matrix]:
    gateway = gateway_factory(main_config(fakes))
    unpriced_gateway = gateway_factory(unpriced_config(fakes))
    with httpx.Client(base_url=gateway.url, timeout=30) as client, \
            httpx.Client(base_url=unpriced_gateway.url, timeout=30) as unpriced:
        yield Matrix(gateway, unpriced_gateway, client, unpriced, fakes)


# ---- the cases -----------------------------------------------------------------------------------

def _assert_served(family: Family, response: httpx.Response) -> None:
    assert 200 <= response.status_code < 300, f"{response.status_code} {response.text[:500]}"
    assert family.served(response), response.text[:500]


def _assert_refused(matrix: Matrix, family: Family, refusal: Refusal, response: httpx.Response,
                    relayed_before: list[str]) -> None:
    assert response.status_code == refusal.status, f"{response.status_code} {response.text[:500]}"
    message = _refusal_message(family.shape, response, refusal)
    assert isinstance(message, str) and message, response.text
    if refusal.names_model:
        assert family.model in message, message
    if refusal.says:
        assert refusal.says in message.lower(), message
    assert matrix.relayed() == relayed_before, "a refused request reached an upstream"


def _refused(matrix: Matrix, family: Family, refusal: Refusal, client: httpx.Client, key: str) -> None:
    before = matrix.relayed()
    _assert_refused(matrix, family, refusal, family.send(client, key), before)


def _minute() -> int:
    return int(time.time()) // 60  # billing/ratelimit.py: fixed windows of int(time.time()) // 60


def _rpm_trio(matrix: Matrix, family: Family) -> None:
    """Two requests served, the third refused, all inside one rate-limit window.

    The gateway runs on this machine's clock: when the window read before the first request equals
    the one read after the third answer, all three were counted in it. Otherwise a minute boundary
    fell inside the trio, and it is redone with a spare key whose counters are untouched."""
    refusal = RULES["rpm_limit"]
    assert refusal is not None
    for spare in (False, True):
        key = key_of(family, "rpm_limit", spare)
        window = _minute()
        first, second = family.send(matrix.client, key), family.send(matrix.client, key)
        before = matrix.relayed()
        third = family.send(matrix.client, key)
        if _minute() != window:
            continue
        _assert_served(family, first)
        _assert_served(family, second)
        _assert_refused(matrix, family, refusal, third, before)
        retry_after = third.headers.get("retry-after", "")
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, dict(third.headers)
        return
    raise AssertionError("a minute boundary fell inside both trios")


def _unpriced_upload_is_free(matrix: Matrix, family: Family) -> None:
    """docs/tasks.md: Luma's file_upload is a helper, served free to metered keys when unpriced."""
    response = family.send(matrix.unpriced, UNPRICED)
    _assert_served(family, response)
    rows = wait_until(lambda: matrix.unpriced_gateway.query(
        "SELECT cost_micros, price_set FROM usage_logs WHERE model = :m AND token_name = 'unpriced'", m=family.model),
        what="the upload's usage-log row")
    assert [(r.cost_micros, bool(r.price_set)) for r in rows] == [(0, False)]


CASES = [(family, rule) for family in FAMILIES for rule in RULES]


@pytest.mark.parametrize(("family", "rule"), CASES, ids=[f"{family.id}-{rule}" for family, rule in CASES])
def test_admission(matrix: Matrix, family: Family, rule: str) -> None:
    refusal = RULES[rule]
    if refusal is None:
        _assert_served(family, family.send(matrix.client, key_of(family, rule)))
    elif rule == "rpm_limit":
        _rpm_trio(matrix, family)
    elif rule == "unpriced" and family.unpriced_is_free:
        _unpriced_upload_is_free(matrix, family)
    elif rule == "unpriced":
        _refused(matrix, family, refusal, matrix.unpriced, UNPRICED)
    else:
        _refused(matrix, family, refusal, matrix.client, NOBODY if rule == "unknown_key" else key_of(family, rule))
