"""An upstream that dies mid-stream: the caller's SDK raises instead of returning a cut answer as whole.

Checked with the official clients: the ``openai`` SDK raises ``APIError`` on the
``data: {"error": ...}`` event polyrelay ends the stream with (passed-through and
translated streams alike), the ``anthropic`` SDK on Anthropic's ``event: error``.
What was produced is billed, and the usage row says the stream broke.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anthropic
import openai
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import anthropic_upstream, openai_upstream
from tests.fakes.server import FakeServer

CALLER = "sk-pr-broken-streams-0123456789abcdef"
OPENAI_KEY = "sk-openai-upstream-broken"
ANTHROPIC_KEY = "sk-ant-upstream-broken"


@dataclass
class Setup:
    gateway: Gateway
    openai_fake: FakeServer
    anthropic_fake: FakeServer


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    openai_fake = FakeServer(openai_upstream.create_app({OPENAI_KEY})).start()
    anthropic_fake = FakeServer(anthropic_upstream.create_app({ANTHROPIC_KEY})).start()
    openai_fake.knobs["break_after"] = anthropic_fake.knobs["break_after"] = 2
    try:
        gateway = gateway_factory({
            "channels": [
                {"name": "openai", "type": "openai", "base_url": openai_fake.url, "keys": [OPENAI_KEY],
                 "models": ["gpt-4o-mini"]},
                {"name": "claude", "type": "anthropic", "base_url": anthropic_fake.url, "keys": [ANTHROPIC_KEY],
                 "models": ["claude-3-5-haiku"]},
            ],
            "tokens": [{"name": "caller", "key": CALLER, "quota_usd": 5.0}],
            "prices": {"default": {"input_per_mtok": 1, "output_per_mtok": 2}},
        })
        yield Setup(gateway, openai_fake, anthropic_fake)
    finally:
        openai_fake.stop()
        anthropic_fake.stop()


def _openai(setup: Setup) -> openai.OpenAI:
    return openai.OpenAI(base_url=setup.gateway.v1, api_key=CALLER, max_retries=0)


def _row_of_last_request(setup: Setup, model: str) -> object:
    rows = setup.gateway.query("SELECT * FROM usage_logs WHERE model = :m ORDER BY id DESC", m=model)
    return rows[0] if rows else None


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku"], ids=["passed-through", "translated"])
def test_the_openai_sdk_raises_when_the_upstream_breaks_mid_stream(setup: Setup, model: str) -> None:
    received: list[str] = []
    stream = _openai(setup).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi there"}], stream=True)
    with pytest.raises(openai.APIError, match="cut short"):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received, "the chunks sent before the break reached the caller"

    row = wait_until(lambda: _row_of_last_request(setup, model), what="the usage row of the broken stream")
    assert "stream broke" in row.error
    assert row.completion_tokens > 0 and row.cost_micros > 0  # what was produced is billed


def test_the_anthropic_sdk_raises_when_the_upstream_breaks_mid_stream(setup: Setup) -> None:
    client = anthropic.Anthropic(base_url=setup.gateway.url, api_key=CALLER, max_retries=0)
    text: list[str] = []
    with pytest.raises(anthropic.APIError, match="cut short"):
        with client.messages.stream(model="claude-3-5-haiku", max_tokens=64,
                                    messages=[{"role": "user", "content": "Hi there"}]) as stream:
            for piece in stream.text_stream:
                text.append(piece)
    assert text, "the deltas sent before the break reached the caller"


def test_a_whole_stream_still_ends_cleanly(setup: Setup) -> None:
    setup.openai_fake.knobs.pop("break_after")
    try:
        stream = _openai(setup).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        setup.openai_fake.knobs["break_after"] = 2
    assert text == "".join(openai_upstream.CHAT_REPLY)
