"""The ``anthropic`` SDK on any channel: an OpenAI-type, an Anthropic (native) and a Gemini channel side by side.

anthropic SDK -> polyrelay ``/v1/messages`` -> wire-accurate fakes (tests/fakes). On the OpenAI and
Gemini channels the Claude dialect bridges through the chat pivot; the caller cannot tell them
apart from Claude: create, stream (with ``get_final_message``), a tools round trip, count_tokens
and images work on each, errors arrive as the SDK's typed exceptions, and billing is the pivot's.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import Gateway
from tests.fakes import anthropic_upstream, gemini_upstream, openai_upstream
from tests.fakes.chat_providers import ANTHROPIC_KEY, CALLER, GEMINI_KEY, OPENAI_KEY, Upstreams, upstreams
from tests.fakes.image_server import PNG
from tests.fakes.server import FakeServer

WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
NARROW = "sk-narrow-0123456789abcdef"  # may use gpt-4o-mini only
LISTED = "sk-listed-0123456789abcdef"  # its group may not use the channel without a model list
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}}


def _config(up: Upstreams) -> dict[str, Any]:
    return {
        "cooldown_after_failures": 1000,
        "channels": [
            {"name": "openai", "type": "openai", "base_url": up.openai.url, "keys": [OPENAI_KEY],
             "models": ["gpt-4o-mini", "fake-reasoner", "upstream-rejects"], "priority": 10},
            {"name": "anthropic", "type": "anthropic", "base_url": up.anthropic.url, "keys": [ANTHROPIC_KEY],
             "models": ["claude-3-5-haiku", "claude-rejects"], "model_mapping": {"claude-latest": "claude-3-5-haiku"},
             "priority": 10},
            {"name": "gemini", "type": "gemini", "base_url": up.gemini.url, "keys": [GEMINI_KEY],
             "models": ["gemini-1.5-flash", "gemini-rejects"], "priority": 10},
            # No model list: every model of its kinds, Claude Messages included, when nothing better serves it.
            {"name": "openai-any", "type": "openai", "base_url": up.openai.url, "keys": [OPENAI_KEY]},
        ],
        "tokens": [{"name": "caller", "key": CALLER, "quota_usd": 10.0},
                   {"name": "narrow", "key": NARROW, "quota_usd": 1.0, "models": ["gpt-4o-mini"]},
                   {"name": "listed", "key": LISTED, "user": "listed-user"}],
        # Its users may not use the channel without a model list: some models are served by nobody.
        "groups": {"listed-only": {"channels": ["openai", "anthropic", "gemini"]}},
        "users": [{"name": "listed-user", "group": "listed-only", "balance_usd": 1.0}],
        "prices": {
            "gpt-4o-mini": {"input_per_mtok": 1, "output_per_mtok": 2},
            "fake-reasoner": {"input_per_mtok": 1, "output_per_mtok": 2},
            "claude-*": {"input_per_mtok": 1, "output_per_mtok": 5, "cached_input_per_mtok": 0.1,
                         "cache_write_per_mtok": 1.25},
            "gemini-*": {"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.5},
            "default": {"input_per_mtok": 1, "output_per_mtok": 1},
        },
    }


@dataclass
class Setup:
    gateway: Gateway
    up: Upstreams

    def client(self, key: str = CALLER) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=key, base_url=self.gateway.url, max_retries=0)


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    with upstreams() as up:
        yield Setup(gateway_factory(_config(up)), up)


@dataclass(frozen=True)
class Channel:
    name: str
    model: str
    reply: str
    input_tokens: int  # Anthropic's: without cache reads and writes
    cache_read: int
    output_tokens: int
    cost: int  # micro-USD of the plain reply

    def server(self, up: Upstreams) -> FakeServer:
        return getattr(up, self.name)

    def image_reply(self) -> str:
        return f"I see 1 image(s): image/png {len(PNG)} bytes."


OPENAI = Channel("openai", "gpt-4o-mini", "".join(openai_upstream.CHAT_REPLY), openai_upstream.PROMPT_TOKENS, 0,
                 openai_upstream.COMPLETION_TOKENS, 12 * 1 + 6 * 2)
ANTHROPIC = Channel("anthropic", "claude-3-5-haiku", "".join(anthropic_upstream.CHAT_REPLY), anthropic_upstream.INPUT_TOKENS,
                    anthropic_upstream.CACHE_READ, 4, 32)  # 9 x 1 + 3 reads x 0.1 + 2 writes x 1.25 + 4 x 5
GEMINI = Channel("gemini", "gemini-1.5-flash", "".join(gemini_upstream.CHAT_REPLY),
                 gemini_upstream.PROMPT_TOKENS - gemini_upstream.CACHED_TOKENS, gemini_upstream.CACHED_TOKENS, 4, 17)
CHANNELS = pytest.mark.parametrize("channel", [OPENAI, ANTHROPIC, GEMINI], ids=lambda c: c.name)


def _sent(setup: Setup, channel: Channel) -> dict[str, Any]:
    return orjson.loads(channel.server(setup.up).last().body)


@CHANNELS
def test_create(setup: Setup, channel: Channel) -> None:
    raw = setup.client().messages.with_raw_response.create(
        model=channel.model, max_tokens=300, system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": "Hi"}], stop_sequences=["END"], metadata={"user_id": "user-7"})
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == channel.model
    assert message.id.startswith("msg_")
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", channel.reply)]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        channel.input_tokens, channel.cache_read, channel.output_tokens)
    sent = _sent(setup, channel)
    if channel is OPENAI:
        assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        assert (sent["max_tokens"], sent["stop"], sent["user"]) == (300, ["END"], "user-7")
    elif channel is GEMINI:
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["generationConfig"] == {"maxOutputTokens": 300, "stopSequences": ["END"]}
    else:
        assert sent["model"] == "claude-3-5-haiku" and sent["system"] == [{"type": "text", "text": "Be brief."}]
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.family, row.channel_name, row.stream, row.status_code) == ("anthropic", channel.name, False, 200)
    assert row.cost_micros == channel.cost


@CHANNELS
def test_stream_and_final_message(setup: Setup, channel: Channel) -> None:
    with setup.client().messages.stream(model=channel.model, max_tokens=300,
                                        messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
        assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert text == channel.reply
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", channel.reply)]
    assert final.stop_reason == "end_turn" and final.model == channel.model
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (
        channel.input_tokens, channel.cache_read, channel.output_tokens)
    row = setup.gateway.usage_row(request_id)
    assert (row.stream, row.status_code, row.cost_micros) == (True, 200, channel.cost)


@CHANNELS
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_tools_round_trip(setup: Setup, channel: Channel, streamed: bool) -> None:
    client = setup.client()
    ask: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Weather in Paris?"}]
    if streamed:
        with client.messages.stream(model=channel.model, max_tokens=300, messages=ask, tools=[WEATHER]) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(model=channel.model, max_tokens=300, messages=ask, tools=[WEATHER],
                                       tool_choice={"type": "auto"})
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"} and uses[0].id
    answer = client.messages.create(
        model=channel.model, max_tokens=300, tools=[WEATHER],
        messages=[*ask, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny"}]}])
    assert answer.stop_reason == "end_turn"
    assert "".join(b.text for b in answer.content if b.type == "text") == "It is sunny in Paris."
    if channel is OPENAI:
        sent = _sent(setup, channel)
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": uses[0].id, "content": "Sunny"}
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


@CHANNELS
def test_image_block(setup: Setup, channel: Channel) -> None:
    message = setup.client().messages.create(
        model=channel.model, max_tokens=300,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}])
    assert message.content[0].type == "text" and message.content[0].text == channel.image_reply()


def test_image_url_reaches_an_openai_channel_as_a_url(setup: Setup) -> None:
    url = "https://images.example/cat.png"
    message = setup.client().messages.create(
        model="gpt-4o-mini", max_tokens=300,
        messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": url}}]}])
    assert message.content[0].type == "text" and message.content[0].text == f"I see 1 image(s): {url}."


def test_count_tokens_native_is_relayed_and_free(setup: Setup) -> None:
    body: dict[str, Any] = {"model": "claude-latest", "system": "Be brief.", "tools": [WEATHER],
                            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}, IMAGE]}]}
    raw = setup.client().messages.with_raw_response.count_tokens(**body)
    sent = _sent(setup, ANTHROPIC)
    assert setup.up.anthropic.last().path == "/v1/messages/count_tokens"
    assert sent == {**body, "model": "claude-3-5-haiku"}  # passed through, only the mapped model changed
    assert raw.parse().input_tokens == anthropic_upstream.count_of(sent)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.endpoint, row.status_code, row.cost_micros) == ("messages.count_tokens", 200, 0)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-1.5-flash", "deepseek-chat"])
def test_count_tokens_counted_locally_elsewhere(setup: Setup, model: str) -> None:
    before = {name: len(getattr(setup.up, name).requests) for name in ("openai", "gemini", "anthropic")}
    client = setup.client()
    short = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "Hi"}])
    longer = client.messages.count_tokens(model=model, system="You answer questions about the weather.",
                                          tools=[WEATHER], messages=[{"role": "user", "content": [
                                              {"type": "text", "text": "Weather in Paris?"}, IMAGE]}])
    assert 0 < short.input_tokens < 20 and longer.input_tokens > short.input_tokens + 1600
    assert before == {name: len(getattr(setup.up, name).requests) for name in before}, "no upstream was asked"


def test_count_tokens_refusals(setup: Setup) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        setup.client(LISTED).messages.count_tokens(model="claude-nobody-serves", messages=[{"role": "user", "content": "Hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError):  # the allow-list holds for local counts too
        setup.client(NARROW).messages.count_tokens(
            model="gemini-1.5-flash", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(anthropic.AuthenticationError):
        setup.client("sk-wrong").messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])


def test_thinking_from_a_reasoning_upstream(setup: Setup) -> None:
    client = setup.client()
    message = client.messages.create(model="fake-reasoner", max_tokens=4000, messages=[{"role": "user", "content": "Hi"}],
                                     thinking={"type": "enabled", "budget_tokens": 2048})
    assert _sent(setup, OPENAI)["reasoning_effort"] == "low"
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "".join(openai_upstream.REASONING)  # type: ignore[union-attr]
    with client.messages.stream(model="fake-reasoner", max_tokens=4000,
                                messages=[{"role": "user", "content": "Hi"}]) as stream:
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert kinds[:2] == ["thinking_delta", "thinking_delta"] and set(kinds[2:]) == {"text_delta"}
    assert final.content[0].thinking == "".join(openai_upstream.REASONING)  # type: ignore[union-attr]
    assert final.content[1].text == "".join(openai_upstream.CHAT_REPLY)  # type: ignore[union-attr]


def test_channel_without_a_model_list_serves_claude_callers(setup: Setup) -> None:
    raw = setup.client().messages.with_raw_response.create(
        model="deepseek-chat", max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert raw.parse().content[0].text == "".join(openai_upstream.CHAT_REPLY)  # type: ignore[union-attr]
    assert _sent(setup, OPENAI)["messages"][0] == {"role": "system", "content": "Be brief."}
    assert setup.gateway.usage_row(raw.headers["x-request-id"]).channel_name == "openai-any"


@pytest.mark.parametrize(("model", "message"), [
    ("upstream-rejects", "Invalid value for 'temperature'."),
    ("gemini-rejects", "generation_config.temperature: must be in [0, 2]"),
    ("claude-rejects", "max_tokens: 100000 > 8192"),
])
def test_upstream_refusals_are_typed_sdk_errors(setup: Setup, model: str, message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        setup.client().messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert message in raised.value.message
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_bridged_rate_limit_is_a_rate_limit_error(setup: Setup) -> None:
    setup.up.openai.knobs["fail_with"] = 429
    try:
        with pytest.raises(anthropic.RateLimitError) as raised:
            setup.client().messages.create(model="gpt-4o-mini", max_tokens=10,
                                           messages=[{"role": "user", "content": "Hi"}])
    finally:
        setup.up.openai.knobs.pop("fail_with")
    assert raised.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_refused_requests_and_unknown_paths_in_anthropic_shape(setup: Setup) -> None:
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        setup.client().messages.create(model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "Hi"}],
                                       tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "only served by Anthropic channels" in server_tool.value.message
    with pytest.raises(anthropic.NotFoundError):
        setup.client(LISTED).messages.create(model="nobody-serves-this", max_tokens=10,
                                       messages=[{"role": "user", "content": "Hi"}])
    headers = {"x-api-key": CALLER, "anthropic-version": "2023-06-01"}
    for method, path, status, kind in [("POST", "/v1/messages/batches", 404, "not_found_error"),
                                       ("GET", "/v1/messages/msg_123/whatever", 404, "not_found_error"),
                                       ("GET", "/v1/messages", 405, "invalid_request_error"),
                                       ("DELETE", "/v1/messages/count_tokens", 405, "invalid_request_error")]:
        response = httpx.request(method, setup.gateway.url + path, headers=headers, json={})
        assert response.status_code == status, (method, path, response.text)
        assert response.json() == {"type": "error", "error": {"type": kind, "message": response.json()["error"]["message"]}}
