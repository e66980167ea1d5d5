"""Every OpenAI endpoint polyrelay serves, through the official SDK: what the caller gets and what is billed."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.fakes import openai_upstream
from tests.fakes.openai_upstream import (
    AUDIO_SECONDS,
    CHAT_REPLY,
    COMPLETION_TOKENS,
    FORMS,
    PROMPT_TOKENS,
    SPEECH_BYTES,
    TRANSCRIPT,
)
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-endpoints"
ALICE = "sk-alice-endpoints-0123456789"
RESTRICTED = "sk-restricted-endpoints-0123456789"
MAX_BODY = 256 * 1024

# Bytes that a careless multipart splice or parser would damage: CRLFs, dashes that start
# a boundary line, NULs and every byte value.
IMAGE = b"\x89PNG\r\n\x1a\n" + b"\r\n--\r\n-- \r\n" + random.Random(7).randbytes(40_000) + b"\r\n--"
AUDIO = b"RIFF\x00\x00\x00\x00WAVEfmt \r\n--" + random.Random(8).randbytes(20_000)


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeServer

    def client(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.gateway.v1, max_retries=0, timeout=20)

    def last_form(self) -> dict[str, bytes | str]:
        forms: list[dict[str, bytes | str]] = self.upstream.app[FORMS]
        assert forms, "the fake upstream received no multipart request"
        return forms[-1]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Setup:
    config = {
        "max_body_bytes": MAX_BODY,
        "channels": [
            {
                "name": "main",
                "type": "openai",
                "base_url": upstream.url,
                "keys": [UPSTREAM_KEY],
                "models": [
                    "text-embedding-3-small",
                    "dall-e-3",
                    "tts-1",
                    "whisper-1",
                    "gpt-3.5-turbo-instruct",
                ],
                # The image model the SDK defaults to runs upstream under another name.
                "model_mapping": {"dall-e-2": "gpt-image-1"},
            },
        ],
        "tokens": [
            {"name": "alice", "key": ALICE, "quota_usd": 100.0},
            # gpt-5 is allowed but no channel serves it: it must not be listed.
            {"name": "restricted", "key": RESTRICTED, "models": ["text-embedding-3-small", "tts-1", "gpt-5"]},
        ],
        "prices": {
            "text-embedding-3-small": {"input_per_mtok": 100},  # 100 micro-USD per token
            "dall-e-2": {"per_image": 0.02},
            "dall-e-3": {"per_image": 0.04},
            "tts-1": {"per_mchar": 15},  # 15 micro-USD per character
            "whisper-1": {"per_second": 0.006},
            "gpt-3.5-turbo-instruct": {"input_per_mtok": 1.5, "output_per_mtok": 2},
        },
    }
    return Setup(gateway_factory(config), upstream)


def _request_id(raw: Any) -> str:
    return raw.headers["x-request-id"]


# --- embeddings ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding_format", ["float", None])
def test_embeddings_values_and_billing(setup: Setup, encoding_format: str | None) -> None:
    """float as asked, and the SDK default (base64, decoded by the SDK) give the upstream's vectors."""
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    raw = setup.client().embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["first", "second"], **extra
    )
    result = raw.parse()
    assert [item.embedding for item in result.data] == [
        openai_upstream.embedding_vector(0),
        openai_upstream.embedding_vector(1),
    ]
    sent = setup.upstream.last("/v1/embeddings").body
    assert (b'"encoding_format":"base64"' in sent) == (encoding_format is None)
    assert result.usage.prompt_tokens == 10
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.status_code, row.prompt_tokens, row.usage_source) == (200, 10, "upstream")
    assert row.cost_micros == 10 * 100


# --- images -------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_image_generation_bills_each_image(setup: Setup, response_format: str) -> None:
    raw = setup.client().images.with_raw_response.generate(
        model="dall-e-3", prompt="a cat", n=2, response_format=response_format  # type: ignore[arg-type]
    )
    images = raw.parse().data or []
    assert len(images) == 2
    if response_format == "url":
        assert images[0].url == "https://images.example/fake-0.png"
    else:
        assert images[1].b64_json is not None and images[1].url is None
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.status_code, row.images, row.cost_micros) == (200, 2, 2 * 40_000)


def test_image_generation_default_model_is_mapped(setup: Setup) -> None:
    raw = setup.client().images.with_raw_response.generate(prompt="a cat")  # the API's default: dall-e-2
    assert len(raw.parse().data or []) == 1
    assert b'"model":"gpt-image-1"' in setup.upstream.last("/v1/images/generations").body
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.model, row.upstream_model, row.cost_micros) == ("dall-e-2", "gpt-image-1", 20_000)


def test_image_edit_forwards_the_file_and_maps_the_model(setup: Setup) -> None:
    raw = setup.client().images.with_raw_response.edit(
        model="dall-e-2", image=("cat.png", IMAGE, "image/png"), prompt="add a hat", n=1
    )
    assert len(raw.parse().data or []) == 1
    form = setup.last_form()
    assert form["image"] == IMAGE
    assert (form["model"], form["prompt"], form["n"]) == ("gpt-image-1", "add a hat", "1")
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.model, row.upstream_model, row.images, row.cost_micros) == ("dall-e-2", "gpt-image-1", 1, 20_000)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK deprecates variations; the API serves them
def test_image_variation_without_model_uses_the_mapped_default(setup: Setup) -> None:
    """No ``model`` field: the gateway routes the default (dall-e-2), so upstream must hear the mapped name."""
    raw = setup.client().images.with_raw_response.create_variation(image=("cat.png", IMAGE, "image/png"), n=2)
    assert len(raw.parse().data or []) == 2
    form = setup.last_form()
    assert form["image"] == IMAGE
    assert form["model"] == "gpt-image-1"
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.model, row.images, row.cost_micros) == ("dall-e-2", 2, 2 * 20_000)


# --- audio --------------------------------------------------------------------------------


def test_speech_returns_the_audio_bytes_and_bills_characters(setup: Setup) -> None:
    text = "Hello there, this is polyrelay speaking."
    raw = setup.client().audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input=text)
    assert raw.content == SPEECH_BYTES
    assert raw.headers["content-type"].startswith("audio/mpeg")
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.status_code, row.characters, row.cost_micros) == (200, len(text), 15 * len(text))


SRT = f"1\n00:00:00,000 --> 00:00:07,250\n{TRANSCRIPT}\n"
VTT = f"WEBVTT\n\n1\n00:00:00.000 --> 00:00:07.250\n{TRANSCRIPT}\n"


@pytest.mark.parametrize("response_format", [None, "json", "text", "srt", "vtt", "verbose_json"])
def test_transcription_answers_the_asked_format_and_bills_seconds(setup: Setup, response_format: str | None) -> None:
    extra = {"response_format": response_format} if response_format else {}
    raw = setup.client().audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("speech.wav", AUDIO, "audio/wav"), **extra
    )
    result = raw.parse()
    if response_format in (None, "json"):
        assert isinstance(result, openai.types.audio.Transcription)
        assert raw.http_response.json() == {"text": TRANSCRIPT}  # not the verbose_json we asked upstream for
    elif response_format == "text":
        assert isinstance(result, str) and result.strip() == TRANSCRIPT
        assert raw.headers["content-type"].startswith("text/plain")
    elif response_format == "srt":
        assert result == SRT
    elif response_format == "vtt":
        assert result == VTT
    else:
        assert isinstance(result, openai.types.audio.TranscriptionVerbose)
        assert (result.duration, result.text) == (AUDIO_SECONDS, TRANSCRIPT)
    form = setup.last_form()
    assert form["file"] == AUDIO
    # json and text carry no duration, so the gateway asks a whisper upstream for verbose_json.
    upstream_format = "verbose_json" if response_format in (None, "json", "text") else response_format
    assert form["response_format"] == upstream_format
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.status_code, row.seconds) == (200, AUDIO_SECONDS)
    assert row.cost_micros == round(AUDIO_SECONDS * 6_000)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's raw-response wrapper warns here
def test_translation_answers_and_bills_seconds(setup: Setup) -> None:
    raw = setup.client().audio.translations.with_raw_response.create(
        model="whisper-1", file=("speech.wav", AUDIO, "audio/wav")
    )
    assert raw.parse().text == TRANSCRIPT
    assert raw.http_response.json() == {"text": TRANSCRIPT}
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.endpoint, row.seconds, row.cost_micros) == ("audio.translations", AUDIO_SECONDS, 43_500)


# --- models -------------------------------------------------------------------------------


def test_models_list_reflects_the_allow_list(setup: Setup) -> None:
    assert sorted(m.id for m in setup.client(RESTRICTED).models.list()) == ["text-embedding-3-small", "tts-1"]
    everything = {m.id for m in setup.client().models.list()}
    assert everything == {
        "text-embedding-3-small", "dall-e-2", "dall-e-3", "tts-1", "whisper-1", "gpt-3.5-turbo-instruct"
    }


def test_models_retrieve_respects_the_allow_list(setup: Setup) -> None:
    model = setup.client(RESTRICTED).models.retrieve("tts-1")
    assert (model.id, model.object) == ("tts-1", "model")
    with pytest.raises(openai.NotFoundError):
        setup.client(RESTRICTED).models.retrieve("whisper-1")  # served, but not for this key
    with pytest.raises(openai.NotFoundError):
        setup.client(RESTRICTED).models.retrieve("gpt-5")  # allowed, but nobody serves it
    with pytest.raises(openai.AuthenticationError):
        setup.client("sk-nobody").models.list()


# --- completions --------------------------------------------------------------------------


def test_completion(setup: Setup) -> None:
    raw = setup.client().completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    completion = raw.parse()
    assert completion.choices[0].text == "".join(CHAT_REPLY)
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.prompt_tokens, row.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert row.usage_source == "upstream"
    assert row.cost_micros == 30  # 12 * 1.5 + 6 * 2


def test_completion_stream(setup: Setup) -> None:
    raw = setup.client().completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True
    )
    chunks = list(raw.parse())
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "".join(CHAT_REPLY)
    assert all(c.choices for c in chunks), "the usage chunk the gateway asked for reached the caller"
    assert b'"include_usage":true' in setup.upstream.last("/v1/completions").body
    row = setup.gateway.usage_row(_request_id(raw))
    assert (row.stream, row.prompt_tokens, row.completion_tokens) == (True, PROMPT_TOKENS, COMPLETION_TOKENS)
    assert (row.usage_source, row.cost_micros) == ("upstream", 30)


def test_completion_stream_with_usage_when_asked(setup: Setup) -> None:
    chunks = list(
        setup.client().completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS


# --- request size -------------------------------------------------------------------------


def test_body_over_the_limit_is_refused_before_any_upstream_call(setup: Setup) -> None:
    before = len(setup.upstream.requests)
    with pytest.raises(openai.APIStatusError) as info:
        setup.client().embeddings.create(model="text-embedding-3-small", input="x" * (MAX_BODY + 1))
    assert info.value.status_code == 413
    assert info.value.code == "request_too_large"  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"model":"text-embedding-3-small","input":"'
        for _ in range(MAX_BODY // 8192 + 1):
            yield b"x" * 8192
        yield b'"}'

    response = httpx.post(
        setup.gateway.v1 + "/embeddings", content=chunks(), headers={"Authorization": f"Bearer {ALICE}"}, timeout=20
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    assert len(setup.upstream.requests) == before

