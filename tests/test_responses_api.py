"""The ``openai`` SDK's Responses API through polyrelay, on every kind of channel side by side.

Native on OpenAI channels (the body passes through, usage read from the reply or the
``response.completed`` event); translated through chat on an OpenAI-compatible channel
with ``responses: false``, on Anthropic and on Gemini. The SDK cannot tell them apart:
the same calls, events and tool round trip work on each. Stored-response calls
(retrieve, input items, cancel, delete) reach the native channels that hold the response.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import Gateway
from tests.fakes import anthropic_upstream, gemini_upstream, openai_responses, openai_upstream
from tests.fakes.chat_providers import (
    ANTHROPIC_KEY,
    AZURE_DEPLOYMENT,
    AZURE_KEY,
    CALLER,
    GEMINI_KEY,
    OPENAI_KEY,
    Upstreams,
    upstreams,
)
from tests.fakes.image_server import PNG, PNG_DATA_URI
from tests.fakes.server import FakeServer

COMPAT_KEY = "sk-compat-upstream-key"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False},
           "strict": True}


@dataclass(frozen=True)
class Channel:
    name: str  # the channel's name in the config, also the test id
    model: str
    reply: str
    input_tokens: int
    cached_tokens: int
    cost_micros: int  # of one plain "Hi" call, by the prices below

    @property
    def native(self) -> bool:
        return self.name == "openai"


NATIVE = Channel("openai", "gpt-4o", "".join(openai_responses.REPLY), openai_responses.INPUT_TOKENS,
                 openai_responses.CACHED_TOKENS, 23)  # 10 input x 1 + 2 cached x 0.5 + 6 output x 2 micro-USD
COMPAT = Channel("compat", "gpt-compat", "".join(openai_upstream.CHAT_REPLY), openai_upstream.PROMPT_TOKENS, 0,
                 24)  # 12 input x 1 + 6 output x 2
ANTHROPIC = Channel("anthropic", "claude-3-5-haiku", "".join(anthropic_upstream.CHAT_REPLY), 9 + 3 + 2, 3, 32)
GEMINI = Channel("gemini", "gemini-1.5-flash", "".join(gemini_upstream.CHAT_REPLY), gemini_upstream.PROMPT_TOKENS,
                 gemini_upstream.CACHED_TOKENS, 17)
CHANNELS = pytest.mark.parametrize("channel", [NATIVE, COMPAT, ANTHROPIC, GEMINI], ids=lambda c: c.name)


@dataclass
class Setup:
    gateway: Gateway
    up: Upstreams
    compat: FakeServer  # an OpenAI-compatible server whose Responses API the channel says it lacks
    second: FakeServer  # another native OpenAI channel, tried first for stored responses

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key=CALLER, base_url=self.gateway.v1, max_retries=0)

    def server(self, channel: Channel) -> FakeServer:
        return self.compat if channel is COMPAT else getattr(self.up, channel.name)


def _config(up: Upstreams, compat: FakeServer, second: FakeServer) -> dict[str, Any]:
    return {
        "channels": [
            {"name": "openai", "type": "openai", "base_url": up.openai.url, "keys": [OPENAI_KEY],
             "models": ["gpt-4o", "o4-mini", "gpt-both"], "model_mapping": {"gpt-latest": "gpt-4o"}},
            {"name": "second", "type": "openai", "base_url": second.url, "keys": ["sk-second"],
             "models": ["gpt-second"], "priority": 10},
            {"name": "compat", "type": "openai", "base_url": compat.url, "keys": [COMPAT_KEY],
             "models": ["gpt-compat", "gpt-both"], "model_mapping": {"gpt-compat": "llama-3-70b"}, "priority": 10,
             "options": {"responses": False}},
            {"name": "anthropic", "type": "anthropic", "base_url": up.anthropic.url, "keys": [ANTHROPIC_KEY],
             "models": ["claude-3-5-haiku", "claude-rejects"]},
            {"name": "azure", "type": "azure", "base_url": up.azure.url, "keys": [AZURE_KEY],
             "models": ["gpt-4o-azure"], "options": {"deployments": {"gpt-4o-azure": AZURE_DEPLOYMENT}}},
            # A task channel: stored-response calls must pass it by (it has no relay adaptor at all).
            {"name": "mj", "type": "midjourney", "base_url": "http://127.0.0.1:9", "keys": ["mj-key"], "priority": 20},
            # No model list: serves every model of its kinds, so it goes last.
            {"name": "gemini", "type": "gemini", "base_url": up.gemini.url, "keys": [GEMINI_KEY], "priority": -10},
        ],
        "tokens": [{"name": "caller", "key": CALLER, "quota_usd": 10.0}],
        "prices": {
            "gpt-*": {"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.5},
            "o4-mini": {"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.5},
            "gemini-*": {"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.5},
            "claude-*": {"input_per_mtok": 1, "output_per_mtok": 5, "cached_input_per_mtok": 0.1,
                         "cache_write_per_mtok": 1.25},
        },
    }


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    compat = FakeServer(openai_upstream.create_app({COMPAT_KEY})).start()
    second = FakeServer(openai_upstream.create_app({"sk-second"})).start()
    try:
        with upstreams() as up:
            yield Setup(gateway_factory(_config(up, compat, second)), up, compat, second)
    finally:
        compat.stop()
        second.stop()


def _sent(setup: Setup, channel: Channel) -> tuple[str, dict[str, Any]]:
    recorded = setup.server(channel).last()
    return recorded.path, orjson.loads(recorded.body)


@CHANNELS
def test_plain_response_is_answered_and_billed(setup: Setup, channel: Channel) -> None:
    raw = setup.client().responses.with_raw_response.create(
        model=channel.model, input="Hi", instructions="Be brief.", temperature=0.5, max_output_tokens=100)
    response = raw.parse()
    assert (response.object, response.status, response.output_text) == ("response", "completed", channel.reply)
    assert response.id.startswith("resp_") and response.output[-1].type == "message"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens) == (
        channel.input_tokens, channel.cached_tokens)
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    path, sent = _sent(setup, channel)
    if channel is NATIVE:  # passed through as the SDK sent it
        assert (path, sent) == ("/v1/responses", {"model": "gpt-4o", "input": "Hi", "instructions": "Be brief.",
                                                  "temperature": 0.5, "max_output_tokens": 100})
    elif channel is COMPAT:
        assert path == "/v1/chat/completions" and not setup.compat.requests[-1].path.endswith("responses")
        assert sent == {"model": "llama-3-70b", "temperature": 0.5, "max_tokens": 100, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    elif channel is ANTHROPIC:
        assert (sent["system"], sent["messages"], sent["max_tokens"]) == (
            "Be brief.", [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], 100)
    else:
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 100}

    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.endpoint, row.status_code) == (channel.name, "responses", 200)
    assert (row.prompt_tokens, row.cached_tokens, row.cost_micros) == (
        channel.input_tokens, channel.cached_tokens, channel.cost_micros)


@CHANNELS
def test_stream_is_typed_events_in_order(setup: Setup, channel: Channel) -> None:
    raw = setup.client().responses.with_raw_response.create(model=channel.model, input="Hi", stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = list(raw.parse())
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    tail = types.index("response.output_text.done")
    assert types[tail:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                            "response.completed"]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) >= 4, "streamed in pieces, not one blob"
    assert "".join(event.delta for event in deltas) == channel.reply
    item_ids = {event.item_id for event in deltas}
    added = next(e for e in events if e.type == "response.output_item.added" and e.item.type == "message")
    assert item_ids == {added.item.id} and {e.output_index for e in deltas} == {added.output_index}
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == channel.reply and final.usage is not None
    assert final.usage.input_tokens == channel.input_tokens

    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.stream, row.channel_name, row.prompt_tokens, row.usage_source) == (
        True, channel.name, channel.input_tokens, "upstream")
    assert row.completion_tokens == final.usage.output_tokens


@pytest.mark.parametrize("channel", [NATIVE, ANTHROPIC], ids=lambda c: c.name)
def test_stream_helper_assembles_the_final_response(setup: Setup, channel: Channel) -> None:
    with setup.client().responses.stream(model=channel.model, input="Hi") as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == channel.reply


@CHANNELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tools_round_trip(setup: Setup, channel: Channel, stream: bool) -> None:
    client = setup.client()
    question: list[Any] = [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}]
    if stream:
        events = list(client.responses.create(model=channel.model, input=question, tools=[WEATHER],  # type: ignore[list-item]
                                              tool_choice="auto", stream=True))
        call = events[-1].response.output[-1]  # type: ignore[union-attr]
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        added = next(e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call")
        assert deltas == done.arguments == call.arguments  # type: ignore[union-attr]
        assert done.item_id == added.item.id == call.id and done.output_index == added.output_index  # type: ignore[union-attr]
    else:
        call = client.responses.create(model=channel.model, input=question, tools=[WEATHER],  # type: ignore[list-item]
                                       tool_choice="auto").output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments) == {"city": "Paris"}
    _, sent = _sent(setup, channel)
    if channel is COMPAT:
        assert sent["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
        assert sent["tool_choice"] == "auto"

    answer = client.responses.create(model=channel.model, tools=[WEATHER], input=[  # type: ignore[list-item]
        *question, call, {"type": "function_call_output", "call_id": call.call_id, "output": '{"forecast": "sunny"}'}])
    assert answer.output_text == "It is sunny in Paris."
    _, sent = _sent(setup, channel)
    if channel is ANTHROPIC:
        assert sent["messages"][1:] == [
            {"role": "assistant", "content": [{"type": "tool_use", "id": call.call_id, "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.call_id,
                                          "content": '{"forecast": "sunny"}'}]}]
    elif channel is GEMINI:
        assert sent["contents"][2] == {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"forecast": "sunny"}}}]}


def test_reasoning_tokens_are_billed_as_output(setup: Setup) -> None:
    raw = setup.client().responses.with_raw_response.create(model="o4-mini", input="Hi", stream=True)
    final = list(raw.parse())[-1].response  # type: ignore[union-attr]
    assert final.output[0].type == "reasoning"
    assert final.usage.output_tokens_details.reasoning_tokens == openai_responses.REASONING_TOKENS
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    # 10 input x 1 + 2 cached x 0.5 + (6 text + 3 reasoning) output x 2 micro-USD
    assert (row.completion_tokens, row.cost_micros) == (9, 29)


def test_stored_response_retrieved_listed_and_deleted(setup: Setup) -> None:
    client = setup.client()
    created = client.responses.create(model="gpt-latest", input="Hi")
    assert orjson.loads(setup.up.openai.last("/v1/responses").body)["model"] == "gpt-4o"  # mapped
    before = len(setup.second.requests)
    retrieved = client.responses.retrieve(created.id)
    assert (retrieved.id, retrieved.output_text) == (created.id, created.output_text)
    assert len(setup.second.requests) == before + 1, "the higher-priority native channel was asked first (404)"
    assert not any(r.path.startswith("/v1/responses") for r in setup.compat.requests), "it stores nothing"

    with pytest.raises(openai.BadRequestError, match="Streaming a stored response again is not supported"):
        list(client.responses.retrieve(created.id, stream=True))

    items = client.responses.input_items.list(created.id, order="asc", limit=5)
    assert [item.type for item in items.data] == ["message"]
    assert setup.up.openai.last().query == "limit=5&order=asc"  # relayed as the SDK sent it

    follow_up = client.responses.create(model="gpt-4o", input="And then?", previous_response_id=created.id)
    assert follow_up.previous_response_id == created.id

    with pytest.raises(openai.BadRequestError, match="Cannot cancel a synchronous response"):
        client.responses.cancel(created.id)
    background = client.responses.create(model="gpt-4o", input="Hi", background=True)
    assert client.responses.cancel(background.id).status == "cancelled"

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError, match=f"Response with id '{created.id}' not found"):
        client.responses.retrieve(created.id)


@pytest.mark.parametrize("channel", [COMPAT, ANTHROPIC, GEMINI], ids=lambda c: c.name)
def test_translated_channels_refuse_what_needs_the_upstream_clearly(setup: Setup, channel: Channel) -> None:
    client = setup.client()
    before = len(setup.server(channel).requests)
    with pytest.raises(openai.BadRequestError, match="'previous_response_id' is not supported here") as info:
        client.responses.create(model=channel.model, input="Hi", previous_response_id="resp_123")
    assert info.value.param == "previous_response_id"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="built-in tools") as info:
        client.responses.create(model=channel.model, input="Hi", tools=[{"type": "web_search"}])
    assert info.value.param == "tools[0]"  # type: ignore[attr-defined]
    assert len(setup.server(channel).requests) == before, "nothing was sent upstream"


def test_a_follow_up_goes_to_the_native_channel_though_a_bridged_one_comes_first(setup: Setup) -> None:
    client = setup.client()
    plain = client.responses.create(model="gpt-both", input="Hi")
    assert plain.output_text == COMPAT.reply, "the higher-priority channel (bridged through chat) answered"
    assert setup.compat.last().path == "/v1/chat/completions"
    created = client.responses.create(model="gpt-4o", input="Hi")
    native_before = len(setup.up.openai.requests)
    follow_up = client.responses.create(model="gpt-both", input="And then?", previous_response_id=created.id)
    assert follow_up.previous_response_id == created.id
    assert len(setup.up.openai.requests) == native_before + 1
    assert setup.up.openai.last().path == "/v1/responses"


def test_upstream_errors_reach_the_sdk_typed(setup: Setup) -> None:
    client = setup.client()
    with pytest.raises(openai.BadRequestError, match="Expected a value >= 16, but got 2 instead") as info:
        client.responses.create(model="gpt-4o", input="Hi", max_output_tokens=2)
    assert info.value.code == "integer_below_min_value"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="max_tokens: 100000 > 8192"):
        client.responses.create(model="claude-rejects", input="Hi")


def test_json_schema_and_image_input_are_translated(setup: Setup) -> None:
    client = setup.client()
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    response = client.responses.create(model=GEMINI.model, input="Answer?", text={
        "format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
    assert json.loads(response.output_text) == {"answer": 42}
    assert setup.up.gemini.last().body.count(b'"responseMimeType":"application/json"') == 1
    seen = client.responses.create(model=ANTHROPIC.model, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": PNG_DATA_URI, "detail": "low"}]}])
    assert seen.output_text == f"I see 1 image(s): image/png {len(PNG)} bytes."


def test_azure_channels_serve_responses_through_their_chat_deployment(setup: Setup) -> None:
    raw = setup.client().responses.with_raw_response.create(model="gpt-4o-azure", input="Hi")
    assert raw.parse().output_text == "".join(openai_upstream.CHAT_REPLY)
    assert setup.up.azure.last().path == f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.prompt_tokens, row.cost_micros) == ("azure", openai_upstream.PROMPT_TOKENS, 24)
