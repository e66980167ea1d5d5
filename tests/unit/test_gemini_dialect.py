"""Gemini ``generateContent``/embeddings callers <-> the OpenAI pivot: requests, replies, streams, local counts.

Request shapes are what the google-genai SDK 3.6 sends (recorded): camelCase with some
snake_case fields (``inline_data.mime_type``, ``thinking_budget``, ``parameters_json_schema``)
and URL-safe base64 bytes.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from polyrelay.billing import tokenizer
from polyrelay.billing.meter import Usage
from polyrelay.dialects import gemini, gemini_embed, gemini_request
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call

PNG = b"\x89PNG\r\n\x1a\n\xfb\xef\xff"


def _call(payload: dict[str, Any], action: str = "generateContent", *, sse: bool = True,
          model: str = "gpt-4o") -> Call:
    stream = action == "streamGenerateContent"
    return Call(family="gemini", endpoint=f"gemini.{action}", path=f"/v1/models/{model}:{action}", model=model,
                body=orjson.dumps(payload), content_type="application/json", request_id="req_unit", payload=payload,
                stream=stream, sse=stream and sse)


def request(payload: dict[str, Any]) -> dict[str, Any]:
    return gemini_request.chat_request(_call(payload))


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def refused(payload: dict[str, Any]) -> str:
    with pytest.raises(RelayError) as error:
        request(payload)
    assert error.value.status == 400
    return error.value.message


# ---------------------------------------------------------------- request

def test_text_system_and_generation_config() -> None:
    body = request({
        "contents": [user({"text": "Hi"})],
        "systemInstruction": {"parts": [{"text": "Be brief."}], "role": "user"},
        "generationConfig": {"temperature": 0.3, "topP": 0.9, "topK": 40, "maxOutputTokens": 50,
                             "stopSequences": ["x"], "candidateCount": 2, "seed": 7},
    })
    assert body == {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "Hi"}],
                    "temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "stop": ["x"], "n": 2, "seed": 7}


def test_snake_case_fields_are_read_like_camel_case() -> None:
    body = request({"contents": [user({"text": "Hi"})], "system_instruction": {"parts": [{"text": "S"}]},
                    "generation_config": {"max_output_tokens": 9, "stop_sequences": ["y"]}})
    assert body["messages"][0] == {"role": "system", "content": "S"}
    assert (body["max_tokens"], body["stop"]) == (9, ["y"])


def test_inline_image_in_url_safe_base64_and_snake_case() -> None:
    url_safe = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
    assert "-" in url_safe or "_" in url_safe
    body = request({"contents": [user({"inline_data": {"data": url_safe, "mime_type": "image/png"}},
                                      {"text": "What is it?"})]})
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
        {"type": "text", "text": "What is it?"}]}]


def test_audio_and_file_parts() -> None:
    body = request({"contents": [user({"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                                      {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/a.jpg"}})]})
    assert body["messages"][0]["content"] == [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]


@pytest.mark.parametrize(("part", "says"), [
    ({"inlineData": {"mimeType": "image/png", "data": "not base64!"}}, "Base64 decoding failed"),
    ({"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}, "application/pdf cannot be sent"),
    ({"fileData": {"mimeType": "video/mp4", "fileUri": "https://generativelanguage.googleapis.com/v1/files/x"}},
     "video/mp4 files cannot"),
    ({"fileData": {"fileUri": "gs://bucket/x.png"}}, "only images at http(s) URLs"),
    ({"executableCode": {"code": "print(1)"}}, "cannot take"),
])
def test_parts_other_channels_cannot_take_are_refused(part: dict[str, Any], says: str) -> None:
    assert says in refused({"contents": [user(part)]})


def test_function_call_round_trip_keeps_ids_and_matches_by_name() -> None:
    body = request({"contents": [
        user({"text": "Weather in Paris and Rome?"}),
        {"role": "model", "parts": [{"text": "Checking."},
                                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "toolu_1"}},
                                    {"functionCall": {"name": "time", "args": {}}},
                                    {"text": "secret", "thought": True}]},
        user({"functionResponse": {"name": "time", "response": {"now": "noon"}}},
             {"functionResponse": {"name": "weather", "response": {"sky": "sunny"}}},
             {"text": "Thanks"}),
    ]})
    assert body["messages"][1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_1_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "call_1_2", "content": '{"now":"noon"}'},
        {"role": "tool", "tool_call_id": "toolu_1", "content": '{"sky":"sunny"}'},
        {"role": "user", "content": "Thanks"}]


def test_tools_schemas_and_tool_config() -> None:
    body = request({
        "contents": [user({"text": "x"})],
        "tools": [{"functionDeclarations": [
            {"name": "a", "description": "A", "parameters": {
                "type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": True},
                                                 "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
                "required": ["n"], "propertyOrdering": ["n", "tags"]}},
            {"name": "b", "parameters_json_schema": {"type": "object", "additionalProperties": False}},
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}},
    })
    assert body["tools"] == [
        {"type": "function", "function": {"name": "a", "description": "A", "parameters": {
            "type": "object", "properties": {"n": {"type": ["integer", "null"]},
                                             "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["n"]}}},
        {"type": "function", "function": {"name": "b", "parameters": {"type": "object",
                                                                      "additionalProperties": False}}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "b"}}


@pytest.mark.parametrize(("config", "choice"), [
    ({"mode": "AUTO"}, {"tool_choice": "auto"}), ({"mode": "NONE"}, {"tool_choice": "none"}),
    ({"mode": "ANY"}, {"tool_choice": "required"}),
])
def test_function_calling_modes(config: dict[str, Any], choice: dict[str, Any]) -> None:
    body = request({"contents": [user({"text": "x"})], "tools": [{"functionDeclarations": [{"name": "a"}]}],
                    "toolConfig": {"functionCallingConfig": config}})
    assert {k: body[k] for k in choice} == choice


def test_response_schema_becomes_json_schema() -> None:
    schema = {"type": "OBJECT", "properties": {"answer": {"type": "NUMBER"}}}
    body = request({"contents": [user({"text": "x"})],
                    "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}})
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": {"type": "object", "properties": {"answer": {"type": "number"}}}}}
    body = request({"contents": [user({"text": "x"})], "generationConfig": {"responseMimeType": "application/json"}})
    assert body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(("thinking", "effort"), [
    ({"thinking_budget": 100}, "low"), ({"thinkingBudget": 5000}, "medium"), ({"thinkingBudget": 20000}, "high"),
    ({"thinkingLevel": "HIGH"}, "high"), ({"thinkingBudget": 0}, None), ({"thinkingBudget": -1}, None),
])
def test_thinking_config_becomes_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    body = request({"contents": [user({"text": "x"})], "generationConfig": {"thinkingConfig": thinking}})
    assert body.get("reasoning_effort") == effort


@pytest.mark.parametrize(("payload", "says"), [
    ({"tools": [{"googleSearch": {}}]}, "only functionDeclarations"),
    ({"cachedContent": "cachedContents/1"}, "cachedContent"),
    ({"generationConfig": {"responseModalities": ["IMAGE"]}}, "text only"),
    ({"generationConfig": {"responseMimeType": "text/x.enum"}}, "text/x.enum"),
    ({"generationConfig": {"bogus": 1}}, 'Unknown name "bogus" at \'generation_config\''),
    ({"bogus": 1}, 'Unknown name "bogus"'),
    ({"toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}},
      "tools": [{"functionDeclarations": [{"name": "a"}]}]}, "SOMETIMES"),
])
def test_what_the_pivot_cannot_express_is_refused(payload: dict[str, Any], says: str) -> None:
    assert says in refused({"contents": [user({"text": "x"})], **payload})


def test_contents_must_be_given_and_roles_known() -> None:
    assert "contents is not specified" in refused({})
    assert "valid role" in refused({"contents": [{"role": "system", "parts": [{"text": "x"}]}]})
    assert "must not be empty" in refused({"contents": [{"role": "user", "parts": []}]})


# ---------------------------------------------------------------- reply

def _pivot(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 7,
                           "prompt_tokens_details": {"cached_tokens": 4},
                           "completion_tokens_details": {"reasoning_tokens": 2}}}


def test_reply_text_and_usage() -> None:
    reply = orjson.loads(gemini.GeminiDialect().reply(_call({}), _pivot({"content": "Hello"}), None))
    assert reply == {
        "candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 17,
                          "cachedContentTokenCount": 4, "thoughtsTokenCount": 2},
        "modelVersion": "gpt-4o", "responseId": "chatcmpl-1"}


def test_reply_function_calls_and_finish_reasons() -> None:
    pivot = _pivot({"content": None, "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        "tool_calls")
    candidate = gemini.generate_reply(_call({}), pivot, None)["candidates"][0]
    assert candidate["content"]["parts"] == [{"functionCall": {"name": "weather", "args": {"city": "Paris"},
                                                               "id": "call_9"}}]
    assert candidate["finishReason"] == "STOP"
    assert [gemini.finish_reason(r) for r in ("length", "content_filter", "odd")] == ["MAX_TOKENS", "SAFETY", "OTHER"]


def test_reply_thoughts_only_when_asked() -> None:
    pivot = _pivot({"content": "4", "reasoning_content": "2+2"})
    asked = _call({"generationConfig": {"thinkingConfig": {"includeThoughts": True}}})
    assert gemini.generate_reply(asked, pivot, None)["candidates"][0]["content"]["parts"] == [
        {"text": "2+2", "thought": True}, {"text": "4"}]
    assert gemini.generate_reply(_call({}), pivot, None)["candidates"][0]["content"]["parts"] == [{"text": "4"}]


def test_reply_usage_from_the_metered_usage_when_the_pivot_has_none() -> None:
    pivot = {"id": "x", "choices": [{"index": 0, "message": {"content": "a"}, "finish_reason": "stop"}]}
    reply = gemini.generate_reply(_call({}), pivot, Usage(prompt_tokens=3, completion_tokens=1))
    assert reply["usageMetadata"] == {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}


# ---------------------------------------------------------------- stream

def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices,
                         **({"usage": usage} if usage else {})})


PIVOT_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo"}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "weather", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    _chunk({}, "tool_calls"),
    _chunk(usage={"prompt_tokens": 5, "completion_tokens": 3}),
    b"[DONE]",
]


def _translate(call: Call, events: list[bytes]) -> bytes:
    translator = gemini.GeminiDialect().stream(call)
    return b"".join(translator.feed(b"", data) for data in events) + translator.end()


def test_stream_as_sse_holds_calls_until_finish_and_ends_with_usage() -> None:
    raw = _translate(_call({}, "streamGenerateContent"), PIVOT_STREAM)
    assert raw.endswith(b"\r\n\r\n")
    events = [orjson.loads(block[6:]) for block in raw.split(b"\r\n\r\n") if block]
    parts = [e["candidates"][0]["content"]["parts"] for e in events]
    assert parts == [[{"text": "Hel"}], [{"text": "lo"}],
                     [{"functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}}]]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"] == {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}
    assert {(e["modelVersion"], e["responseId"]) for e in events} == {("gpt-4o", "chatcmpl-1")}


def test_stream_as_json_array() -> None:
    raw = _translate(_call({}, "streamGenerateContent", sse=False), PIVOT_STREAM)
    events = orjson.loads(raw)
    assert isinstance(events, list) and len(events) == 3
    assert gemini.GeminiDialect().stream_content_type(_call({}, "streamGenerateContent", sse=False)) == "application/json"
    assert _translate(_call({}, "streamGenerateContent", sse=False), [b"[DONE]"]) == b"[]"


def test_stream_finish_without_usage_is_sent_at_the_end() -> None:
    raw = _translate(_call({}, "streamGenerateContent"), [_chunk({"content": "a"}), _chunk({}, "length")])
    events = [orjson.loads(block[6:]) for block in raw.split(b"\r\n\r\n") if block]
    assert events[-1]["candidates"] == [{"content": {"parts": [], "role": "model"}, "finishReason": "MAX_TOKENS",
                                         "index": 0}]
    assert "usageMetadata" not in events[-1]


def test_stream_error_becomes_googles_error_object() -> None:
    error = orjson.dumps({"error": {"message": "Overloaded", "type": "upstream_error", "status": 529}})
    raw = _translate(_call({}, "streamGenerateContent"), [_chunk({"content": "a"}), error])
    last = orjson.loads(raw.split(b"\r\n\r\n")[-2][6:])
    assert last == {"error": {"code": 529, "message": "Overloaded", "status": "INTERNAL"}}
    raw = _translate(_call({}, "streamGenerateContent", sse=False), [error])
    assert orjson.loads(raw) == [{"error": {"code": 529, "message": "Overloaded", "status": "INTERNAL"}}]


# ---------------------------------------------------------------- embeddings

def test_embed_content_and_batch() -> None:
    dialect = gemini_embed.GeminiEmbedDialect()
    single = _call({"content": {"parts": [{"text": "a"}, {"text": "b"}]}, "outputDimensionality": 3,
                    "taskType": "RETRIEVAL_QUERY"}, "embedContent", model="text-embedding-3-small")
    assert dialect.request(single) == {"model": "text-embedding-3-small", "input": ["a\nb"], "encoding_format": "float",
                                       "dimensions": 3}
    pivot = {"data": [{"index": 0, "embedding": [0.5, 0.25, 0.125]}], "usage": {"prompt_tokens": 2}}
    assert orjson.loads(dialect.reply(single, pivot, None)) == {"embedding": {"values": [0.5, 0.25, 0.125]}}
    batch = _call({"requests": [{"model": "models/m", "content": {"parts": [{"text": "x"}]}},
                                {"model": "models/m", "content": {"parts": [{"text": "y"}]}}]},
                  "batchEmbedContents", model="m")
    assert dialect.request(batch)["input"] == ["x", "y"]
    pivot = {"data": [{"index": 1, "embedding": base64.b64encode(b"\x00\x00\x80?").decode()},
                      {"index": 0, "embedding": [2.0]}]}
    assert orjson.loads(dialect.reply(batch, pivot, None)) == {"embeddings": [{"values": [2.0]}, {"values": [1.0]}]}


@pytest.mark.parametrize(("payload", "says"), [
    ({"requests": [{"model": "models/other", "content": {"parts": [{"text": "x"}]}}]}, "does not match"),
    ({"requests": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}}]}, "only text"),
    ({"requests": [{"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 2},
                   {"content": {"parts": [{"text": "y"}]}, "outputDimensionality": 3}]}, "same outputDimensionality"),
    ({"requests": []}, "requests is not specified"),
])
def test_embed_refusals(payload: dict[str, Any], says: str) -> None:
    with pytest.raises(RelayError) as error:
        gemini_embed.embeddings_request(_call(payload, "batchEmbedContents", model="m"))
    assert says in error.value.message


# ---------------------------------------------------------------- local count

def test_local_count() -> None:
    payload = {"contents": [user({"text": "Hello there"}, {"inline_data": {"mime_type": "image/png", "data": "AA"}})],
               "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    counted = gemini_request.count_tokens(_call(payload, "countTokens"))
    text = tokenizer.count_text("gpt-4o", "Be brief.\nHello there")
    assert counted == {"totalTokens": text + 258, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text},
                                                                          {"modality": "IMAGE", "tokenCount": 258}]}
    wrapped = gemini_request.count_tokens(_call({"generateContentRequest": {"contents": [user({"text": "Hi"})]}},
                                                "countTokens"))
    assert wrapped["totalTokens"] == tokenizer.count_text("gpt-4o", "Hi")
