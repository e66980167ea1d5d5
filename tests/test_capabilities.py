"""Routing by what a channel's type can serve, not only by its model list.

An operator adds ``midjourney``, ``ideogram`` and ``suno`` channels without a model list next to an
``openai`` channel that lists its models, all at the same priority. "No model list" means every
model *of the kinds that type serves*: a chat must never land on a Midjourney channel (HTTP 500
today), an unknown model is a clean 404, a native Claude or Gemini request for a model only an
``openai`` channel serves is translated to chat there, and one for an image model is refused in the
caller's dialect without reaching any upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.fakes import ideogram_upstream, midjourney_proxy, openai_upstream, suno_upstream
from tests.fakes.server import FakeServer
from tests.image_setup import JPEG
from tests.test_ideogram import REFERENCE_IMAGE_REQUEST

OPENAI_KEY, IDEOGRAM_KEY = "sk-openai-capabilities", "ideo-capabilities-key"
ALICE = "sk-capabilities-alice-0123456789"
HI = [{"role": "user", "content": "Hi"}]
REPLY = "".join(openai_upstream.CHAT_REPLY)


@dataclass
class Mixed:
    gateway: Gateway
    fakes: dict[str, FakeServer]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key=ALICE, base_url=self.gateway.v1, max_retries=0, timeout=20)

    def received(self) -> dict[str, list[str]]:
        """What each fake upstream has received so far, as "METHOD /path"."""
        return {name: [f"{r.method} {r.path}" for r in list(fake.requests)] for name, fake in self.fakes.items()}

    @contextmanager
    def logging_no_traceback(self) -> Iterator[None]:
        """The gateway logs no Traceback while the block runs (a 500 is a bug, not an answer)."""
        mark = len(self.gateway.logs())
        yield
        tail = self.gateway.logs()[mark:]
        assert "Traceback" not in tail, tail[-3000:]

    def since(self, before: dict[str, list[str]]) -> dict[str, list[str]]:
        now = self.received()
        return {name: requests[len(before[name]):] for name, requests in now.items() if requests[len(before[name]):]}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers = {"openai": FakeServer(openai_upstream.create_app({OPENAI_KEY})).start(),
               "midjourney": FakeServer(midjourney_proxy.create_app()).start(),
               "ideogram": FakeServer(ideogram_upstream.create_app({IDEOGRAM_KEY})).start(),
               "suno": FakeServer(suno_upstream.create_app()).start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def mixed(gateway_factory: Callable[..., Gateway], fakes: dict[str, FakeServer]) -> Mixed:
    config: dict[str, Any] = {
        "channels": [
            {"name": "openai", "type": "openai", "base_url": fakes["openai"].url, "keys": [OPENAI_KEY],
             "models": ["gpt-4o-mini", "dall-e-3", "tts-1"]},
            {"name": "midjourney", "type": "midjourney", "base_url": fakes["midjourney"].url,
             "keys": [midjourney_proxy.SECRET]},
            {"name": "ideogram", "type": "ideogram", "base_url": fakes["ideogram"].url, "keys": [IDEOGRAM_KEY]},
            {"name": "suno", "type": "suno", "base_url": fakes["suno"].url, "keys": [suno_upstream.SUNO_KEY]},
        ],
        "tokens": [{"name": "alice", "key": ALICE}],
        "prices": {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}, "dall-e-3": {"per_image": 0.04},
                   "tts-1": {"per_mchar": 15}, "ideogram-V_1": {"per_image": 0.06}},
    }
    return Mixed(gateway_factory(config), fakes)


def _outcome(call: Callable[[], Any]) -> str:
    """"ok", or what went wrong, for a tally."""
    try:
        call()
    except openai.APIStatusError as error:
        return f"HTTP {error.status_code}: {error.response.text[:160]}"
    return "ok"


def test_chat_goes_only_to_the_channel_that_serves_chat(mixed: Mixed) -> None:
    client = mixed.client()

    def chat() -> None:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert completion.choices[0].message.content == REPLY

    before = mixed.received()
    with mixed.logging_no_traceback():
        outcomes = [_outcome(chat) for _ in range(30)]
        failed = [o for o in outcomes if o != "ok"]
        assert not failed, f"{len(failed)} of 30 chats failed: {sorted(set(failed))}"
    assert mixed.since(before) == {"openai": ["POST /v1/chat/completions"] * 30}


def test_images_and_speech_go_to_the_openai_channel(mixed: Mixed) -> None:
    client = mixed.client()

    def image() -> None:
        generated = client.images.generate(model="dall-e-3", prompt="a cat", n=1)
        assert generated.data[0].url == "https://images.example/fake-0.png"

    def speech() -> None:
        spoken = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there")
        assert spoken.content == openai_upstream.SPEECH_BYTES

    before = mixed.received()
    with mixed.logging_no_traceback():
        outcomes = [_outcome(call) for call in (image, speech) * 8]
        failed = [o for o in outcomes if o != "ok"]
        assert not failed, f"{len(failed)} of 16 calls failed: {sorted(set(failed))}"
    assert mixed.since(before) == {"openai": ["POST /v1/images/generations", "POST /v1/audio/speech"] * 8}


def test_a_model_nobody_serves_is_a_404_naming_it(mixed: Mixed) -> None:
    client = mixed.client()
    before = mixed.received()
    with mixed.logging_no_traceback():
        for _ in range(5):
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model="nope", messages=HI)
            error = info.value
            assert isinstance(error, openai.NotFoundError), f"HTTP {error.status_code}: {error.response.text[:300]}"
            assert error.code == "model_not_found", error.response.text
            assert isinstance(error.body, dict) and "'nope'" in error.body["message"], error.response.text
    assert mixed.since(before) == {}


def test_the_reference_remix_call_in_a_mixed_config(mixed: Mixed) -> None:
    """The remix reference call (../shared/api/ideogram-remix-reference.md): only the ideogram channel serves it."""
    before = mixed.received()
    outcomes = []
    with mixed.logging_no_traceback():
        for _ in range(6):
            response = httpx.post(mixed.gateway.url + "/ideogram/v1/remix", timeout=30,
                                  headers={"Authorization": f"Bearer {ALICE}"},
                                  files={"image_file": ("beach.jpg", JPEG, "image/jpeg")},
                                  data={"image_request": REFERENCE_IMAGE_REQUEST})
            if response.status_code != 200:
                outcomes.append(f"HTTP {response.status_code}: {response.text[:160]}")
                continue
            (image,) = response.json()["data"]
            assert image["seed"] == 12345 and image["url"].startswith("https://"), response.text
            outcomes.append("ok")
        failed = [o for o in outcomes if o != "ok"]
        assert not failed, f"{len(failed)} of 6 remixes failed: {sorted(set(failed))}"
    assert mixed.since(before) == {"ideogram": ["POST /remix"] * 6}
    assert {r.headers["Api-Key"] for r in mixed.fakes["ideogram"].requests[-6:]} == {IDEOGRAM_KEY}


def test_claude_and_gemini_calls_for_an_openai_model_are_translated_only_there(mixed: Mixed) -> None:
    before = mixed.received()
    with mixed.logging_no_traceback():
        for _ in range(3):
            claude = httpx.post(mixed.gateway.url + "/v1/messages", timeout=30,
                                headers={"x-api-key": ALICE, "anthropic-version": "2023-06-01"},
                                json={"model": "gpt-4o-mini", "max_tokens": 64, "messages": HI})
            assert claude.status_code == 200, claude.text
            assert claude.json()["content"][0]["text"] == REPLY
            gemini = httpx.post(mixed.gateway.url + "/v1beta/models/gpt-4o-mini:generateContent", timeout=30,
                                headers={"x-goog-api-key": ALICE},
                                json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
            assert gemini.status_code == 200, gemini.text
            assert gemini.json()["candidates"][0]["content"]["parts"][0]["text"] == REPLY
    assert mixed.since(before) == {"openai": ["POST /v1/chat/completions"] * 6}


def test_claude_and_gemini_calls_for_an_image_model_are_refused_unsent(mixed: Mixed) -> None:
    before = mixed.received()
    with mixed.logging_no_traceback():
        for _ in range(3):
            response = httpx.post(mixed.gateway.url + "/v1/messages", timeout=30,
                                  headers={"x-api-key": ALICE, "anthropic-version": "2023-06-01"},
                                  json={"model": "ideogram-V_1", "max_tokens": 64, "messages": HI})
            assert response.status_code == 404, response.text
            body = response.json()
            assert set(body) == {"type", "error"} and body["type"] == "error", body
            assert body["error"]["type"] == "not_found_error" and "ideogram-V_1" in body["error"]["message"], body
            response = httpx.post(mixed.gateway.url + "/v1beta/models/ideogram-V_1:generateContent", timeout=30,
                                  headers={"x-goog-api-key": ALICE},
                                  json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
            assert response.status_code == 404, response.text
            assert set(response.json()) == {"error"}, response.text
            error = response.json()["error"]
            assert (error["code"], error["status"]) == (404, "NOT_FOUND") and "ideogram-V_1" in error["message"], error
    assert mixed.since(before) == {}
