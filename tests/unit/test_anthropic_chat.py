"""OpenAI Chat Completions <-> Anthropic Messages API: requests, replies and streams.

Expected shapes follow Anthropic's Messages reference (``system``, alternating ``messages`` of
content blocks, ``tool_use``/``tool_result``, the ``message_start`` ... ``message_stop`` stream,
``usage`` with cache reads and writes) and OpenAI's chat completion objects.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from polyrelay.errors import RelayError
from polyrelay.providers.base import Call
from polyrelay.providers import anthropic_chat
from tests.unit.calls import chat_call, sse_events


def _call(payload: dict[str, Any] | None, model: str = "claude-sonnet-4-5", *, stream: bool = False,
          include_usage: bool = False) -> Call:
    return chat_call(payload, model, stream=stream, include_usage=include_usage)


def request(payload: dict[str, Any], options: dict[str, Any] | None = None, *, stream: bool = False,
            fetch_images: bool = False) -> dict[str, Any]:
    return anthropic_chat.chat_request(_call(payload, stream=stream), options or {}, "claude-upstream-id", fetch_images)




def feed(stream: anthropic_chat.ChatStream, event: dict[str, Any]) -> bytes:
    return stream.feed(event["type"].encode(), orjson.dumps(event))


USER = {"role": "user", "content": "Hi"}


# ---------------------------------------------------------------- request

def test_minimal_request_names_the_upstream_model_and_a_default_max_tokens() -> None:
    body = request({"model": "alias", "messages": [USER]})
    assert body == {"model": "claude-upstream-id", "max_tokens": anthropic_chat.DEFAULT_MAX_TOKENS,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}


def test_max_tokens_from_the_request_or_the_channel_option() -> None:
    assert request({"messages": [USER], "max_tokens": 50})["max_tokens"] == 50
    assert request({"messages": [USER], "max_tokens": 50, "max_completion_tokens": 70})["max_tokens"] == 70
    assert request({"messages": [USER]}, {"default_max_tokens": 1000})["max_tokens"] == 1000
    assert request({"messages": [USER], "max_tokens": 0}, {"default_max_tokens": 1000})["max_tokens"] == 1000


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    body = request({"messages": [
        {"role": "system", "content": "Be brief."},
        USER,
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
    ]})
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_sampling_fields_stream_and_user() -> None:
    body = request({"messages": [USER], "temperature": 1.7, "top_p": 0.8, "stop": "END", "user": "user-42"}, stream=True)
    assert body["temperature"] == 1.0  # OpenAI's range is 0..2, Anthropic's 0..1
    assert body["top_p"] == 0.8
    assert body["stop_sequences"] == ["END"]
    assert body["stream"] is True
    assert body["metadata"] == {"user_id": "user-42"}
    assert request({"messages": [USER], "temperature": 0.4})["temperature"] == 0.4
    assert "stream" not in request({"messages": [USER]})


def test_roles_alternate_and_empty_text_is_dropped() -> None:
    body = request({"messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "three"},
    ]})
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "reply"}]},
        {"role": "user", "content": [{"type": "text", "text": "three"}]},
    ]


def test_tool_calls_become_tool_use_and_results_one_user_turn() -> None:
    body = request({"messages": [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_a", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "toolu_b", "content": [{"type": "text", "text": "14:05"}]},
        {"role": "user", "content": "Thanks"},
    ]})
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
    ]}
    # tool_result blocks first, then the user's text, in one user turn (the API wants roles alternating).
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": '{"temp_c": 21}'},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "14:05"},
        {"type": "text", "text": "Thanks"},
    ]}
    assert len(body["messages"]) == 3


def test_invalid_tool_call_arguments_are_a_400_naming_the_call() -> None:
    with pytest.raises(RelayError) as caught:
        request({"messages": [USER, {"role": "assistant", "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1,"}}]}]})
    assert caught.value.status == 400
    assert caught.value.param == "messages[1].tool_calls[0]"


@pytest.mark.parametrize("message", [
    {"role": "function", "name": "f", "content": "x"},
    {"role": "robot", "content": "x"},
    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]},
])
def test_messages_anthropic_cannot_take_are_a_400(message: dict[str, Any]) -> None:
    with pytest.raises(RelayError) as caught:
        request({"messages": [USER, message]})
    assert caught.value.status == 400
    assert caught.value.param is not None and caught.value.param.startswith("messages[1]")


def test_images_become_url_or_base64_sources() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()
    body = request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}", "detail": "high"}},
    ]}]})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
    ]


def test_image_urls_must_be_prefetched_when_the_channel_fetches_images() -> None:
    with pytest.raises(RelayError) as caught:
        request({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]}]}, fetch_images=True)
    assert caught.value.status == 400
    assert caught.value.param == "messages[0].content[0].image_url"


def test_json_modes_are_asked_for_in_the_system_prompt() -> None:
    body = request({"messages": [{"role": "system", "content": "You are terse."}, USER],
                    "response_format": {"type": "json_object"}})
    assert body["system"].startswith("You are terse.\n\n")
    assert "JSON" in body["system"]
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    body = request({"messages": [USER], "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}})
    assert "JSON" in body["system"]
    assert orjson.dumps(schema).decode() in body["system"]
    assert "system" not in request({"messages": [USER], "response_format": {"type": "text"}})


def test_tools_become_input_schemas() -> None:
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = request({"messages": [USER], "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": parameters}},
        {"type": "function", "function": {"name": "now"}},
        {"type": "web_search"},  # not a function tool: nothing Anthropic can be given
    ]})
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather of a city", "input_schema": parameters},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ("none", False, {"type": "none"}),
    (None, True, None),
])
def test_tool_choice_and_parallel_tool_calls(choice: Any, parallel: Any, expected: Any) -> None:
    payload: dict[str, Any] = {"messages": [USER], "tools": [{"type": "function", "function": {"name": "get_weather"}}]}
    if choice is not None:
        payload["tool_choice"] = choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    assert request(payload).get("tool_choice") == expected


# ---------------------------------------------------------------- reply

def message(content: list[dict[str, Any]], stop: str | None = "end_turn", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-upstream-id", "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": usage if usage is not None else {"input_tokens": 9, "output_tokens": 5}}


def test_reply_text_and_usage_with_cache_reads_and_writes() -> None:
    data = message([{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
                   usage={"input_tokens": 9, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 5})
    raw, usage = anthropic_chat.chat_reply(_call({"messages": [USER]}, model="my-alias"), data)
    body = orjson.loads(raw)
    assert body["object"] == "chat.completion" and body["model"] == "my-alias"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello world", "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}]
    # OpenAI's prompt_tokens include cache reads and writes; Anthropic's input_tokens do not.
    assert body["usage"] == {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19,
                             "prompt_tokens_details": {"cached_tokens": 3},
                             "completion_tokens_details": {"reasoning_tokens": 0}}
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens) == (14, 5, 3, 2)


def test_reply_tool_use_becomes_tool_calls() -> None:
    data = message([{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}], stop="tool_use")
    choice = orjson.loads(anthropic_chat.chat_reply(_call({"messages": [USER]}), data)[0])["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_01", "type": "function",
                                                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]


def test_reply_with_only_tool_use_has_null_content() -> None:
    data = message([{"type": "tool_use", "id": "toolu_01", "name": "now", "input": {}}], stop="tool_use")
    msg = orjson.loads(anthropic_chat.chat_reply(_call({"messages": [USER]}), data)[0])["choices"][0]["message"]
    assert msg["content"] is None and msg["tool_calls"][0]["function"]["arguments"] == "{}"


def test_tool_call_survives_the_round_trip() -> None:
    data = message([{"type": "tool_use", "id": "toolu_01XYZ", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}}],
                   stop="tool_use")
    assistant = orjson.loads(anthropic_chat.chat_reply(_call({"messages": [USER]}), data)[0])["choices"][0]["message"]
    body = request({"messages": [USER, assistant, {"role": "tool", "tool_call_id": "toolu_01XYZ", "content": "sunny"}]})
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_01XYZ", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}}]}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01XYZ", "content": "sunny"}]}


@pytest.mark.parametrize(("stop", "expected"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), (None, "stop"), ("brand_new_reason", "stop"),
])
def test_stop_reasons(stop: str | None, expected: str) -> None:
    data = message([{"type": "text", "text": "x"}], stop=stop)
    assert orjson.loads(anthropic_chat.chat_reply(_call({"messages": [USER]}), data)[0])["choices"][0]["finish_reason"] == expected


# ---------------------------------------------------------------- stream

START = {"type": "message_start", "message": {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-upstream-id", "content": [],
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 9, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 1}}}


def tool_stream_events() -> list[dict[str, Any]]:
    """A text block then a tool_use block, as the Messages API streams them."""
    return [
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " check."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '": "Paris"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ]


def test_stream_text_tool_call_finish_and_usage() -> None:
    stream = anthropic_chat.ChatStream(_call({"messages": [USER]}, model="my-alias", stream=True, include_usage=True))
    out = b"".join(feed(stream, event) for event in tool_stream_events()) + stream.end()
    events = sse_events(out)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1 and {c["model"] for c in chunks} == {"my-alias"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "Let me check."
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    assert {tc["index"] for tc in calls} == {0}  # block index 1 is the caller's first tool call
    assert orjson.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["tool_calls"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 14, "completion_tokens": 12, "total_tokens": 26,
                                   "prompt_tokens_details": {"cached_tokens": 3},
                                   "completion_tokens_details": {"reasoning_tokens": 0}}
    usage = stream.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.cache_write_tokens) == (14, 12, 2)


def test_stream_parallel_tool_calls_get_their_own_indices() -> None:
    stream = anthropic_chat.ChatStream(_call({"messages": [USER]}, stream=True))
    out = feed(stream, START)
    for block, (id_, name, args) in enumerate([("toolu_a", "a", '{"x":1}'), ("toolu_b", "b", '{"y":2}')]):
        out += feed(stream, {"type": "content_block_start", "index": block,
                             "content_block": {"type": "tool_use", "id": id_, "name": name, "input": {}}})
        out += feed(stream, {"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": args}})
    calls = [tc for c in sse_events(out) for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(tc["index"], tc.get("id"), tc["function"].get("name"), tc["function"]["arguments"]) for tc in calls] == [
        (0, "toolu_a", "a", ""), (0, None, None, '{"x":1}'), (1, "toolu_b", "b", ""), (1, None, None, '{"y":2}')]


def test_stream_without_include_usage_ends_with_done_only_but_still_bills() -> None:
    stream = anthropic_chat.ChatStream(_call({"messages": [USER]}, stream=True))
    feed(stream, START)
    feed(stream, {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}})
    assert stream.end() == b"data: [DONE]\n\n"
    usage = stream.usage()
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (14, 4)


def test_stream_thinking_and_housekeeping_events_produce_nothing() -> None:
    stream = anthropic_chat.ChatStream(_call({"messages": [USER]}, stream=True))
    feed(stream, START)
    for event in [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me think"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCg"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "ping"},
        {"type": "message_stop"},
    ]:
        assert feed(stream, event) == b""


@pytest.mark.parametrize(("kind", "status", "type_"), [
    ("overloaded_error", 529, "server_error"),
    ("rate_limit_error", 429, "rate_limit_error"),
    ("something_new", 500, "server_error"),
])
def test_stream_error_event_becomes_an_error_chunk(kind: str, status: int, type_: str) -> None:
    stream = anthropic_chat.ChatStream(_call({"messages": [USER]}, stream=True))
    out = feed(stream, {"type": "error", "error": {"type": kind, "message": "Overloaded"}})
    assert sse_events(out) == [{"error": {"message": "Overloaded", "type": type_, "param": None, "code": kind, "status": status}}]


def test_usage_watcher_reads_native_stream_usage() -> None:
    watcher = anthropic_chat.UsageWatcher()
    for event in tool_stream_events():
        watcher.observe(event["type"].encode(), orjson.dumps(event))
    usage = watcher.usage()
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens) == (14, 12, 3, 2)
    assert usage.source == "upstream"


def test_usage_watcher_without_usage_falls_back_to_the_request() -> None:
    watcher = anthropic_chat.UsageWatcher()
    watcher.observe(b"ping", b'{"type": "ping"}')
    watcher.observe(b"message_start", b"{truncated")
    usage = watcher.usage()
    assert usage is not None and usage.source == "request"


# ---------------------------------------------------------------- edge cases once broken

def test_a_null_max_completion_tokens_leaves_max_tokens_in_force() -> None:
    """OpenAI clients may send ``"max_completion_tokens": null`` (meaning: not set) next to ``max_tokens``.

    The caller's limit of 50 must reach Anthropic; chat_in.max_output_tokens reads the null and
    falls back to the 4096 default, so the reply is not limited as asked.
    """
    body = request({"messages": [USER], "max_tokens": 50, "max_completion_tokens": None})
    assert body["max_tokens"] == 50
