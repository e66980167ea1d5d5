"""Streams: first byte as soon as the upstream sends it, cancellation when the caller leaves, billing without usage."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.fakes import openai_upstream
from tests.fakes.openai_upstream import CHAT_REPLY, PROMPT_TOKENS
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-streaming"
ALICE = "sk-alice-streaming-0123456789"
HI = [{"role": "user", "content": "Hi"}]


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeServer
    quiet: FakeServer  # an OpenAI-compatible server that never reports usage

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key=ALICE, base_url=self.gateway.v1, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeServer, FakeServer]]:
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    quiet = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    quiet.knobs["omit_usage"] = True
    yield upstream, quiet
    upstream.stop()
    quiet.stop()


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], upstreams: tuple[FakeServer, FakeServer]) -> Setup:
    upstream, quiet = upstreams
    config = {
        "channels": [
            {"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": ["gpt-4o", "slow-stream"]},
            {"name": "quiet", "base_url": quiet.url, "keys": [UPSTREAM_KEY], "models": ["gpt-4o-quiet"]},
        ],
        "tokens": [{"name": "alice", "key": ALICE, "quota_usd": 10.0}],
        # 1 micro-USD per token either way, so a cost is a token count.
        "prices": {"default": {"input_per_mtok": 1, "output_per_mtok": 1}},
    }
    return Setup(gateway_factory(config), upstream, quiet)


def _tokens(text: str) -> int:
    with warnings.catch_warnings():  # bpe_openai loads its vocabularies with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return len(bpe_openai.get_encoding("o200k_base").encode(text))


# Chat framing: 3 tokens per message and 3 to prime the reply, plus the content.
PROMPT_COUNTED = 3 + 3 + _tokens("Hi")
REPLY_COUNTED = _tokens("".join(CHAT_REPLY))


def test_first_chunk_arrives_before_the_stream_ends(setup: Setup) -> None:
    gate = threading.Event()
    setup.upstream.knobs["hold_stream"] = gate  # the fake sends one chunk, then waits for the gate
    try:
        raw = setup.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=HI, stream=True)
        chunks = iter(raw.parse())
        first = next(chunks)
        assert not gate.is_set()
        assert first.choices[0].delta.role == "assistant"
        gate.set()
        rest = list(chunks)
    finally:
        gate.set()
        del setup.upstream.knobs["hold_stream"]
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == "".join(CHAT_REPLY)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert row.status_code == 200 and row.ttfb_ms < row.latency_ms


def test_caller_disconnect_cancels_upstream_and_bills_what_was_produced(setup: Setup) -> None:
    cancelled: threading.Event = setup.upstream.knobs["stream_cancelled"]
    cancelled.clear()
    body = {"model": "slow-stream", "messages": HI, "stream": True}
    with httpx.Client(timeout=20) as http:
        with http.stream(
            "POST", setup.gateway.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {ALICE}"}
        ) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            received = 0
            for line in response.iter_lines():
                if line.startswith("data: ") and '"tick ' in line:
                    received += 1
                    if received == 5:
                        break  # the caller hangs up mid-stream
    assert cancelled.wait(10), "the upstream call went on after the caller left"
    row = setup.gateway.usage_row(request_id)
    assert row.status_code == 499
    assert row.usage_source == "counted"
    assert row.completion_tokens >= 5 and row.prompt_tokens == PROMPT_COUNTED
    assert row.cost_micros == row.prompt_tokens + row.completion_tokens > 0


def test_stream_without_upstream_usage_is_counted(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(
        model="gpt-4o-quiet", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(CHAT_REPLY)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.status_code, row.usage_source) == (200, "counted")
    assert (row.prompt_tokens, row.completion_tokens) == (PROMPT_COUNTED, REPLY_COUNTED)
    assert row.cost_micros == PROMPT_COUNTED + REPLY_COUNTED


def test_reply_without_upstream_usage_is_counted(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(model="gpt-4o-quiet", messages=HI)
    assert raw.parse().choices[0].message.content == "".join(CHAT_REPLY)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.usage_source, row.prompt_tokens, row.completion_tokens) == ("counted", PROMPT_COUNTED, REPLY_COUNTED)
    assert row.cost_micros == PROMPT_COUNTED + REPLY_COUNTED


def test_upstream_usage_is_preferred_when_reported(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=HI, stream=True)
    list(raw.parse())
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.usage_source, row.prompt_tokens) == ("upstream", PROMPT_TOKENS)
