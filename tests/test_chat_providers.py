"""The ``openai`` SDK against Gemini, Anthropic and Azure channels: the caller cannot tell them apart.

openai SDK -> polyrelay -> wire-accurate fake upstreams (tests/fakes). Every case runs
for both translated protocols; billing is checked on the usage-log row.
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
from tests.fakes import anthropic_upstream, gemini_upstream, openai_upstream
from tests.fakes.chat_providers import (
    ANTHROPIC_KEY,
    AZURE_API_VERSION,
    AZURE_DEPLOYMENT,
    AZURE_KEY,
    CALLER,
    GEMINI_KEY,
    Upstreams,
    config,
    upstreams,
)
from tests.fakes.image_server import PNG, PNG_DATA_URI
from tests.fakes.server import FakeServer

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@dataclass
class Setup:
    gateway: Gateway
    up: Upstreams

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key=CALLER, base_url=self.gateway.v1, max_retries=0)


@dataclass(frozen=True)
class Provider:
    name: str
    model: str
    reply: str
    prompt_tokens: int
    cached_tokens: int
    path: str

    def server(self, up: Upstreams) -> FakeServer:
        return getattr(up, self.name)

    def sent(self, up: Upstreams) -> dict[str, Any]:
        return orjson.loads(self.server(up).last().body)


GEMINI = Provider("gemini", "gemini-1.5-flash", "".join(gemini_upstream.CHAT_REPLY),
                  gemini_upstream.PROMPT_TOKENS, gemini_upstream.CACHED_TOKENS,
                  "/v1beta/models/gemini-1.5-flash:generateContent")
ANTHROPIC = Provider("anthropic", "claude-3-5-haiku", "".join(anthropic_upstream.CHAT_REPLY),
                     anthropic_upstream.INPUT_TOKENS + anthropic_upstream.CACHE_READ + anthropic_upstream.CACHE_WRITE,
                     anthropic_upstream.CACHE_READ, "/v1/messages")
PROVIDERS = pytest.mark.parametrize("provider", [GEMINI, ANTHROPIC], ids=lambda p: p.name)


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    with upstreams() as up:
        yield Setup(gateway_factory(config(up)), up)


def _hi() -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@PROVIDERS
def test_plain_chat_is_translated_and_billed(setup: Setup, provider: Provider) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(
        model=provider.model, messages=_hi(), temperature=1.5, stop="END"
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == provider.model
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", provider.reply, "stop")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == provider.prompt_tokens
    assert completion.usage.prompt_tokens_details.cached_tokens == provider.cached_tokens  # type: ignore[union-attr]

    recorded = provider.server(setup.up).last()
    sent = orjson.loads(recorded.body)
    assert recorded.path == provider.path
    if provider is GEMINI:
        assert recorded.headers["x-goog-api-key"] == GEMINI_KEY
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]
        assert sent["generationConfig"] == {"temperature": 1.5, "stopSequences": ["END"]}
        assert {s["threshold"] for s in sent["safetySettings"]} == {"BLOCK_NONE"}
    else:
        assert recorded.headers["x-api-key"] == ANTHROPIC_KEY
        assert recorded.headers["anthropic-version"] == "2023-06-01"
        assert sent["system"] == "Be brief." and sent["max_tokens"] == 4096
        assert sent["temperature"] == 1.0 and sent["stop_sequences"] == ["END"]

    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.status_code, row.usage_source) == (provider.name, 200, "upstream")
    assert (row.prompt_tokens, row.cached_tokens) == (provider.prompt_tokens, provider.cached_tokens)
    if provider is GEMINI:  # 7 input x 1 + 4 cached x 0.5 + 4 output x 2 micro-USD
        assert (row.completion_tokens, row.cost_micros) == (4, 17)
    else:  # 9 input x 1 + 3 cache reads x 0.1 + 2 cache writes x 1.25 + 4 output x 5 = 31.8
        assert (row.completion_tokens, row.cost_micros) == (4, 32)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_claude_cache_reads_and_writes_are_billed_at_their_own_prices(setup: Setup, stream: bool) -> None:
    """claude-* costs 1 USD/Mtok input, 0.1 cache read, 1.25 cache write, 5 output (tests/fakes/chat_providers)."""
    raw = setup.client().chat.completions.with_raw_response.create(
        model=ANTHROPIC.model, messages=_hi(), stream=stream
    )
    if stream:
        list(raw.parse())
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (anthropic_upstream.INPUT_TOKENS, anthropic_upstream.CACHE_READ, anthropic_upstream.CACHE_WRITE) == (9, 3, 2)
    assert (row.stream, row.prompt_tokens, row.cached_tokens, row.cache_write_tokens, row.completion_tokens) == (
        stream, 9 + 3 + 2, 3, 2, 4)
    # In micro-micro-USD: 9 x 1_000_000 + 3 x 100_000 + 2 x 1_250_000 + 4 x 5_000_000 = 31_800_000,
    # rounded once to 32 micro-USD. Cache writes at the input price would give 31 (31.3),
    # at the cache-read price 30 (29.5), unbilled 29 (29.3).
    assert row.cost_micros == 32


@PROVIDERS
def test_stream_is_translated_chunk_by_chunk(setup: Setup, provider: Provider) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(
        model=provider.model, messages=_hi(), stream=True
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert all(c.object == "chat.completion.chunk" and c.choices for c in chunks), "a usage chunk nobody asked for"
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == provider.reply
    assert len([c for c in chunks if c.choices[0].delta.content]) >= 4  # really streamed, not one blob
    assert chunks[-1].choices[0].finish_reason == "stop"
    if provider is ANTHROPIC:
        assert provider.sent(setup.up)["stream"] is True
    else:
        assert provider.server(setup.up).last().query == "alt=sse"
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.stream, row.prompt_tokens, row.completion_tokens, row.usage_source) == (
        True, provider.prompt_tokens, 4, "upstream")


@PROVIDERS
def test_stream_usage_chunk_when_asked(setup: Setup, provider: Provider) -> None:
    chunks = list(setup.client().chat.completions.create(
        model=provider.model, messages=_hi(), stream=True, stream_options={"include_usage": True}
    ))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (provider.prompt_tokens, 4)
    assert all(c.usage is None for c in chunks[:-1])


@PROVIDERS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tools_round_trip(setup: Setup, provider: Provider, stream: bool) -> None:
    client = setup.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        chunks = list(client.chat.completions.create(
            model=provider.model, messages=messages, tools=[WEATHER_TOOL], tool_choice="auto", stream=True  # type: ignore[list-item]
        ))
        calls: dict[int, dict[str, str]] = {}
        for chunk in chunks:
            for delta in chunk.choices[0].delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function.name or "") if delta.function else ""
                call["arguments"] += (delta.function.arguments or "") if delta.function else ""
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert list(calls) == [0]
        call_id, name, arguments = calls[0]["id"], calls[0]["name"], calls[0]["arguments"]
    else:
        completion = client.chat.completions.create(
            model=provider.model, messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"  # type: ignore[list-item]
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        tool_call = choice.message.tool_calls[0]
        assert tool_call.type == "function"
        call_id, name, arguments = tool_call.id, tool_call.function.name, tool_call.function.arguments
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"} and call_id

    sent = provider.sent(setup.up)
    if provider is GEMINI:
        declaration = sent["tools"][0]["functionDeclarations"][0]
        assert declaration["name"] == "get_weather" and "additionalProperties" not in declaration["parameters"]
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    else:
        assert sent["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
        assert sent["tool_choice"] == {"type": "auto"}

    messages += [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"forecast": "sunny"}'},
    ]
    answer = client.chat.completions.create(model=provider.model, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert answer.choices[0].message.content == "It is sunny in Paris."
    assert answer.choices[0].finish_reason == "stop"
    sent = provider.sent(setup.up)
    if provider is GEMINI:
        assert sent["contents"][1] == {"role": "model",
                                       "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}
        assert sent["contents"][2] == {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"forecast": "sunny"}}}]}
    else:
        assert sent["messages"][1]["content"] == [
            {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}]
        assert sent["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": call_id, "content": '{"forecast": "sunny"}'}]


@PROVIDERS
def test_vision_with_a_data_uri(setup: Setup, provider: Provider) -> None:
    completion = setup.client().chat.completions.create(model=provider.model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_DATA_URI, "detail": "low"}},
    ]}])
    assert completion.choices[0].message.content == f"I see 1 image(s): image/png {len(PNG)} bytes."


@PROVIDERS
def test_vision_with_a_loopback_url_is_refused_by_default(setup: Setup, provider: Provider) -> None:
    before = len(provider.server(setup.up).requests)
    with pytest.raises(openai.BadRequestError) as info:
        setup.client().chat.completions.create(model=provider.model, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": setup.up.images.url + "/cat.png"}},
        ]}])
    assert "messages[0].content[1].image_url" in str(info.value) and "not a public address" in str(info.value)
    assert info.value.code == "invalid_image_url"
    assert len(provider.server(setup.up).requests) == before, "the upstream must not be called"
    assert not setup.up.images.requests, "the private host must not even be contacted"


@PROVIDERS
@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
def test_json_mode(setup: Setup, provider: Provider, kind: str) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": ["integer", "null"]}}, "required": ["answer"],
              "additionalProperties": False}
    response_format: dict[str, Any] = {"type": kind}
    if kind == "json_schema":
        response_format["json_schema"] = {"name": "answer", "schema": schema, "strict": True}
    completion = setup.client().chat.completions.create(
        model=provider.model, messages=_hi(), response_format=response_format  # type: ignore[arg-type]
    )
    assert json.loads(completion.choices[0].message.content or "") == {"answer": 42}
    sent = provider.sent(setup.up)
    if provider is GEMINI:
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
        if kind == "json_schema":
            assert sent["generationConfig"]["responseSchema"] == {
                "type": "object", "properties": {"answer": {"type": "integer", "nullable": True}},
                "required": ["answer"]}
    else:
        assert "JSON" in sent["system"] and sent["system"].startswith("Be brief.")
        assert (kind == "json_schema") == ('"additionalProperties":false' in sent["system"])


@PROVIDERS
def test_max_tokens_maps_and_length_finish(setup: Setup, provider: Provider) -> None:
    completion = setup.client().chat.completions.create(model=provider.model, messages=_hi(), max_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    sent = provider.sent(setup.up)
    assert (sent["generationConfig"]["maxOutputTokens"] if provider is GEMINI else sent["max_tokens"]) == 2


def test_gemini_candidate_count_and_model_mapping(setup: Setup) -> None:
    completion = setup.client().chat.completions.create(model="gemini-pro", messages=_hi(), n=2)
    assert [c.index for c in completion.choices] == [0, 1] and completion.model == "gemini-pro"
    recorded = setup.up.gemini.last()
    assert recorded.path == "/v1beta/models/gemini-1.5-flash:generateContent"
    assert orjson.loads(recorded.body)["generationConfig"]["candidateCount"] == 2


def test_anthropic_overloaded_fails_over(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(model="claude-3-opus", messages=_hi())
    assert raw.parse().choices[0].message.content == ANTHROPIC.reply
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.attempts, row.status_code) == ("anthropic", 2, 200)
    assert setup.up.overloaded.requests, "the busy channel (priority 20) was tried first"


def test_anthropic_overloaded_everywhere_is_a_server_error(setup: Setup) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        setup.client().chat.completions.create(model="claude-busy-only", messages=_hi())
    assert info.value.status_code == 529 and "Overloaded" in info.value.message
    assert info.value.code == "overloaded_error"  # type: ignore[attr-defined]


def test_provider_client_errors_are_bad_requests(setup: Setup) -> None:
    with pytest.raises(openai.BadRequestError, match="temperature: must be in") as info:
        setup.client().chat.completions.create(model="gemini-rejects", messages=_hi())
    assert info.value.code == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="max_tokens: 100000 > 8192"):
        setup.client().chat.completions.create(model="claude-rejects", messages=_hi())


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_gemini_embeddings(setup: Setup, encoding: str) -> None:
    raw = setup.client().embeddings.with_raw_response.create(
        model="text-embedding-004", input=["one", "two words"], encoding_format=encoding  # type: ignore[arg-type]
    )
    result = raw.parse()
    vectors = [item.embedding for item in result.data] if encoding == "float" else None
    if encoding == "base64":  # the SDK leaves base64 strings alone when asked for them explicitly
        import base64
        import struct
        vectors = [list(struct.unpack(f"<{gemini_upstream.EMBEDDING_DIM}f", base64.b64decode(item.embedding)))  # type: ignore[arg-type]
                   for item in result.data]
    assert vectors is not None
    for index, vector in enumerate(vectors):
        assert vector == pytest.approx(gemini_upstream.embedding_vector(index))
    sent = setup.up.gemini.last()
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert orjson.loads(sent.body)["requests"][1]["content"] == {"parts": [{"text": "two words"}]}
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert row.prompt_tokens == result.usage.prompt_tokens == 3 and row.usage_source == "counted"


def test_azure_deployment_url_version_and_key(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(model="gpt-4o-azure", messages=_hi())
    assert raw.parse().choices[0].message.content == "".join(openai_upstream.CHAT_REPLY)
    recorded = setup.up.azure.last()
    assert recorded.path == f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"
    assert recorded.query == f"api-version={AZURE_API_VERSION}"
    assert recorded.headers["api-key"] == AZURE_KEY  # and no Authorization header: the fake refuses that
    assert orjson.loads(recorded.body)["model"] == "gpt-4o"
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.upstream_model, row.prompt_tokens) == ("azure", "gpt-4o", openai_upstream.PROMPT_TOKENS)

    chunks = list(setup.client().chat.completions.create(model="gpt-4o-azure", messages=_hi(), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(openai_upstream.CHAT_REPLY)
    assert all(c.choices for c in chunks)


def test_gizmo_id_routes_and_bills_by_wildcard(setup: Setup) -> None:
    raw = setup.client().chat.completions.with_raw_response.create(model="gpt-4-gizmo-g-abc123", messages=_hi())
    assert raw.parse().choices[0].message.content == "".join(openai_upstream.CHAT_REPLY)
    assert orjson.loads(setup.up.openai.last().body)["model"] == "gpt-4-gizmo-g-abc123"
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    # "gpt-4-gizmo-*": 12 prompt x 10 + 6 completion x 30 micro-USD
    assert (row.channel_name, row.price_set, row.cost_micros) == ("gpts", True, 300)
