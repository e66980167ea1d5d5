"""Google-format and Claude-format callers on their own paths: bodies pass through, errors in their dialect."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest

from tests.conftest import Gateway
from tests.fakes import anthropic_upstream, gemini_upstream
from tests.fakes.chat_providers import ANTHROPIC_KEY, CALLER, GEMINI_KEY, Upstreams, config, upstreams


@dataclass
class Setup:
    gateway: Gateway
    up: Upstreams


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    with upstreams() as up:
        yield Setup(gateway_factory(config(up)), up)


GEMINI_BODY = {
    "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
    "generationConfig": {"temperature": 0.2, "topK": 3},
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
}
CLAUDE_BODY = {"model": "claude-latest", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], "top_k": 5}
CLAUDE_HEADERS = {"x-api-key": CALLER, "anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"}


def test_gemini_generate_content_passes_through(setup: Setup) -> None:
    body = orjson.dumps(GEMINI_BODY)
    response = httpx.post(setup.gateway.url + "/v1beta/models/gemini-pro:generateContent", content=body,
                          headers={"x-goog-api-key": CALLER, "content-type": "application/json"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["candidates"][0]["content"]["parts"] == [{"text": "".join(gemini_upstream.CHAT_REPLY)}]
    assert data["usageMetadata"]["promptTokenCount"] == gemini_upstream.PROMPT_TOKENS
    recorded = setup.up.gemini.last()
    assert recorded.path == "/v1beta/models/gemini-1.5-flash:generateContent"  # the mapped model, in the URL
    assert recorded.body == body and recorded.headers["x-goog-api-key"] == GEMINI_KEY and recorded.query == ""
    row = setup.gateway.usage_row(response.headers["x-request-id"])
    assert (row.family, row.model, row.upstream_model) == ("gemini", "gemini-pro", "gemini-1.5-flash")
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.cost_micros) == (11, 4, 4, 17)


def test_gemini_stream_with_key_in_query(setup: Setup) -> None:
    url = setup.gateway.url + f"/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse&key={CALLER}"
    with httpx.stream("POST", url, json=GEMINI_BODY) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    events = [orjson.loads(e[6:]) for e in raw.split(b"\r\n\r\n") if e.startswith(b"data: ")]
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == "".join(
        gemini_upstream.CHAT_REPLY)
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert setup.up.gemini.last().query == "alt=sse", "the caller's key must not travel upstream"
    row = setup.gateway.usage_row(request_id)
    assert (row.stream, row.prompt_tokens, row.completion_tokens, row.usage_source) == (True, 11, 4, "upstream")


def test_gemini_errors_in_google_dialect(setup: Setup) -> None:
    url = setup.gateway.url + "/v1beta/models/gemini-1.5-flash:generateContent"
    response = httpx.post(url, json=GEMINI_BODY, headers={"x-goog-api-key": "wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED" and response.json()["error"]["code"] == 401
    response = httpx.post(setup.gateway.url + "/v1beta/models/gemini-rejects:generateContent", json=GEMINI_BODY,
                          headers={"x-goog-api-key": CALLER})
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT" and "temperature" in response.json()["error"]["message"]
    response = httpx.post(setup.gateway.url + "/v1beta/models/gemini-1.5-flash:fly", json=GEMINI_BODY,
                          headers={"x-goog-api-key": CALLER})
    assert response.status_code == 404 and response.json()["error"]["status"] == "NOT_FOUND"


def test_claude_messages_pass_through(setup: Setup) -> None:
    response = httpx.post(setup.gateway.url + "/v1/messages", json=CLAUDE_BODY, headers=CLAUDE_HEADERS)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["type"] == "message" and data["content"][0]["text"] == "".join(anthropic_upstream.CHAT_REPLY)
    recorded = setup.up.anthropic.last()
    sent = orjson.loads(recorded.body)
    assert sent == {**CLAUDE_BODY, "model": "claude-3-5-haiku"}  # only the mapped model changed
    assert recorded.headers["x-api-key"] == ANTHROPIC_KEY
    assert recorded.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    row = setup.gateway.usage_row(response.headers["x-request-id"])
    assert (row.family, row.prompt_tokens, row.cached_tokens, row.completion_tokens) == ("anthropic", 14, 3, 4)
    assert row.cache_write_tokens == 2
    assert row.cost_micros == 32  # 9 x 1 + 3 reads x 0.1 + 2 writes x 1.25 + 4 x 5 = 31.8 micro-USD


def test_claude_messages_stream(setup: Setup) -> None:
    headers = {k: v for k, v in CLAUDE_HEADERS.items() if k != "x-api-key"} | {"authorization": f"Bearer {CALLER}"}
    with httpx.stream("POST", setup.gateway.url + "/v1/messages", json={**CLAUDE_BODY, "stream": True},
                      headers=headers) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    names = [line[7:] for line in raw.split(b"\n") if line.startswith(b"event: ")]
    assert names[0] == b"message_start" and names[-1] == b"message_stop" and b"ping" in names
    assert names.count(b"content_block_delta") == 4
    row = setup.gateway.usage_row(request_id)
    assert (row.stream, row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (True, 14, 3, 4)
    assert (row.cache_write_tokens, row.cost_micros) == (2, 32)


def test_claude_errors_in_anthropic_dialect(setup: Setup) -> None:
    response = httpx.post(setup.gateway.url + "/v1/messages", json=CLAUDE_BODY,
                          headers={**CLAUDE_HEADERS, "x-api-key": "wrong"})
    assert response.status_code == 401
    assert response.json() == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": response.json()["error"]["message"]}}
    response = httpx.post(setup.gateway.url + "/v1/messages", json={**CLAUDE_BODY, "model": "claude-busy-only"},
                          headers=CLAUDE_HEADERS)
    assert response.status_code == 529 and response.json()["error"]["type"] == "overloaded_error"
    response = httpx.post(setup.gateway.url + "/v1/messages", json={**CLAUDE_BODY, "model": "claude-3-opus"},
                          headers=CLAUDE_HEADERS)
    assert response.status_code == 200  # failed over from the overloaded channel
    assert setup.gateway.usage_row(response.headers["x-request-id"]).attempts == 2
    response = httpx.post(setup.gateway.url + "/v1/messages", json={"max_tokens": 5, "messages": []},
                          headers=CLAUDE_HEADERS)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
