"""Google's own SDK (google-genai, its default API version ``v1``) against Gemini, OpenAI and Anthropic channels.

google-genai SDK -> polyrelay -> wire-accurate fakes (tests/fakes). On a ``gemini`` channel
the body passes through; on the others it goes through the Gemini dialect and the
channel's chat (or embeddings) translation. The caller sees Gemini's shapes either way,
and billing comes from the upstream's usage, whatever the dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from polyrelay.billing import tokenizer
from tests.conftest import Gateway
from tests.fakes import anthropic_upstream, gemini_upstream, openai_upstream
from tests.fakes.chat_providers import ANTHROPIC_KEY, CALLER, GEMINI_KEY, OPENAI_KEY, Upstreams, upstreams
from tests.fakes.image_server import PNG
from tests.fakes.server import FakeServer

# Bytes after the PNG's end so that the SDK's URL-safe base64 holds "-" and "_".
IMAGE = PNG + b"\xfb\xef\xff"
QUESTION = "What is the weather in Paris?"
WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="The weather in a city.",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)},
                            required=["city"]))])
MANUAL_TOOLS = types.GenerateContentConfig(
    tools=[WEATHER], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))


@dataclass(frozen=True)
class Channel:
    name: str  # the channel's (and its fake's) name
    model: str
    embed_model: str | None
    reply: str
    prompt_tokens: int
    completion_tokens: int

    def server(self, up: Upstreams) -> FakeServer:
        return getattr(up, self.name)


GEMINI = Channel("gemini", "gemini-2.0-flash", "text-embedding-004", "".join(gemini_upstream.CHAT_REPLY),
                 gemini_upstream.PROMPT_TOKENS, 4)
OPENAI = Channel("openai", "gpt-4o", "text-embedding-3-small", "".join(openai_upstream.CHAT_REPLY),
                 openai_upstream.PROMPT_TOKENS, openai_upstream.COMPLETION_TOKENS)
ANTHROPIC = Channel("anthropic", "claude-3-5-haiku", None, "".join(anthropic_upstream.CHAT_REPLY),
                    anthropic_upstream.INPUT_TOKENS + anthropic_upstream.CACHE_READ + anthropic_upstream.CACHE_WRITE, 4)
CHANNELS = pytest.mark.parametrize("channel", [GEMINI, OPENAI, ANTHROPIC], ids=lambda c: c.name)
EMBEDDERS = pytest.mark.parametrize("channel", [GEMINI, OPENAI], ids=lambda c: c.name)


def _config(up: Upstreams) -> dict[str, Any]:
    return {
        "cooldown_after_failures": 1000,  # the error tests make channels fail: never cool one down
        "channels": [
            {"name": "gemini", "type": "gemini", "base_url": up.gemini.url, "keys": [GEMINI_KEY], "priority": 10,
             "models": ["gemini-2.0-flash", "gemini-rejects", "gemini-unpriced", "text-embedding-004",
                        "embedding-alias"],
             "model_mapping": {"embedding-alias": "text-embedding-004"}},
            {"name": "openai", "type": "openai", "base_url": up.openai.url, "keys": [OPENAI_KEY], "priority": 10,
             "models": ["gpt-4o", "upstream-rejects", "text-embedding-3-small"]},
            # No model list: it serves every model of its kinds, after the channels above.
            {"name": "anthropic", "type": "anthropic", "base_url": up.anthropic.url, "keys": [ANTHROPIC_KEY]},
        ],
        "tokens": [{"name": "caller", "key": CALLER, "quota_usd": 10.0}],
        "prices": {
            "gemini-2.0-flash": {"input_per_mtok": 1, "output_per_mtok": 2},
            "gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10},
            "claude-*": {"input_per_mtok": 1, "output_per_mtok": 5},
            "*-rejects": {"input_per_mtok": 1, "output_per_mtok": 1},
            "text-embedding-*": {"input_per_mtok": 1},
            "embedding-alias": {"input_per_mtok": 1},
        },
    }


@dataclass
class Setup:
    gateway: Gateway
    up: Upstreams
    sdk: genai.Client  # held: a client closes its connections once collected

    def client(self) -> genai.Client:
        return self.sdk

    def row(self, response: Any) -> Any:
        return self.gateway.usage_row(response.sdk_http_response.headers["x-request-id"])


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    with upstreams() as up:
        gateway = gateway_factory(_config(up))
        # No api_version: the SDK's default (v1 in google-genai 3.x) is what callers get.
        options = types.HttpOptions(base_url=gateway.url, retry_options=types.HttpRetryOptions(attempts=1))
        with genai.Client(api_key=CALLER, http_options=options) as client:
            yield Setup(gateway, up, client)


def _sent(setup: Setup, channel: Channel) -> dict[str, Any]:
    return orjson.loads(channel.server(setup.up).last().body)


@CHANNELS
def test_generate(setup: Setup, channel: Channel) -> None:
    config = types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.5, max_output_tokens=200,
                                         stop_sequences=["END"])
    response = setup.client().models.generate_content(model=channel.model, contents="Hi", config=config)
    assert response.text == channel.reply
    candidate = response.candidates[0]  # type: ignore[index]
    assert candidate.finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (channel.prompt_tokens, channel.completion_tokens)
    assert usage.total_token_count == channel.prompt_tokens + channel.completion_tokens
    recorded = channel.server(setup.up).last()
    sent = orjson.loads(recorded.body)
    if channel is GEMINI:
        assert recorded.path == "/v1beta/models/gemini-2.0-flash:generateContent"  # the body as the SDK sent it
        assert sent["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    elif channel is OPENAI:
        assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.5, 200, ["END"])
    else:
        assert (sent["system"], sent["max_tokens"], sent["stop_sequences"]) == ("Be brief.", 200, ["END"])
    row = setup.row(response)
    assert (row.family, row.channel_name, row.status_code) == ("gemini", channel.name, 200)
    assert (row.prompt_tokens, row.completion_tokens) == (channel.prompt_tokens, channel.completion_tokens)
    assert row.cost_micros > 0


@CHANNELS
def test_stream(setup: Setup, channel: Channel) -> None:
    chunks = list(setup.client().models.generate_content_stream(model=channel.model, contents="Hi"))
    assert "".join(chunk.text or "" for chunk in chunks) == channel.reply
    assert len([chunk for chunk in chunks if chunk.text]) >= 4  # really streamed, not one blob
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert last.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == channel.completion_tokens
    if channel is GEMINI:
        assert channel.server(setup.up).last().query == "alt=sse"
    else:
        assert _sent(setup, channel)["stream"] is True
    row = setup.row(last)
    assert (row.stream, row.prompt_tokens, row.completion_tokens, row.usage_source) == (
        True, channel.prompt_tokens, channel.completion_tokens, "upstream")


@CHANNELS
def test_function_call_round_trip(setup: Setup, channel: Channel) -> None:
    client = setup.client()
    first = client.models.generate_content(model=channel.model, contents=QUESTION, config=MANUAL_TOOLS)
    assert first.function_calls is not None
    call = first.function_calls[0]
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    history = [
        types.Content(role="user", parts=[types.Part(text=QUESTION)]),
        first.candidates[0].content,  # type: ignore[index]
        types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather",
                                                                            response={"forecast": "sunny"})]),
    ]
    second = client.models.generate_content(model=channel.model, contents=history, config=MANUAL_TOOLS)
    assert second.text == gemini_upstream.TOOL_ANSWER == openai_upstream.TOOL_ANSWER == anthropic_upstream.TOOL_ANSWER
    sent = _sent(setup, channel)
    if channel is OPENAI:  # the call's id came back with the model turn and answers it
        assert sent["messages"][-2]["tool_calls"][0]["id"] == openai_upstream.TOOL_CALL_ID
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": openai_upstream.TOOL_CALL_ID,
                                        "content": '{"forecast":"sunny"}'}
    elif channel is ANTHROPIC:
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == anthropic_upstream.TOOL_ID


@CHANNELS
def test_streamed_function_call(setup: Setup, channel: Channel) -> None:
    chunks = list(setup.client().models.generate_content_stream(model=channel.model, contents=QUESTION,
                                                                config=MANUAL_TOOLS))
    calls = [call for chunk in chunks for call in chunk.function_calls or ()]
    assert [(call.name, call.args) for call in calls] == [("get_weather", {"city": "Paris"})]  # whole, once
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]


@CHANNELS
def test_image_part(setup: Setup, channel: Channel) -> None:
    contents = [types.Part.from_bytes(data=IMAGE, mime_type="image/png"), "What is in this image?"]
    response = setup.client().models.generate_content(model=channel.model, contents=contents)
    assert response.text == f"I see 1 image(s): image/png {len(IMAGE)} bytes."
    if channel is GEMINI:  # the SDK's own spelling reached the upstream, which takes it as Google does
        part = _sent(setup, channel)["contents"][0]["parts"][0]
        assert set(part["inlineData"]) == {"mime_type", "data"} and "_" in part["inlineData"]["data"]


@CHANNELS
def test_count_tokens_is_free(setup: Setup, channel: Channel) -> None:
    text = "How many tokens are in these words"
    sent_before = len(channel.server(setup.up).requests)
    counted = setup.client().models.count_tokens(model=channel.model, contents=text)
    if channel is GEMINI:
        assert counted.total_tokens == len(text.split())  # the upstream's own count
        row = setup.row(counted)
        assert (row.endpoint, row.cost_micros) == ("gemini.countTokens", 0)
    else:  # no Gemini channel serves the model: counted here
        assert counted.total_tokens == tokenizer.count_text(channel.model, text)
        assert len(channel.server(setup.up).requests) == sent_before  # nothing was sent upstream for it


def test_count_tokens_needs_no_price(setup: Setup) -> None:
    client = setup.client()
    assert client.models.count_tokens(model="gemini-unpriced", contents="one two three").total_tokens == 3
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model="gemini-unpriced", contents="Hi")
    assert refused.value.code == 403 and "no price" in str(refused.value.message)


@EMBEDDERS
def test_embed(setup: Setup, channel: Channel) -> None:
    assert channel.embed_model is not None
    vector = openai_upstream.embedding_vector if channel is OPENAI else gemini_upstream.embedding_vector
    client = setup.client()
    single = client.models.embed_content(model=channel.embed_model, contents="Hello")
    assert [e.values for e in single.embeddings or ()] == [pytest.approx(vector(0))]
    batch = client.models.embed_content(model=channel.embed_model, contents=["Hello", "World"],
                                        config=types.EmbedContentConfig(output_dimensionality=4))
    assert [e.values for e in batch.embeddings or ()] == [pytest.approx(vector(0)[:4]), pytest.approx(vector(1)[:4])]
    if channel is OPENAI:
        assert _sent(setup, channel) == {"model": channel.embed_model, "input": ["Hello", "World"],
                                         "encoding_format": "float", "dimensions": 4}
    row = setup.row(batch)
    expected = 10 if channel is OPENAI else tokenizer.count_text(channel.embed_model, "Hello\nWorld")
    assert (row.endpoint, row.prompt_tokens) == ("gemini.batchEmbedContents", expected)
    assert row.cost_micros > 0


@EMBEDDERS
def test_embed_content_rest(setup: Setup, channel: Channel) -> None:
    """embedContent, which the SDK no longer calls on the Gemini API but REST callers do."""
    response = httpx.post(f"{setup.gateway.url}/v1beta/models/{channel.embed_model}:embedContent",
                          headers={"x-goog-api-key": CALLER},
                          json={"content": {"parts": [{"text": "Hello"}]}, "outputDimensionality": 3,
                                "taskType": "RETRIEVAL_QUERY"})
    assert response.status_code == 200, response.text
    vector = openai_upstream.embedding_vector if channel is OPENAI else gemini_upstream.embedding_vector
    assert response.json() == {"embedding": {"values": pytest.approx(vector(0)[:3])}}


def test_mapped_embedding_model_in_batch(setup: Setup) -> None:
    batch = setup.client().models.embed_content(model="embedding-alias", contents=["a", "b"])
    assert len(batch.embeddings or ()) == 2
    sent = orjson.loads(setup.up.gemini.last().body)
    assert {r["model"] for r in sent["requests"]} == {"models/text-embedding-004"}  # as Google checks it


def test_no_embeddings_on_anthropic(setup: Setup) -> None:
    with pytest.raises(errors.ClientError) as refused:
        setup.client().models.embed_content(model=ANTHROPIC.model, contents="Hello")
    assert refused.value.code == 404 and refused.value.status == "NOT_FOUND"
    assert "no channel serves it" in str(refused.value.message)


@pytest.mark.parametrize("channel", [GEMINI, OPENAI], ids=lambda c: c.name)
def test_stream_as_json_array(setup: Setup, channel: Channel) -> None:
    url = f"{setup.gateway.url}/v1beta/models/{channel.model}:streamGenerateContent"
    with httpx.stream("POST", url, headers={"x-goog-api-key": CALLER},
                      json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        events = orjson.loads(response.read())
    assert isinstance(events, list) and len(events) >= 4
    text = "".join(p["text"] for e in events for c in e.get("candidates", ()) for p in c["content"].get("parts", ()))
    assert text == channel.reply
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == channel.completion_tokens


@pytest.mark.parametrize(("model", "message"), [
    ("gemini-rejects", "temperature: must be in [0, 2]"),
    ("upstream-rejects", "Invalid value for 'temperature'."),
    ("claude-rejects", "max_tokens: 100000 > 8192"),
], ids=["gemini", "openai", "anthropic"])
def test_upstream_refusal_reaches_the_sdk(setup: Setup, model: str, message: str) -> None:
    with pytest.raises(errors.ClientError) as refused:
        setup.client().models.generate_content(model=model, contents="Hi")
    assert refused.value.code == 400 and refused.value.status == "INVALID_ARGUMENT"
    assert message in str(refused.value.message)


def test_upstream_failure_reaches_the_sdk_as_server_error(setup: Setup) -> None:
    setup.up.gemini.knobs["fail_with"] = 503
    setup.up.anthropic.knobs["fail_with"] = 500
    try:
        with pytest.raises(errors.ServerError) as failed:
            setup.client().models.generate_content(model=GEMINI.model, contents="Hi")
    finally:
        del setup.up.gemini.knobs["fail_with"], setup.up.anthropic.knobs["fail_with"]
    assert failed.value.code == 500 and failed.value.message == "Internal server error"  # the last channel's


def test_what_other_channels_cannot_do_is_refused_in_geminis_words(setup: Setup) -> None:
    search = types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())])
    with pytest.raises(errors.ClientError) as refused:
        setup.client().models.generate_content(model=OPENAI.model, contents="Hi", config=search)
    assert refused.value.code == 400 and "only functionDeclarations" in str(refused.value.message)


def test_unknown_paths_answer_in_geminis_shape(setup: Setup) -> None:
    headers = {"x-goog-api-key": CALLER}
    for method, path in [("POST", "/v1/models/gemini-2.0-flash:fly"), ("GET", "/v1beta/cachedContents"),
                         ("POST", "/v1beta/models/gemini-2.0-flash")]:
        response = httpx.request(method, setup.gateway.url + path, headers=headers, json={})
        assert response.status_code == 404, path
        assert response.json()["error"]["status"] == "NOT_FOUND" and response.json()["error"]["code"] == 404


def test_stream_broken_upstream_ends_with_an_error_the_sdk_raises(setup: Setup) -> None:
    setup.up.openai.knobs["break_after"] = 2
    received: list[str] = []
    try:
        with pytest.raises(errors.ServerError) as failed:
            for chunk in setup.client().models.generate_content_stream(model=OPENAI.model, contents="Hi"):
                received.append(chunk.text or "")
    finally:
        del setup.up.openai.knobs["break_after"]
    assert "".join(received) == "".join(openai_upstream.CHAT_REPLY[:2])  # what came before the break
    assert failed.value.code == 502 and "cut short" in str(failed.value.message)
