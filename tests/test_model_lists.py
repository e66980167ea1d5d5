"""``GET /models`` for each SDK: OpenAI's, Anthropic's and Google's clients each read their own shape.

Three SDKs share ``/v1/models``; polyrelay tells them apart by how they authenticate and
answers each with the models its calls can reach (bridged ones included), paginated
the SDK's way, with refusals in the SDK's own error shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.conftest import Gateway
from tests.fakes.chat_providers import CALLER, Upstreams, config, upstreams


@dataclass
class Setup:
    gateway: Gateway
    up: Upstreams


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    with upstreams() as up:
        settings = config(up)
        settings["tokens"].append({"name": "narrow", "key": "sk-narrow-0123456789abcdef", "quota_usd": 1.0,
                                   "models": ["claude-3-5-haiku", "gemini-1.5-flash"]})
        yield Setup(gateway_factory(settings), up)


def _gemini(gateway: Gateway, key: str = CALLER, version: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=gateway.url, api_version=version) if version else \
        types.HttpOptions(base_url=gateway.url)
    return genai.Client(api_key=key, http_options=options)


def test_openai_sdk_lists_every_model_the_key_may_use(setup: Setup) -> None:
    client = openai.OpenAI(api_key=CALLER, base_url=setup.gateway.v1, max_retries=0)
    ids = [model.id for model in client.models.list()]
    assert "gemini-1.5-flash" in ids and "claude-3-5-haiku" in ids and "gpt-4o-azure" in ids
    assert client.models.retrieve("claude-3-5-haiku").owned_by == "polyrelay"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_anthropic_sdk_reads_claude_shaped_pages(setup: Setup) -> None:
    client = anthropic.Anthropic(api_key=CALLER, base_url=setup.gateway.url, max_retries=0)
    first = client.models.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    assert all(model.type == "model" and model.display_name == model.id for model in first.data)
    everything = [model.id for model in client.models.list(limit=2)]  # the SDK follows after_id
    assert everything == sorted(everything) and len(everything) > 2
    # Claude calls reach Gemini and Azure models too, through the chat bridge; embedding-only names do not show.
    assert {"claude-3-5-haiku", "gemini-1.5-flash", "gpt-4o-azure"} <= set(everything)
    assert client.models.retrieve("claude-3-5-haiku").id == "claude-3-5-haiku"
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="sk-wrong", base_url=setup.gateway.url, max_retries=0).models.list()


@pytest.mark.parametrize("version", [None, "v1beta"], ids=["default-version", "v1beta"])
def test_google_sdk_lists_and_gets_models(setup: Setup, version: str | None) -> None:
    client = _gemini(setup.gateway, version=version)
    models = list(client.models.list(config={"page_size": 3}))  # three pages at least: the SDK follows tokens
    names = [model.name for model in models]
    assert "models/gemini-1.5-flash" in names and "models/claude-3-5-haiku" in names
    assert len(names) == len(set(names)) > 3
    model = client.models.get(model="gemini-1.5-flash")
    assert model.name == "models/gemini-1.5-flash"
    assert "generateContent" in (model.supported_actions or [])
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.get(model="no-such-model")
    assert raised.value.code == 404 and raised.value.status == "NOT_FOUND"


def test_a_narrow_key_sees_only_its_models_in_every_shape(setup: Setup) -> None:
    key = "sk-narrow-0123456789abcdef"
    openai_ids = [m.id for m in openai.OpenAI(api_key=key, base_url=setup.gateway.v1, max_retries=0).models.list()]
    claude_ids = [m.id for m in anthropic.Anthropic(api_key=key, base_url=setup.gateway.url,
                                                    max_retries=0).models.list()]
    google = _gemini(setup.gateway, key)  # held: a dropped client closes its connection pool under the pager
    gemini_names = [m.name for m in google.models.list()]
    assert openai_ids == claude_ids == ["claude-3-5-haiku", "gemini-1.5-flash"]
    assert gemini_names == ["models/claude-3-5-haiku", "models/gemini-1.5-flash"]


def test_bad_paging_is_refused_in_the_callers_shape(setup: Setup) -> None:
    url = setup.gateway.url
    claude = httpx.get(url + "/v1/models?limit=0", headers={"x-api-key": CALLER, "anthropic-version": "2023-06-01"})
    assert claude.status_code == 400 and claude.json()["error"]["type"] == "invalid_request_error"
    google = httpx.get(url + "/v1beta/models?pageToken=abc", headers={"x-goog-api-key": CALLER})
    assert google.status_code == 400 and google.json()["error"]["status"] == "INVALID_ARGUMENT"
    unauthenticated = httpx.get(url + "/v1beta/models")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["status"] == "UNAUTHENTICATED"


def test_unknown_paths_answer_in_the_shape_of_the_sdk_that_asked(setup: Setup) -> None:
    url = setup.gateway.url
    claude = httpx.post(url + "/v1/complete", json={},
                        headers={"x-api-key": CALLER, "anthropic-version": "2023-06-01"})
    assert claude.status_code == 404 and claude.json()["type"] == "error"
    assert claude.json()["error"]["type"] == "not_found_error"
    google = httpx.post(url + "/v1/cachedContents", json={}, headers={"x-goog-api-key": CALLER})
    assert google.status_code == 404 and google.json()["error"]["status"] == "NOT_FOUND"
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        openai.OpenAI(api_key=CALLER, base_url=setup.gateway.v1, max_retries=0).post(
            "/assistants/x", cast_to=object, body={})
