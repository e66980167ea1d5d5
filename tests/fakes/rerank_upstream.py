"""Wire-accurate fakes of Jina's ``POST /v1/rerank`` and Cohere's ``POST /v2/rerank``.

Jina (a FastAPI service): ``documents`` strings or ``{"text"}`` objects, ``top_n``,
``return_documents`` (default true); reply ``{model, usage{total_tokens}, results[{index,
document{text}?, relevance_score}]}``; errors ``{"detail": ...}``, malformed bodies 422 with
FastAPI's list of ``{type, loc, msg}``. Cohere v2: ``documents`` strings only, ``top_n``,
``max_tokens_per_doc``, ``priority``; reply ``{id, results[{index, relevance_score}],
meta{api_version, billed_units{search_units}}}`` (one search unit per query over up to 100
documents); errors ``{"id", "message"}``. Both want ``Authorization: Bearer``; fields
neither knows are refused.

Knobs (``FakeServer.knobs``): ``fail_with``, an HTTP status every authorized request gets.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import KNOBS

KEYS = web.AppKey("keys", set)
JINA_MODELS = frozenset({"jina-reranker-v2-base-multilingual", "jina-reranker-m0", "bge-reranker-v2-m3"})
COHERE_MODELS = frozenset({"rerank-v3.5", "rerank-multilingual-v3.0"})
DOCUMENTS_PER_SEARCH_UNIT = 100


def score(query: str, document: str) -> float:
    """Share of the query's words found in the document: deterministic, so tests know the order."""
    words = set(query.lower().split())
    found = words & set(document.lower().replace(".", " ").replace(",", " ").split())
    return round(len(found) / max(1, len(words)), 6)


def ranking(query: str, texts: list[str], top_n: int | None) -> list[int]:
    """Document indexes from most to least relevant (ties keep the request's order), cut to ``top_n``."""
    order = sorted(range(len(texts)), key=lambda i: -score(query, texts[i]))
    return order[:top_n] if top_n is not None else order


def jina_tokens(query: str, texts: list[str]) -> int:
    """What the fake Jina reports as ``usage.total_tokens``: the query once per document, plus the documents."""
    return sum(len(query.split()) + len(text.split()) + 2 for text in texts)


def search_units(documents: int) -> int:
    return math.ceil(documents / DOCUMENTS_PER_SEARCH_UNIT)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _bearer(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    return auth.startswith("Bearer ") and auth[7:] in request.app[KEYS]


async def _object(request: web.Request) -> dict[str, Any] | None:
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        return None
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


# --- Jina ---------------------------------------------------------------------

def _missing(field: str) -> dict[str, Any]:
    return {"type": "missing", "loc": ["body", field], "msg": "Field required", "input": None}


def _jina_problems(body: dict[str, Any]) -> list[dict[str, Any]]:
    problems = [_missing(field) for field in ("model", "query", "documents") if field not in body]
    problems += [{"type": "extra_forbidden", "loc": ["body", field], "msg": "Extra inputs are not permitted"}
                 for field in sorted(set(body) - {"model", "query", "documents", "top_n", "return_documents"})]
    if "query" in body and not isinstance(body["query"], str):
        problems.append({"type": "string_type", "loc": ["body", "query"], "msg": "Input should be a valid string"})
    documents = body.get("documents")
    if "documents" in body and (not isinstance(documents, list) or not documents):
        problems.append({"type": "too_short", "loc": ["body", "documents"],
                         "msg": "List should have at least 1 item after validation, not 0"})
    for index, document in enumerate(documents if isinstance(documents, list) else ()):
        if not isinstance(document, str) and not (isinstance(document, dict) and isinstance(document.get("text"), str)):
            problems.append({"type": "model_type", "loc": ["body", "documents", index],
                             "msg": "Input should be a valid string or a text document"})
    top_n = body.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        problems.append({"type": "greater_than_equal", "loc": ["body", "top_n"],
                         "msg": "Input should be greater than or equal to 1"})
    return problems


async def jina_rerank(request: web.Request) -> web.Response:
    if not _bearer(request):
        return _json({"detail": "Unauthorized: the API key is invalid or missing."}, 401)
    if (status := request.app[KNOBS].get("fail_with")) is not None:
        return _json({"detail": "Internal server error: the reranker is overloaded."}, status)
    body = await _object(request)
    if body is None:
        return _json({"detail": [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]}, 422)
    if problems := _jina_problems(body):
        return _json({"detail": problems}, 422)
    if body["model"] not in JINA_MODELS:
        return _json({"detail": f"Model {body['model']} is not supported."}, 400)
    texts = [doc if isinstance(doc, str) else doc["text"] for doc in body["documents"]]
    results = []
    for index in ranking(body["query"], texts, body.get("top_n")):
        result: dict[str, Any] = {"index": index}
        if body.get("return_documents", True):
            result["document"] = {"text": texts[index]}
        result["relevance_score"] = score(body["query"], texts[index])
        results.append(result)
    usage = {"total_tokens": jina_tokens(body["query"], texts)}
    return _json({"model": body["model"], "usage": usage, "results": results})


# --- Cohere -------------------------------------------------------------------

def _cohere_error(status: int, message: str) -> web.Response:
    return _json({"id": "5d4e2f9c-fake", "message": message}, status)


def _cohere_problem(body: dict[str, Any]) -> str | None:
    for field in ("model", "query", "documents"):
        if field not in body:
            return f"invalid request: {field} is required"
    if unknown := sorted(set(body) - {"model", "query", "documents", "top_n", "max_tokens_per_doc", "priority"}):
        return f"invalid request: unknown field '{unknown[0]}'"
    if not isinstance(body["query"], str) or not body["query"].strip():
        return "invalid request: query must not be empty"
    documents = body["documents"]
    if not isinstance(documents, list) or not documents:
        return "invalid request: list of documents must not be empty"
    if not all(isinstance(doc, str) for doc in documents):
        return "invalid request: documents must be a list of strings"
    top_n = body.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        return "invalid request: top_n must be a positive integer"
    return None


async def cohere_rerank(request: web.Request) -> web.Response:
    if not _bearer(request):
        return _cohere_error(401, "invalid api token")
    if (status := request.app[KNOBS].get("fail_with")) is not None:
        return _cohere_error(status, "internal server error, this has been reported to our developers")
    body = await _object(request)
    if body is None:
        return _cohere_error(400, "invalid request: could not parse the JSON body")
    if (problem := _cohere_problem(body)) is not None:
        return _cohere_error(400, problem)
    if body["model"] not in COHERE_MODELS:
        return _cohere_error(404, f"model '{body['model']}' not found, make sure the correct model ID was used")
    texts = body["documents"]
    results = [{"index": index, "relevance_score": score(body["query"], texts[index])}
               for index in ranking(body["query"], texts, body.get("top_n"))]
    meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": search_units(len(texts))}}
    return _json({"id": "07734bd2-fake", "results": results, "meta": meta})


def create_jina(keys: set[str]) -> web.Application:
    app = web.Application()
    app[KEYS] = keys
    app.router.add_post("/v1/rerank", jina_rerank)
    return app


def create_cohere(keys: set[str]) -> web.Application:
    app = web.Application()
    app[KEYS] = keys
    app.router.add_post("/v2/rerank", cohere_rerank)
    return app
