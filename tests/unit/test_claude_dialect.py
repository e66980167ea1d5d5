"""Claude Messages <-> the OpenAI chat pivot (``dialects.claude``): requests, replies, streams, counting.

Expected shapes follow Anthropic's Messages reference (content blocks, ``tool_use``/``tool_result``,
``stop_reason``, usage whose ``input_tokens`` excludes cache reads, the ``message_start`` ...
``message_stop`` event sequence with ``event:`` lines) and OpenAI's chat objects.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from polyrelay.billing.meter import Usage
from polyrelay.dialects.claude import ClaudeDialect, chat_request, count_tokens, error_body
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call

DIALECT = ClaudeDialect()
TOOL = {"name": "get_weather", "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _call(payload: dict[str, Any], *, stream: bool = False) -> Call:
    return Call(family="anthropic", endpoint="messages", path="/v1/messages", model="claude-sonnet-4-5",
                body=orjson.dumps(payload), content_type="application/json", request_id="req_unit", payload=payload,
                stream=stream, sse=stream)


def _base(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}], **fields}


# ---------------------------------------------------------------- request

def test_plain_request_maps_system_sampling_stops_and_user() -> None:
    body = chat_request(_base(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                                      {"type": "text", "text": "Answer in French."}],
                              temperature=0.3, top_p=0.9, top_k=5, stop_sequences=["END"],
                              metadata={"user_id": "user-42"}, service_tier="auto"))
    assert body == {"model": "claude-sonnet-4-5", "max_tokens": 256, "temperature": 0.3, "top_p": 0.9,
                    "stop": ["END"], "user": "user-42",
                    "messages": [{"role": "system", "content": "Be brief.\n\nAnswer in French."},
                                 {"role": "user", "content": "Hi"}]}


def test_a_claude_code_user_id_too_long_for_openai_is_not_sent() -> None:
    user_id = "user_" + "ab" * 32 + "_account_" + "0" * 36 + "_session_" + "1" * 36
    assert "user" not in chat_request(_base(metadata={"user_id": user_id}))


def test_system_messages_inside_messages_stay_in_place() -> None:
    body = chat_request(_base(messages=[{"role": "system", "content": [{"type": "text", "text": "Rules."}]},
                                        {"role": "user", "content": "Hi"}]))
    assert body["messages"] == [{"role": "system", "content": "Rules."}, {"role": "user", "content": "Hi"}]


def test_images_become_image_url_parts() -> None:
    blocks = [{"type": "text", "text": "What is this?"},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
              {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]
    body = chat_request(_base(messages=[{"role": "user", "content": blocks}]))
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]


def test_tool_round_trip_request() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no station"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            {"type": "text", "text": "And tomorrow?"}]},
    ]
    body = chat_request(_base(messages=messages, tools=[TOOL],
                              tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": TOOL["input_schema"]}}]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("auto", False)
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no station"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                     {"type": "text", "text": "And tomorrow?"}]},
    ]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    assert chat_request(_base(tools=[TOOL], tool_choice=choice))["tool_choice"] == expected


@pytest.mark.parametrize(("fields", "effort"), [
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 10000}}, "medium"),
    ({"thinking": {"type": "enabled", "budget_tokens": 32000}}, "high"),
    ({"thinking": {"type": "adaptive"}}, None),
    ({"thinking": {"type": "disabled"}}, None),
    ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "high"),
])
def test_thinking_becomes_reasoning_effort(fields: dict[str, Any], effort: str | None) -> None:
    assert chat_request(_base(**fields)).get("reasoning_effort") == effort


def test_output_format_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    body = chat_request(_base(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": schema, "strict": True}}


@pytest.mark.parametrize(("fields", "param"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}]}, "mcp_servers"),
    ({"container": "container_01"}, "container"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages.0.content.0.source"),
    ({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search",
                                                       "input": {}}]}]}, "messages.0.content.0"),
])
def test_what_the_pivot_cannot_express_is_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(RelayError) as raised:
        chat_request(_base(**fields))
    assert raised.value.status == 400 and raised.value.param == param


# ---------------------------------------------------------------- reply

def _completion(message: dict[str, Any], finish: str, **choice: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 8}}}


def test_reply_text_with_usage_excluding_cache_reads() -> None:
    pivot = _completion({"role": "assistant", "content": "Hello!"}, "stop")
    usage = Usage(prompt_tokens=20, completion_tokens=7, cached_tokens=8)
    reply = orjson.loads(DIALECT.reply(_call(_base()), pivot, usage))
    assert reply["id"].startswith("msg_") and len(reply["id"]) > 10
    assert {k: v for k, v in reply.items() if k != "id"} == {
        "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8,
                  "output_tokens": 7}}


def test_reply_tool_calls_and_reasoning() -> None:
    message = {"role": "assistant", "content": None, "reasoning_content": "Need the weather.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    reply = orjson.loads(DIALECT.reply(_call(_base()), _completion(message, "tool_calls"), None))
    assert reply["content"] == [
        {"type": "thinking", "thinking": "Need the weather.", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]
    assert reply["stop_reason"] == "tool_use"
    assert reply["usage"]["input_tokens"] == 12  # read from the pivot body when the adaptor gave no usage


@pytest.mark.parametrize(("finish", "extra", "expected"), [
    ("length", {}, ("max_tokens", None)),
    ("content_filter", {}, ("refusal", None)),
    ("stop", {"stop_reason": "END"}, ("stop_sequence", "END")),  # vLLM names the stop string it met
    ("stop", {"stop_reason": 128001}, ("end_turn", None)),  # ... or the stop token id
])
def test_stop_reasons(finish: str, extra: dict[str, Any], expected: tuple[str, str | None]) -> None:
    pivot = _completion({"role": "assistant", "content": "x"}, finish, **extra)
    reply = orjson.loads(DIALECT.reply(_call(_base(stop_sequences=["END"])), pivot, None))
    assert (reply["stop_reason"], reply["stop_sequence"]) == expected


# ---------------------------------------------------------------- stream

def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


USAGE_CHUNK = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                            "usage": {"prompt_tokens": 20, "completion_tokens": 9,
                                      "prompt_tokens_details": {"cached_tokens": 5}}})


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs; every event must carry its ``event:`` line, as the SDK requires."""
    out = []
    for block in raw.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            assert name.startswith(b"event: ") and data.startswith(b"data: "), block
            event = orjson.loads(data[6:])
            assert event["type"] == name[7:].decode()
            out.append((name[7:].decode(), event))
    return out


def _run(chunks: list[bytes], payload: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    stream = DIALECT.stream(_call(payload or _base(), stream=True))
    raw = b"".join(stream.feed(b"", chunk) for chunk in chunks) + stream.end()
    return _events(raw)


def test_stream_text_event_sequence() -> None:
    events = _run([_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"}), _chunk({"content": "lo"}),
                   _chunk({}, "stop"), USAGE_CHUNK, b"[DONE]"])
    assert [name for name, _ in events] == ["message_start", "content_block_start", "content_block_delta",
                                            "content_block_delta", "content_block_stop", "message_delta",
                                            "message_stop"]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == "claude-sonnet-4-5" and start["content"] == []
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[5][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"input_tokens": 15, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 5, "output_tokens": 9}}


def test_stream_thinking_then_text_then_tools() -> None:
    events = _run([
        _chunk({"role": "assistant", "reasoning_content": "Hmm"}), _chunk({"reasoning_content": "."}),
        _chunk({"content": "Checking."}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ':"Paris"}'}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                "function": {"name": "get_time", "arguments": "{}"}}]}),
        _chunk({}, "tool_calls"), USAGE_CHUNK, b"[DONE]"])
    blocks = [(e["index"], e["content_block"]) for name, e in events if name == "content_block_start"]
    assert blocks == [(0, {"type": "thinking", "thinking": "", "signature": ""}), (1, {"type": "text", "text": ""}),
                      (2, {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}),
                      (3, {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}})]
    deltas = [(e["index"], e["delta"]) for name, e in events if name == "content_block_delta"]
    assert deltas == [(0, {"type": "thinking_delta", "thinking": "Hmm"}), (0, {"type": "thinking_delta", "thinking": "."}),
                      (1, {"type": "text_delta", "text": "Checking."}),
                      (2, {"type": "input_json_delta", "partial_json": '{"city"'}),
                      (2, {"type": "input_json_delta", "partial_json": ':"Paris"}'}),
                      (3, {"type": "input_json_delta", "partial_json": "{}"})]
    stops = [e["index"] for name, e in events if name == "content_block_stop"]
    assert stops == [0, 1, 2, 3]  # each block closed before the next opens
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-1][0] == "message_stop"


def test_stream_cut_before_done_still_closes_the_message() -> None:
    events = _run([_chunk({"content": "Hi there"})])  # no finish, no usage, no [DONE]: end() closes
    assert [name for name, _ in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["usage"]["output_tokens"] == 2  # counted locally: the pivot reported none


def test_stream_error_becomes_an_anthropic_error_event() -> None:
    error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": None, "status": 429}}
    events = _run([_chunk({"content": "Hi"}), orjson.dumps(error)])
    assert events[-1] == ("error", {"type": "error", "error": {"type": "rate_limit_error",
                                                               "message": "Rate limit reached"}})
    assert "message_stop" not in [name for name, _ in events]


def test_error_body_keeps_an_upstream_anthropic_type() -> None:
    assert error_body(RelayError(529, "busy", code="overloaded_error"))["error"]["type"] == "overloaded_error"
    assert error_body(RelayError(404, "no"))["error"] == {"type": "not_found_error", "message": "no"}
    assert error_body(RelayError(502, "down", code="bad_upstream_response"))["error"]["type"] == "api_error"


# ---------------------------------------------------------------- counting

def test_local_count_grows_with_text_tools_and_images() -> None:
    plain = count_tokens(_base())
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with_tools = count_tokens(_base(tools=[TOOL]))
    with_image = count_tokens(_base(messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}, image]}]))
    assert 0 < plain < with_tools and with_image == plain + 1600
