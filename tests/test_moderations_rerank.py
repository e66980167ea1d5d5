"""``/v1/moderations`` (the ``openai`` SDK, an openai channel) and ``/v1/rerank`` (Jina's shape, over httpx)
relayed to Jina and Cohere channels: what the caller gets, what the upstream got, and what is billed.

One gateway for the module. The cohere channel has no model list, so it serves every rerank model
the jina channels do not list, and nothing but rerank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import Gateway
from tests.fakes import openai_upstream, rerank_upstream
from tests.fakes.server import FakeServer

OPENAI_KEY = "sk-openai-moderations"
JINA_KEY = "jina_upstream_key_0123"
COHERE_KEY = "cohere-upstream-key-0123"
CALLER = "sk-caller-moderations-0123456789"  # metered: unpriced models are refused
FREE = "sk-free-moderations-0123456789"  # unlimited: unpriced models run for nothing

QUERY = "capital of France"
DOCUMENTS: list[Any] = [
    "Berlin is the capital of Germany.",
    {"text": "Paris is the capital of France."},
    "France borders Spain.",
]


@dataclass
class Setup:
    gateway: Gateway
    openai: FakeServer
    jina: FakeServer
    jina_revoked: FakeServer
    cohere: FakeServer

    def client(self, key: str = CALLER) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.gateway.v1, max_retries=0, timeout=20)

    def post(self, path: str, body: dict[str, Any], key: str = CALLER) -> httpx.Response:
        return httpx.post(self.gateway.v1 + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20)

    def cost(self, response: httpx.Response) -> Any:
        return self.gateway.usage_row(response.headers["x-request-id"])


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    servers = [
        FakeServer(openai_upstream.create_app({OPENAI_KEY})).start(),
        FakeServer(rerank_upstream.create_jina({JINA_KEY})).start(),
        FakeServer(rerank_upstream.create_jina({"jina_current_key"})).start(),
        FakeServer(rerank_upstream.create_cohere({COHERE_KEY})).start(),
    ]
    fake_openai, jina, jina_revoked, cohere = servers
    config = {
        "cooldown_after_failures": 1000,
        "channels": [
            {"name": "openai", "type": "openai", "base_url": fake_openai.url, "keys": [OPENAI_KEY],
             "models": ["omni-moderation-latest", "text-moderation-latest", "text-moderation-stable",
                        "text-moderation-ancient"]},
            {"name": "jina-revoked", "type": "jina", "base_url": jina_revoked.url, "keys": ["jina_revoked_key"],
             "models": ["bge-reranker-v2-m3"], "priority": 20},
            {"name": "jina", "type": "jina", "base_url": jina.url, "keys": [JINA_KEY], "priority": 10,
             "models": ["jina-reranker-v2-base-multilingual", "jina-latest", "bge-reranker-v2-m3", "jina-unknown"],
             "model_mapping": {"jina-latest": "jina-reranker-m0"}},
            {"name": "cohere", "type": "cohere", "base_url": cohere.url, "keys": [COHERE_KEY]},
        ],
        "tokens": [{"name": "caller", "key": CALLER, "quota_usd": 10.0}, {"name": "free", "key": FREE}],
        "prices": {
            "omni-moderation-latest": {"per_request": 0.0002},  # 200 micro-USD
            "text-moderation-latest": {"input_per_mtok": 1000},  # 1000 micro-USD per token
            "text-moderation-ancient": {"per_request": 0.0001},
            "jina-*": {"input_per_mtok": 50},
            "bge-reranker-v2-m3": {"per_request": 0.001},
            "rerank-v3.5": {"per_request": 0.002},  # per Cohere search unit
            "rerank-multilingual-v3.0": {"input_per_mtok": 100},
            "rerank-english-v1": {"per_request": 0.002},
        },
    }
    try:
        yield Setup(gateway_factory(config), *servers)
    finally:
        for server in servers:
            server.stop()


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# --- moderations ------------------------------------------------------------------------------

def test_moderation_of_a_string_is_relayed_as_sent_and_billed_per_request(setup: Setup) -> None:
    raw = setup.client().moderations.with_raw_response.create(input="I will kill the slow process.")
    moderation = raw.parse()
    assert moderation.model == "omni-moderation-2024-09-26"  # the upstream resolved the default model
    (result,) = moderation.results
    assert result.flagged and result.categories.violence and not result.categories.hate
    assert result.category_scores.violence == pytest.approx(0.91)

    recorded = setup.openai.last()
    assert recorded.path == "/v1/moderations" and recorded.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert orjson.loads(recorded.body) == {"input": "I will kill the slow process."}  # no model added

    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.endpoint, row.model, row.status_code) == ("openai", "moderations",
                                                                            "omni-moderation-latest", 200)
    assert row.cost_micros == 200


def test_moderation_of_strings_and_of_text_and_image_parts(setup: Setup) -> None:
    client = setup.client()
    several = client.moderations.create(model="omni-moderation-latest", input=["hello there", "kill it"])
    assert [result.flagged for result in several.results] == [False, True]

    parts = client.moderations.create(model="omni-moderation-latest", input=[
        {"type": "text", "text": "a quiet lake"},
        {"type": "image_url", "image_url": {"url": "https://images.example/lake.png"}},
    ])
    (result,) = parts.results  # one verdict for the whole multimodal input
    assert not result.flagged and result.category_applied_input_types.violence == ["text", "image"]


def test_moderation_priced_per_token_is_billed_by_the_counted_input(setup: Setup) -> None:
    raw = setup.client().moderations.with_raw_response.create(model="text-moderation-latest",
                                                               input=["first sentence here", "and a second one"])
    assert len(raw.parse().results) == 2
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert row.usage_source == "counted" and row.prompt_tokens >= 6
    assert row.cost_micros == row.prompt_tokens * 1000


def test_an_unpriced_moderation_model_is_refused_to_metered_keys_and_free_for_unlimited_ones(setup: Setup) -> None:
    sent = len(setup.openai.requests)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        setup.client().moderations.create(model="text-moderation-stable", input="hi")
    assert refused.value.code == "model_price_not_set" and len(setup.openai.requests) == sent

    raw = setup.client(FREE).moderations.with_raw_response.create(model="text-moderation-stable", input="hi")
    assert raw.parse().model == "text-moderation-007"
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.cost_micros, row.price_set) == (0, False)


def test_moderation_errors_are_openai_errors(setup: Setup) -> None:
    client = setup.client()
    with pytest.raises(openai.NotFoundError) as no_channel:
        client.moderations.create(model="omni-moderation-next", input="hi")
    assert no_channel.value.code == "model_not_found"

    with pytest.raises(openai.NotFoundError) as upstream:  # the channel lists it, the upstream does not know it
        client.moderations.create(model="text-moderation-ancient", input="hi")
    assert "The model `text-moderation-ancient` does not exist" in upstream.value.message

    missing = setup.post("/moderations", {"model": "omni-moderation-latest"})
    assert missing.status_code == 400 and _error(missing)["param"] == "input"
    wrong = setup.post("/moderations", {"input": 42})
    assert wrong.status_code == 400 and _error(wrong)["param"] == "input"


# --- rerank -----------------------------------------------------------------------------------

def test_jina_rerank_passes_through_and_is_billed_by_the_reported_tokens(setup: Setup) -> None:
    body = {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "documents": DOCUMENTS, "top_n": 2}
    response = setup.post("/rerank", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [(r["index"], r["document"]["text"]) for r in answer["results"]] == [
        (1, "Paris is the capital of France."), (0, "Berlin is the capital of Germany.")]
    assert answer["results"][0]["relevance_score"] == 1.0
    texts = [DOCUMENTS[0], DOCUMENTS[1]["text"], DOCUMENTS[2]]
    tokens = rerank_upstream.jina_tokens(QUERY, texts)
    assert answer["usage"] == {"total_tokens": tokens}

    recorded = setup.jina.last()
    assert recorded.path == "/v1/rerank" and recorded.headers["Authorization"] == f"Bearer {JINA_KEY}"
    assert orjson.loads(recorded.body) == body  # as the caller sent it

    row = setup.cost(response)
    assert (row.channel_name, row.endpoint, row.prompt_tokens, row.usage_source) == ("jina", "rerank", tokens,
                                                                                     "upstream")
    assert row.cost_micros == tokens * 50


def test_jina_rerank_with_a_mapped_model_and_without_documents(setup: Setup) -> None:
    response = setup.post("/rerank", {"model": "jina-latest", "query": QUERY, "documents": DOCUMENTS,
                                      "return_documents": False})
    assert response.status_code == 200, response.text
    assert [set(result) for result in response.json()["results"]] == [{"index", "relevance_score"}] * 3
    assert orjson.loads(setup.jina.last().body)["model"] == "jina-reranker-m0"


def test_cohere_rerank_is_translated_and_billed_per_search_unit(setup: Setup) -> None:
    documents = [f"document {i} about France" if i == 120 else f"document {i} about nothing" for i in range(150)]
    response = setup.post("/rerank", {"model": "rerank-v3.5", "query": "France", "documents": documents,
                                      "top_n": 1})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "rerank-v3.5"
    assert answer["results"] == [{"index": 120, "relevance_score": 1.0,
                                  "document": {"text": "document 120 about France"}}]

    recorded = setup.cohere.last()
    assert recorded.path == "/v2/rerank" and recorded.headers["Authorization"] == f"Bearer {COHERE_KEY}"
    assert orjson.loads(recorded.body) == {"model": "rerank-v3.5", "query": "France", "documents": documents,
                                           "top_n": 1}

    row = setup.cost(response)
    assert (row.channel_name, row.endpoint, row.usage_source) == ("cohere", "rerank", "counted")
    assert row.prompt_tokens == answer["usage"]["total_tokens"] > 150
    assert row.cost_micros == 2 * 2000  # 150 documents are 2 search units


def test_cohere_rerank_of_text_objects_priced_per_token(setup: Setup) -> None:
    response = setup.post("/rerank", {"model": "rerank-multilingual-v3.0", "query": QUERY, "documents": DOCUMENTS,
                                      "return_documents": False})
    assert response.status_code == 200, response.text
    assert [result["index"] for result in response.json()["results"]] == [1, 0, 2]
    assert "document" not in response.json()["results"][0]
    assert orjson.loads(setup.cohere.last().body)["documents"][1] == "Paris is the capital of France."
    row = setup.cost(response)
    assert row.usage_source == "counted" and row.cost_micros == row.prompt_tokens * 100


def test_a_revoked_rerank_key_fails_over_to_the_next_channel(setup: Setup) -> None:
    response = setup.post("/rerank", {"model": "bge-reranker-v2-m3", "query": QUERY, "documents": DOCUMENTS})
    assert response.status_code == 200, response.text
    assert setup.jina_revoked.last().headers["Authorization"] == "Bearer jina_revoked_key"
    row = setup.cost(response)
    assert (row.channel_name, row.attempts, row.cost_micros) == ("jina", 2, 1000)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "rerank-v3.5", "documents": ["a"]}, "query"),
    ({"model": "rerank-v3.5", "query": "", "documents": ["a"]}, "query"),
    ({"model": "rerank-v3.5", "query": "q", "documents": []}, "documents"),
    ({"model": "rerank-v3.5", "query": "q"}, "documents"),
    ({"model": "rerank-v3.5", "query": "q", "documents": ["a", {"image": "x.png"}]}, "documents[1]"),
    ({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents"),
    ({"query": "q", "documents": ["a"]}, "model"),
], ids=["no-query", "empty-query", "empty-documents", "no-documents", "image-document", "top-n", "flag", "no-model"])
def test_malformed_rerank_requests_are_refused_before_any_upstream(setup: Setup, body: dict[str, Any],
                                                                    param: str) -> None:
    sent = len(setup.cohere.requests)
    response = setup.post("/rerank", body)
    assert response.status_code == 400 and _error(response)["param"] == param
    assert len(setup.cohere.requests) == sent


def test_upstream_rerank_errors_reach_the_caller_with_their_message(setup: Setup) -> None:
    jina = setup.post("/rerank", {"model": "jina-unknown", "query": QUERY, "documents": DOCUMENTS})
    assert jina.status_code == 400 and _error(jina)["message"] == "Model jina-unknown is not supported."

    cohere = setup.post("/rerank", {"model": "rerank-english-v1", "query": QUERY, "documents": DOCUMENTS})
    assert cohere.status_code == 404
    assert _error(cohere)["message"].startswith("model 'rerank-english-v1' not found")

    extra = setup.post("/rerank", {"model": "jina-reranker-v2-base-multilingual", "query": QUERY,
                                   "documents": DOCUMENTS, "max_chunks": 3})  # Jina's 422, as OpenAI's 400
    assert extra.status_code == 400 and "Extra inputs are not permitted" in _error(extra)["message"]


def test_a_rerank_channel_serves_only_rerank(setup: Setup) -> None:
    """The cohere channel lists no models, yet a chat or moderation call for a rerank model finds no channel."""
    with pytest.raises(openai.NotFoundError) as chat:
        setup.client().chat.completions.create(model="rerank-v3.5", messages=[{"role": "user", "content": "hi"}])
    assert chat.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        setup.client().moderations.create(model="rerank-v3.5", input="hi")


# --- the fakes refuse what the real services refuse ---------------------------------------------

@pytest.mark.parametrize("service", ["jina", "cohere"])
def test_fakes_refuse_bad_keys_missing_queries_and_empty_documents(setup: Setup, service: str) -> None:
    server, key, path = ((setup.jina, JINA_KEY, "/v1/rerank") if service == "jina"
                         else (setup.cohere, COHERE_KEY, "/v2/rerank"))
    model = "jina-reranker-m0" if service == "jina" else "rerank-v3.5"

    def post(body: dict[str, Any], with_key: str = key) -> httpx.Response:
        return httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {with_key}"})

    assert post({"model": model, "query": "q", "documents": ["a"]}).status_code == 200
    assert post({"model": model, "query": "q", "documents": ["a"]}, "wrong").status_code == 401
    malformed = 422 if service == "jina" else 400
    assert post({"model": model, "documents": ["a"]}).status_code == malformed
    assert post({"model": model, "query": "q", "documents": []}).status_code == malformed
