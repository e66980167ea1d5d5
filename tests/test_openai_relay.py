"""The OpenAI family end to end: the official SDK -> polyrelay -> fake OpenAI upstreams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.fakes import openai_upstream
from tests.fakes.openai_upstream import COMPLETION_TOKENS, PROMPT_TOKENS
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-good"
ALICE = "sk-alice-0123456789abcdef"
UNLIMITED = "sk-unlimited-0123456789abcdef"
POOR = "sk-poor-0123456789abcdef"
EXPIRED = "sk-expired-0123456789abcdef"
DISABLED = "sk-disabled-0123456789abcdef"


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeServer
    broken: FakeServer

    def client(self, key: str = ALICE, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.gateway.v1, max_retries=0, **kwargs)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeServer, FakeServer]]:
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    broken = FakeServer(openai_upstream.create_app({"sk-broken"})).start()
    broken.knobs["fail_with"] = 500
    yield upstream, broken
    upstream.stop()
    broken.stop()


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], upstreams: tuple[FakeServer, FakeServer]) -> Setup:
    upstream, broken = upstreams
    config = {
        "channels": [
            {
                # Highest priority but always 500: every call must fail over to "main".
                "name": "broken",
                "type": "openai",
                "base_url": broken.url,
                "keys": ["sk-broken"],
                "models": ["gpt-4o-mini"],
                "priority": 20,
            },
            {
                "name": "main",
                "type": "openai",
                "base_url": upstream.url,
                "keys": [UPSTREAM_KEY],
                "models": [
                    "gpt-4o-mini",
                    "text-embedding-3-small",
                    "dall-e-3",
                    "tts-1",
                    "whisper-1",
                    "gpt-3.5-turbo-instruct",
                    "slow-stream",
                    "upstream-rejects",
                    "unpriced-model",
                ],
                "model_mapping": {"gpt-4": "gpt-4o-mini"},
                "priority": 10,
            },
        ],
        "tokens": [
            {"name": "alice", "key": ALICE, "quota_usd": 5.0},
            {"name": "unlimited", "key": UNLIMITED},
            {"name": "restricted", "key": "sk-restricted-0123456789abcdef", "models": ["gpt-4o-mini"]},
            {"name": "poor", "key": POOR, "quota_usd": 0.000001},
            {"name": "expired", "key": EXPIRED, "expires_at": "2020-01-01T00:00:00Z"},
            {"name": "disabled", "key": DISABLED, "enabled": False},
        ],
        "prices": {
            "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
            "gpt-4": {"input_per_mtok": 30, "output_per_mtok": 60},
            "gpt-3.5-turbo-instruct": {"input_per_mtok": 1.5, "output_per_mtok": 2},
            "text-embedding-3-small": {"input_per_mtok": 0.02},
            "dall-e-3": {"per_image": 0.04},
            "tts-1": {"per_mchar": 15},
            "whisper-1": {"per_second": 0.0001},
            "slow-stream": {"input_per_mtok": 1, "output_per_mtok": 1},
            "upstream-rejects": {"per_request": 0.01},
        },
    }
    return Setup(gateway_factory(config), upstream, broken)


def _request_id(response: Any) -> str:
    return response.headers["x-request-id"]


def test_chat_completion_fails_over_and_bills(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.usage is not None and completion.usage.prompt_tokens == PROMPT_TOKENS
    assert setup.upstream.last("/v1/chat/completions").headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"

    row = setup.gateway.usage_row(_request_id(raw))
    assert row.channel_name == "main"
    assert row.attempts == 2  # "broken" (priority 20) answered 500 first
    assert row.status_code == 200
    assert (row.prompt_tokens, row.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    # 12 tokens at 0.15 USD/Mtok + 6 at 0.60 USD/Mtok = 5.4 micro-USD, rounded to nearest.
    assert row.cost_micros == 5


def test_streaming_strips_the_usage_chunk_the_caller_did_not_ask_for(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert all(c.choices for c in chunks), "a usage-only chunk reached a caller who did not ask for it"
    sent = setup.upstream.last("/v1/chat/completions")
    assert b'"include_usage":true' in sent.body
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.prompt_tokens, row.completion_tokens, row.usage_source) == (PROMPT_TOKENS, COMPLETION_TOKENS, "upstream")


def test_streaming_keeps_the_usage_chunk_when_asked(setup: Setup) -> None:
    stream = setup.client().chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS


def test_model_mapping_sends_the_upstream_name(setup: Setup) -> None:
    raw = setup.client(UNLIMITED).chat.completions.with_raw_response.create(
        model="gpt-4", messages=[{"role": "user", "content": "Hi"}]
    )
    raw.parse()
    assert b'"model":"gpt-4o-mini"' in setup.upstream.last("/v1/chat/completions").body
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.model, row.upstream_model) == ("gpt-4", "gpt-4o-mini")
    # Billed at the caller's model price: 12 * 30 + 6 * 60 = 720 micro-USD.
    assert row.cost_micros == 720


@pytest.mark.parametrize(
    ("key", "exception", "code"),
    [
        ("sk-nobody", openai.AuthenticationError, "invalid_api_key"),
        (EXPIRED, openai.AuthenticationError, "expired_api_key"),
        (DISABLED, openai.AuthenticationError, "invalid_api_key"),
        (POOR, openai.RateLimitError, "insufficient_quota"),
    ],
)
def test_key_errors_raise_the_sdk_exception(setup: Setup, key: str, exception: type[Exception], code: str) -> None:
    with pytest.raises(exception) as info:
        setup.client(key).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.code == code  # type: ignore[attr-defined]


def test_model_outside_the_allow_list_is_forbidden(setup: Setup) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="not allowed to use the model 'gpt-4'"):
        setup.client("sk-restricted-0123456789abcdef").chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hi"}]
        )


def test_unpriced_model_refused_for_quota_key_served_for_unlimited(setup: Setup) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="'unpriced-model' has no price") as refused:
        setup.client().chat.completions.create(model="unpriced-model", messages=[{"role": "user", "content": "Hi"}])
    # The refusal names its usage-log row, so a caller can quote it to the operator.
    row = setup.gateway.usage_row(refused.value.response.headers["x-request-id"])
    assert row.status_code == 403 and row.model == "unpriced-model" and row.cost_micros == 0
    raw = setup.client(UNLIMITED).chat.completions.with_raw_response.create(
        model="unpriced-model", messages=[{"role": "user", "content": "Hi"}]
    )
    raw.parse()
    row = setup.gateway.usage_row(_request_id(raw))
    assert not row.price_set and row.cost_micros == 0 and row.status_code == 200


def test_unknown_model_and_route_and_bad_json(setup: Setup) -> None:
    with pytest.raises(openai.NotFoundError, match="'no-such-model' does not exist"):
        setup.client().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    headers = {"Authorization": f"Bearer {ALICE}"}
    response = httpx.post(setup.gateway.v1 + "/chat/completions", content=b"{not json", headers=headers)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    response = httpx.post(setup.gateway.v1 + "/chat/completions", json={"messages": []}, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    response = httpx.get(setup.gateway.v1 + "/no/such/route", headers=headers)
    assert response.status_code == 404 and "error" in response.json()


def test_upstream_client_error_is_relayed_not_failed_over(setup: Setup) -> None:
    with pytest.raises(openai.BadRequestError, match="Invalid value for 'temperature'"):
        setup.client().chat.completions.create(model="upstream-rejects", messages=[{"role": "user", "content": "Hi"}])
