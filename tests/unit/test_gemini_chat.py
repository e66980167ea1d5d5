"""OpenAI Chat Completions <-> Gemini ``generateContent``: requests, replies and streams.

Expected shapes follow Google's REST reference (``contents``/``parts``, ``systemInstruction``,
``functionCall``/``functionResponse``, ``usageMetadata``) and OpenAI's chat completion objects.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from polyrelay.errors import RelayError
from polyrelay.providers.base import Call
from polyrelay.providers import gemini_chat
from tests.unit.calls import chat_call, sse_events


def _call(payload: dict[str, Any] | None, model: str = "gemini-2.5-flash", *, stream: bool = False,
          include_usage: bool = False) -> Call:
    return chat_call(payload, model, stream=stream, include_usage=include_usage)


def request(payload: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    return gemini_chat.chat_request(_call(payload), options or {})




def gemini_event(parts: list[dict[str, Any]] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None,
                 index: int | None = 0) -> bytes:
    candidate: dict[str, Any] = {"content": {"parts": parts or [], "role": "model"}}
    if index is not None:
        candidate["index"] = index
    if finish:
        candidate["finishReason"] = finish
    event: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    if usage is not None:
        event["usageMetadata"] = usage
    return orjson.dumps(event)


# ---------------------------------------------------------------- request

def test_system_and_developer_messages_become_system_instruction() -> None:
    body = request({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"},
    ]})
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAnswer in French."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_no_system_instruction_without_system_text() -> None:
    body = request({"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]})
    assert "systemInstruction" not in body
    assert "generationConfig" not in body and "tools" not in body and "safetySettings" not in body


def test_assistant_becomes_model_and_consecutive_turns_of_one_role_merge() -> None:
    body = request({"messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "three"}]},
        {"role": "assistant", "content": "reply"},
        {"role": "assistant", "content": ""},  # empty: no turn, no empty parts list (Gemini rejects those)
        {"role": "user", "content": "four"},
    ]})
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}, {"text": "three"}]},
        {"role": "model", "parts": [{"text": "reply"}]},
        {"role": "user", "parts": [{"text": "four"}]},
    ]


def test_tool_calls_and_results_become_function_call_and_function_response() -> None:
    body = request({"messages": [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
    ]})
    assert body["contents"][1] == {"role": "model", "parts": [
        {"text": "Checking."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]}
    # Parallel results are one user turn; names come from the calls; a JSON object result is passed
    # as is, anything else is wrapped (Gemini wants ``response`` to be an object).
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
        {"functionResponse": {"name": "get_time", "response": {"content": "14:05"}}},
    ]}
    assert len(body["contents"]) == 3


def test_legacy_function_messages_are_translated() -> None:
    body = request({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"role": "function", "name": "get_weather", "content": "[1, 2]"},
    ]})
    assert body["contents"][1] == {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"content": [1, 2]}}}]}


def test_tool_result_for_unknown_call_id_uses_the_message_name() -> None:
    body = request({"messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "call_unknown", "name": "lookup", "content": "found"},
    ]})
    assert body["contents"][0]["parts"][1] == {"functionResponse": {"name": "lookup", "response": {"content": "found"}}}


def test_invalid_tool_call_arguments_are_a_400_naming_the_call() -> None:
    with pytest.raises(RelayError) as caught:
        request({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
        ]})
    assert caught.value.status == 400
    assert caught.value.param == "messages[1].tool_calls[0]"


@pytest.mark.parametrize("payload", [
    {"messages": [{"role": "robot", "content": "x"}]},
    {"messages": []},
    {"messages": ["not an object"]},
    {"messages": [{"role": "user", "content": 42}]},
    {"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
])
def test_malformed_messages_are_a_400(payload: dict[str, Any]) -> None:
    with pytest.raises(RelayError) as caught:
        request(payload)
    assert caught.value.status == 400


def test_sampling_fields_become_generation_config() -> None:
    body = request({
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.3, "top_p": 0.9, "n": 2, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "max_tokens": 50, "max_completion_tokens": 80, "stop": "END",
    })
    assert body["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "candidateCount": 2, "seed": 7, "presencePenalty": 0.5,
        "frequencyPenalty": -0.5, "maxOutputTokens": 80, "stopSequences": ["END"],
    }


def test_max_tokens_and_stop_list() -> None:
    body = request({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "stop": ["a", 3, "b"]})
    assert body["generationConfig"] == {"maxOutputTokens": 5, "stopSequences": ["a", "b"]}


def test_json_schema_response_format_is_reduced_to_gemini_schema() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": ["string", "null"], "description": "who"},
            "tags": {"type": "array", "items": {"type": "string", "additionalProperties": False}},
            "kind": {"anyOf": [{"type": "integer", "$comment": "x"}, {"type": "string"}]},
        },
        "required": ["name"],
    }
    body = request({"messages": [{"role": "user", "content": "x"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "p", "strict": True, "schema": schema}}})
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "nullable": True, "description": "who"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            },
            "required": ["name"],
        },
    }


def test_json_object_response_format_sets_json_mime_type_only() -> None:
    body = request({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_tools_become_function_declarations_with_cleaned_schemas() -> None:
    body = request({
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "strict": True,
                                              "parameters": {"type": "object", "additionalProperties": False,
                                                             "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    })
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather of a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "now"},
    ]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
    ("none", {"functionCallingConfig": {"mode": "NONE"}}),
    ("required", {"functionCallingConfig": {"mode": "ANY"}}),
    (None, None),
])
def test_tool_choice_maps_to_function_calling_mode(choice: Any, config: Any) -> None:
    payload: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}],
                               "tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        payload["tool_choice"] = choice
    assert request(payload).get("toolConfig") == config


def test_tool_choice_without_tools_sends_no_tool_config() -> None:
    body = request({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})
    assert "tools" not in body and "toolConfig" not in body


def test_legacy_functions_become_declarations() -> None:
    body = request({"messages": [{"role": "user", "content": "x"}],
                    "functions": [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}]})
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}]}]


def test_safety_settings_channel_option() -> None:
    message = {"messages": [{"role": "user", "content": "x"}]}
    every = request(message, {"safety_settings": "BLOCK_NONE"})["safetySettings"]
    assert {s["category"] for s in every} == set(gemini_chat.SAFETY_CATEGORIES)
    assert {s["threshold"] for s in every} == {"BLOCK_NONE"}
    own = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    assert request(message, {"safety_settings": own})["safetySettings"] == own


def test_data_uri_image_and_audio_become_inline_data() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()
    body = request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
    ]}]})
    assert body["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": png}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}},
    ]


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "data:image/png,notbase64", "data:image/png;base64,@@@"])
def test_unusable_image_is_a_400_naming_the_part(url: str) -> None:
    with pytest.raises(RelayError) as caught:
        request({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]}]})
    assert caught.value.status == 400
    assert caught.value.param == "messages[0].content[1].image_url"
    assert caught.value.code == "invalid_image_url"


# ---------------------------------------------------------------- reply

def test_reply_text_finish_and_usage() -> None:
    data = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking about it", "thought": True},
            {"text": "Hello"}, {"text": " world"},
        ]}, "finishReason": "MAX_TOKENS", "index": 0}],
        "usageMetadata": {"promptTokenCount": 11, "toolUsePromptTokenCount": 2, "candidatesTokenCount": 5,
                          "thoughtsTokenCount": 7, "cachedContentTokenCount": 4, "totalTokenCount": 25},
    }
    raw, usage = gemini_chat.chat_reply(_call({"messages": []}, model="my-alias"), data)
    body = orjson.loads(raw)
    assert body["object"] == "chat.completion"
    assert body["model"] == "my-alias"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello world", "refusal": None},
                                "logprobs": None, "finish_reason": "length"}]
    # Thinking is billed as output and reported as reasoning tokens.
    assert body["usage"] == {"prompt_tokens": 13, "completion_tokens": 12, "total_tokens": 25,
                             "prompt_tokens_details": {"cached_tokens": 4},
                             "completion_tokens_details": {"reasoning_tokens": 7}}
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (13, 12, 4)
    assert usage.source == "upstream"


def test_reply_function_call_becomes_tool_calls_with_null_content() -> None:
    data = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": 2}}},
        {"functionCall": {"id": "fc_7", "name": "get_time", "args": {}}},
    ]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 6}}
    body = orjson.loads(gemini_chat.chat_reply(_call({"messages": []}), data)[0])
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"]["name"] == "get_weather"
    assert orjson.loads(first["function"]["arguments"]) == {"city": "Paris", "days": 2}
    assert second["id"] == "fc_7" and second["function"] == {"name": "get_time", "arguments": "{}"}


def test_reply_tool_call_ids_are_unique() -> None:
    data = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}},
                                                  {"functionCall": {"name": "f", "args": {}}}]}}],
            "usageMetadata": {}}
    calls = orjson.loads(gemini_chat.chat_reply(_call({"messages": []}), data)[0])["choices"][0]["message"]["tool_calls"]
    assert calls[0]["id"] != calls[1]["id"]


def test_tool_call_survives_the_round_trip() -> None:
    """A Gemini function call, answered by an OpenAI client, goes back as the same call and a named response."""
    data = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "C"}}}]},
                            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}}
    assistant = orjson.loads(gemini_chat.chat_reply(_call({"messages": []}), data)[0])["choices"][0]["message"]
    call_id = assistant["tool_calls"][0]["id"]
    body = request({"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        assistant,
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 21}'},
    ]})
    assert body["contents"][1] == {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "C"}}}]}
    assert body["contents"][2] == {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]}


@pytest.mark.parametrize(("reason", "expected"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SOMETHING_NEW", "stop"),
])
def test_finish_reasons(reason: str, expected: str) -> None:
    data = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}], "usageMetadata": {}}
    assert orjson.loads(gemini_chat.chat_reply(_call({"messages": []}), data)[0])["choices"][0]["finish_reason"] == expected


def test_blocked_prompt_is_an_empty_content_filter_choice() -> None:
    data = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}}
    body = orjson.loads(gemini_chat.chat_reply(_call({"messages": []}), data)[0])
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "", "refusal": None},
                                "logprobs": None, "finish_reason": "content_filter"}]
    assert body["usage"]["prompt_tokens"] == 8 and body["usage"]["completion_tokens"] == 0


def test_several_candidates_become_choices_in_order() -> None:
    data = {"candidates": [
        {"content": {"parts": [{"text": "first"}]}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "second"}]}, "finishReason": "MAX_TOKENS", "index": 1},
    ], "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 4}}
    choices = orjson.loads(gemini_chat.chat_reply(_call({"messages": []}), data)[0])["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "first", "stop"), (1, "second", "length")]


# ---------------------------------------------------------------- stream

def test_stream_text_with_usage_from_the_last_event() -> None:
    stream = gemini_chat.ChatStream(_call({"messages": []}, model="my-alias", stream=True, include_usage=True))
    out = stream.feed(b"", gemini_event([{"text": "Hello"}], usage={"promptTokenCount": 11, "candidatesTokenCount": 1}, index=None))
    out += stream.feed(b"", gemini_event([{"text": "plan", "thought": True}, {"text": " wor"}],
                                         usage={"promptTokenCount": 11, "candidatesTokenCount": 2}))
    out += stream.feed(b"", gemini_event([{"text": "ld"}], finish="STOP",
                                         usage={"promptTokenCount": 11, "candidatesTokenCount": 3, "thoughtsTokenCount": 5,
                                                "cachedContentTokenCount": 4}))
    out += stream.end()
    events = sse_events(out)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"my-alias"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello world"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19,
                             "prompt_tokens_details": {"cached_tokens": 4},
                             "completion_tokens_details": {"reasoning_tokens": 5}}
    usage = stream.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (11, 8, 4)


def test_stream_without_include_usage_ends_with_done_only_but_still_bills() -> None:
    stream = gemini_chat.ChatStream(_call({"messages": []}, stream=True, include_usage=False))
    stream.feed(b"", gemini_event([{"text": "Hi"}], finish="STOP", usage={"promptTokenCount": 4, "candidatesTokenCount": 1}))
    assert stream.end() == b"data: [DONE]\n\n"
    usage = stream.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 1)


def test_stream_function_calls_get_running_indices_and_finish_tool_calls() -> None:
    stream = gemini_chat.ChatStream(_call({"messages": []}, stream=True))
    out = stream.feed(b"", gemini_event([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]))
    out += stream.feed(b"", gemini_event([{"functionCall": {"name": "get_time", "args": {"tz": "CET"}}}], finish="STOP",
                                         usage={"promptTokenCount": 1, "candidatesTokenCount": 2}))
    chunks = sse_events(out)
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(tc["index"], tc["function"]["name"], orjson.loads(tc["function"]["arguments"])) for tc in calls] == [
        (0, "get_weather", {"city": "Paris"}), (1, "get_time", {"tz": "CET"})]
    assert all(tc["id"].startswith("call_") and tc["type"] == "function" for tc in calls)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_candidates_are_kept_apart() -> None:
    stream = gemini_chat.ChatStream(_call({"messages": []}, stream=True))
    event = {"candidates": [
        {"content": {"parts": [{"text": "A"}]}, "index": 0, "finishReason": "STOP"},
        {"content": {"parts": [{"text": "B"}]}, "index": 1, "finishReason": "MAX_TOKENS"},
    ]}
    chunks = sse_events(stream.feed(b"", orjson.dumps(event)))
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        choice = chunk["choices"][0]
        by_index.setdefault(choice["index"], []).append(choice)
    assert [c["delta"] for c in by_index[0]] == [{"role": "assistant", "content": ""}, {"content": "A"}, {}]
    assert [c["delta"] for c in by_index[1]] == [{"role": "assistant", "content": ""}, {"content": "B"}, {}]
    assert by_index[0][-1]["finish_reason"] == "stop" and by_index[1][-1]["finish_reason"] == "length"


def test_stream_error_event_becomes_an_error_chunk() -> None:
    stream = gemini_chat.ChatStream(_call({"messages": []}, stream=True))
    error = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}
    assert sse_events(stream.feed(b"", orjson.dumps(error))) == [{"error": {
        "message": "Resource has been exhausted", "type": "upstream_error", "param": None,
        "code": "RESOURCE_EXHAUSTED", "status": 429}}]


def test_stream_json_array_element_is_tolerated() -> None:
    stream = gemini_chat.ChatStream(_call({"messages": []}, stream=True, include_usage=True))
    events = orjson.loads(b"[" + gemini_event([{"text": "a"}]) + b"," +
                          gemini_event([{"text": "b"}], finish="STOP", usage={"promptTokenCount": 2, "candidatesTokenCount": 2}) + b"]")
    chunks = sse_events(stream.feed(b"", orjson.dumps(events)) + stream.end())
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c != "[DONE]" and c["choices"]) == "ab"
    assert chunks[-2]["usage"]["completion_tokens"] == 2


def test_usage_watcher_keeps_the_last_usage_metadata() -> None:
    watcher = gemini_chat.UsageWatcher(_call({"messages": []}))
    watcher.observe(b"", gemini_event([{"text": "a"}], usage={"promptTokenCount": 9, "candidatesTokenCount": 1}))
    watcher.observe(b"", gemini_event([{"text": "b"}]))  # no usage: keeps the previous one
    watcher.observe(b"", b"not json but mentions usageMetadata")
    watcher.observe(b"", gemini_event([{"text": "c"}], finish="STOP",
                                      usage={"promptTokenCount": 9, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}))
    usage = watcher.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (9, 5)


def test_usage_watcher_reads_a_whole_json_array_body() -> None:
    watcher = gemini_chat.UsageWatcher(_call({"messages": []}))
    body = b"[" + gemini_event([{"text": "a"}], usage={"promptTokenCount": 3, "candidatesTokenCount": 1}) + b",\r\n" + \
        gemini_event([{"text": "b"}], usage={"promptTokenCount": 3, "candidatesTokenCount": 6}) + b"]"
    watcher.observe(b"", body)
    usage = watcher.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 6)


def test_usage_watcher_without_usage_falls_back_to_the_request() -> None:
    watcher = gemini_chat.UsageWatcher(_call({"messages": []}))
    watcher.observe(b"", gemini_event([{"text": "a"}]))
    usage = watcher.usage()
    assert usage is not None and usage.source == "request"
