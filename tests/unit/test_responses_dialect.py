"""OpenAI Responses <-> Chat Completions (``dialects.responses``): requests, replies and streams.

Expected shapes follow OpenAI's Responses reference (input items, flattened function
tools, ``text.format``, the ``response`` object, the typed stream events with their
``sequence_number``, ``output_index``, ``content_index`` and ``item_id``) and its chat objects.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from polyrelay.billing.meter import Usage
from polyrelay.dialects.responses import ResponsesDialect, ResponsesStream
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call
from polyrelay.providers.openai_responses import ResponsesUsageWatcher

DIALECT = ResponsesDialect()
TOOL = {"type": "function", "name": "get_weather", "description": "Weather.", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _call(payload: dict[str, Any], stream: bool = False) -> Call:
    return Call(family="openai", endpoint="responses", path="/v1/responses", model="m", body=orjson.dumps(payload),
                content_type="application/json", request_id="req_unit", payload=payload, stream=stream, sse=stream)


def request(**payload: Any) -> dict[str, Any]:
    return DIALECT.request(_call({"model": "m", **payload}))


def test_string_input_with_instructions_and_settings() -> None:
    assert request(input="Hi", instructions="Be brief.", temperature=0.2, top_p=0.9, max_output_tokens=50,
                   reasoning={"effort": "low", "summary": "auto"}, user="u1", store=True, metadata={"a": "b"}) == {
        "model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "temperature": 0.2, "top_p": 0.9, "user": "u1", "max_tokens": 50, "reasoning_effort": "low"}


def test_items_become_messages_and_a_tool_round_trip() -> None:
    sent = request(tools=[TOOL], tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False,
                   input=[
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Weather here?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.",
                                                              "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
    ])
    assert sent["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    ]
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather.", "parameters": TOOL["parameters"], "strict": True}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False


@pytest.mark.parametrize(("format_", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True},
     {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": True}}),
])
def test_text_format_becomes_response_format(format_: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert request(input="Hi", text={"format": format_}).get("response_format") == expected


@pytest.mark.parametrize(("payload", "param", "words"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "keeps no state"),
    ({"conversation": "conv_1"}, "conversation", "keeps no state"),
    ({"background": True}, "background", "keeps no state"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]", "built-in tools"),
    ({"tools": [TOOL, {"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[1]", "built-in tools"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "Use 'auto'"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0]", "'reasoning'"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
     "input[0].content[0]", "'input_file'"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0]", "file ids"),
    ({"input": []}, "input", "non-empty"),
])
def test_what_chat_cannot_express_is_refused(payload: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(RelayError) as info:
        request(**{"input": "Hi", **payload})
    assert (info.value.status, info.value.param) == (400, param) and words in info.value.message


def _completion(message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


def test_reply_with_text_and_a_function_call() -> None:
    call = _call({"model": "m", "input": "Hi", "instructions": "Be brief.", "tools": [TOOL]})
    usage = {"prompt_tokens": 10, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 4},
             "completion_tokens_details": {"reasoning_tokens": 2}}
    body = orjson.loads(DIALECT.reply(call, _completion({"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        "tool_calls", usage), None))
    assert (body["object"], body["status"], body["model"], body["instructions"]) == ("response", "completed", "m",
                                                                                      "Be brief.")
    assert body["id"].startswith("resp_") and body["created_at"] == 1700000000 and body["tools"] == [TOOL]
    message, function_call = body["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_") and message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Let me check."}]
    assert {k: function_call[k] for k in ("type", "status", "call_id", "name", "arguments")} == {
        "type": "function_call", "status": "completed", "call_id": "call_9", "name": "get_weather",
        "arguments": '{"city":"Paris"}'}
    assert body["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                             "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2},
                             "total_tokens": 17}


def test_reply_cut_by_length_is_incomplete_and_usage_falls_back_to_the_billed() -> None:
    body = orjson.loads(DIALECT.reply(_call({"model": "m", "input": "Hi"}),
                                      _completion({"role": "assistant", "content": "Hel"}, "length"),
                                      Usage(prompt_tokens=5, completion_tokens=2, cached_tokens=1)))
    assert (body["status"], body["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"], body["usage"]["total_tokens"]) == (5, 2, 7)


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices,
                         "usage": usage})


def _events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.split(b"\n\n"):
        if block:
            head, data = block.split(b"\n", 1)
            event = orjson.loads(data.removeprefix(b"data: "))
            assert head == b"event: " + event["type"].encode()
            events.append(event)
    return events


def _run(stream: ResponsesStream, *chunks: bytes) -> list[dict[str, Any]]:
    return _events(b"".join(stream.feed(b"", chunk) for chunk in chunks) + stream.end())


def test_stream_of_text_then_tool_calls_is_typed_event_by_event() -> None:
    events = _run(DIALECT.stream(_call({"model": "m", "input": "Hi", "stream": True}, stream=True)),
                  _chunk({"role": "assistant", "content": ""}), _chunk({"content": "Let"}), _chunk({"content": " me"}),
                  _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                          "function": {"name": "f", "arguments": ""}}]}),
                  _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
                  _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                  _chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                          "function": {"name": "g", "arguments": "{}"}}]}),
                  _chunk({}, "tool_calls"), _chunk(usage={"prompt_tokens": 3, "completion_tokens": 4}), b"[DONE]")
    assert [(e["type"], e.get("output_index"), e.get("content_index")) for e in events] == [
        ("response.created", None, None), ("response.in_progress", None, None),
        ("response.output_item.added", 0, None), ("response.content_part.added", 0, 0),
        ("response.output_text.delta", 0, 0), ("response.output_text.delta", 0, 0),
        ("response.output_text.done", 0, 0), ("response.content_part.done", 0, 0), ("response.output_item.done", 0, None),
        ("response.output_item.added", 1, None), ("response.function_call_arguments.delta", 1, None),
        ("response.function_call_arguments.delta", 1, None), ("response.function_call_arguments.done", 1, None),
        ("response.output_item.done", 1, None),
        ("response.output_item.added", 2, None), ("response.function_call_arguments.delta", 2, None),
        ("response.function_call_arguments.done", 2, None), ("response.output_item.done", 2, None),
        ("response.completed", None, None)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    message_id, first_call, second_call = (events[i]["item"]["id"] for i in (2, 9, 14))
    assert {e["item_id"] for e in events[3:8]} == {message_id} and message_id.startswith("msg_")
    assert {e["item_id"] for e in events[10:13]} == {first_call} and first_call.startswith("fc_")
    assert events[6]["text"] == "Let me" and events[12]["arguments"] == '{"a":1}'
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["usage"] is None
    final = events[-1]["response"]
    assert final["id"] == events[0]["response"]["id"] and final["status"] == "completed"
    assert [item["id"] for item in final["output"]] == [message_id, first_call, second_call]
    assert final["output"][1]["call_id"] == "call_1" and final["output"][2]["arguments"] == "{}"
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (3, 4)


def test_stream_cut_by_length_ends_incomplete() -> None:
    events = _run(DIALECT.stream(_call({"model": "m", "input": "Hi"}, stream=True)),
                  _chunk({"content": "Hel"}), _chunk({}, "length"), b"[DONE]")
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_stream_error_is_an_error_event_and_nothing_follows() -> None:
    stream = DIALECT.stream(_call({"model": "m", "input": "Hi"}, stream=True))
    error = {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    events = _run(stream, _chunk({"content": "Hel"}), orjson.dumps({"error": error}), _chunk({"content": "lo"}))
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "error"]
    assert (events[-1]["message"], events[-1]["code"], events[-1]["error"]) == ("Overloaded", "overloaded_error", error)


def test_native_stream_usage_from_the_terminal_event_else_counted() -> None:
    usage = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 9,
             "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 21}
    delta = orjson.dumps({"type": "response.output_text.delta", "sequence_number": 3, "delta": "Hello there"})
    watcher = ResponsesUsageWatcher(_call({"model": "m", "input": "Hi"}, stream=True))
    watcher.observe(b"response.output_text.delta", delta)
    watcher.observe(b"response.completed", orjson.dumps({"type": "response.completed", "response": {"usage": usage}}))
    assert watcher.usage() == Usage(prompt_tokens=12, completion_tokens=9, cached_tokens=2)
    cut = ResponsesUsageWatcher(_call({"model": "m", "input": "Hi"}, stream=True))
    cut.observe(b"response.output_text.delta", delta)  # the caller left before response.completed
    assert cut.usage() == Usage(prompt_tokens=1, completion_tokens=2, source="counted")
