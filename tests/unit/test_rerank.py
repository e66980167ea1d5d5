"""The Cohere rerank translation and the billing of search units, without a gateway."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from polyrelay.billing.meter import Price, Usage
from polyrelay.patterns import ModelPatterns
from polyrelay.providers.base import Call, Target
from polyrelay.providers.rerank import CohereAdaptor, JinaAdaptor
from polyrelay.store.snapshot import ChannelRecord

COHERE = CohereAdaptor()


def _call(payload: dict[str, Any]) -> Call:
    return Call(family="openai", endpoint="rerank", path="/v1/rerank", model="rerank-latest",
                body=orjson.dumps(payload), content_type="application/json", request_id="req_unit", payload=payload)


def _target() -> Target:
    channel = ChannelRecord(id=1, name="cohere", type="cohere", base_url="https://api.cohere.com", keys=("ck",),
                            models=ModelPatterns([]), model_mapping={}, priority=0, weight=1, timeout_s=5,
                            connect_timeout_s=1, options={})
    return Target(channel=channel, key_index=0, key="ck", upstream_model="rerank-v3.5")


PAYLOAD = {"model": "rerank-latest", "query": "q", "documents": ["a", {"text": "b", "id": 7}], "top_n": 1,
           "return_documents": True, "max_tokens_per_doc": 512}


def test_a_jina_request_becomes_a_cohere_v2_request() -> None:
    request = COHERE.build_request(_call(PAYLOAD), _target())
    assert request.url == "https://api.cohere.com/v2/rerank" and request.headers["Authorization"] == "Bearer ck"
    assert orjson.loads(request.body) == {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"],
                                          "top_n": 1, "max_tokens_per_doc": 512}


def test_a_cohere_reply_becomes_a_jina_reply_billed_in_search_units() -> None:
    data = {"id": "r1", "results": [{"index": 1, "relevance_score": 0.9}],
            "meta": {"billed_units": {"search_units": 3}}}
    reply = COHERE.reply(_call(PAYLOAD), 200, orjson.dumps(data), data)
    body = orjson.loads(reply.body)
    assert body["results"] == [{"index": 1, "relevance_score": 0.9, "document": {"text": "b"}}]
    assert reply.usage is not None and reply.usage.search_units == 3 and reply.usage.source == "counted"
    assert body["usage"] == {"total_tokens": reply.usage.prompt_tokens}


def test_a_result_naming_no_document_is_an_unreadable_reply() -> None:
    data = {"results": [{"index": 2, "relevance_score": 0.9}]}
    with pytest.raises(ValueError):
        COHERE.reply(_call(PAYLOAD), 200, orjson.dumps(data), data)


def test_per_request_prices_count_search_units_and_default_to_one() -> None:
    price = Price(per_request=2000, input_per_mtok=1_000_000)
    assert price.cost(Usage(search_units=3)) == 6000
    assert price.cost(Usage(prompt_tokens=5)) == 2005


def test_validation_errors_become_openai_400s_with_the_upstream_message() -> None:
    body = orjson.dumps({"detail": [{"type": "missing", "loc": ["body", "query"], "msg": "Field required"}]})
    error = JinaAdaptor().upstream_error(_call(PAYLOAD), 422, body)
    assert (error.status, error.message, error.type) == (400, "Field required", "invalid_request_error")
    error = COHERE.upstream_error(_call(PAYLOAD), 503, b'{"message": "overloaded"}')
    assert (error.status, error.message, error.type) == (503, "overloaded", "upstream_error")
