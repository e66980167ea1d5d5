"""A wire-accurate fake of the Gemini API (``generativelanguage.googleapis.com``).

Shapes follow Google's REST reference: ``models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` (``data: {...}\\r\\n\\r\\n`` events, usageMetadata on
every event), ``:batchEmbedContents``; errors ``{"error":{code,message,status,details}}``,
a bad key answering 400 INVALID_ARGUMENT with reason API_KEY_INVALID, as the real one does.
Requests are validated strictly (unknown fields, empty parts, JSON-Schema extras in
schemas) so a translation that drifts from the wire format fails the tests.

The reply depends on the request: a functionResponse in the last turn -> the tool
answer; tools offered -> a functionCall; JSON mode -> a JSON object; inline images ->
a description of them; else ``CHAT_REPLY``.

Knobs: ``fail_with`` (an HTTP status; the body carries the matching google.rpc status); ``echo`` (an
HTTP status: every request is refused with it, the message repeating the key it was sent, see
``tests.fakes.echo``; without the API_KEY_INVALID reason, so a 400 stays a 400).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

CHAT_REPLY = ["Hello", " from", " fake", " Gemini", "."]
TOOL_ANSWER = "It is sunny in Paris."
JSON_REPLY = '{"answer": 42}'
PROMPT_TOKENS = 11
CACHED_TOKENS = 4
EMBEDDING_DIM = 6
KEYS = web.AppKey("gemini_keys", set)

_RPC = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL", 503: "UNAVAILABLE"}
_TOP_LEVEL = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings",
              "cachedContent"}
_GENERATION = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount",
               "responseMimeType", "responseSchema", "seed", "presencePenalty", "frequencyPenalty"}
_PART_KINDS = {"text", "inlineData", "functionCall", "functionResponse", "fileData"}
_SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
                "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
                "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum"}


def error(status: int, message: str, reason: str | None = None) -> web.Response:
    body: dict[str, Any] = {"code": status, "message": message, "status": _RPC.get(status, "UNKNOWN")}
    if reason:
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                            "domain": "googleapis.com"}]
    return web.Response(body=orjson.dumps({"error": body}), status=status, content_type="application/json")


def _invalid(problem: str) -> web.Response:
    return error(400, f"Invalid JSON payload received. {problem}")


def _check_schema(schema: Any, where: str) -> str | None:
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS:
            return f'Unknown name "{key}" at \'{where}\': Cannot find field.'
        if key == "properties":
            for name, sub in value.items():
                if (problem := _check_schema(sub, f"{where}.properties[{name}]")) is not None:
                    return problem
        if key == "items" and (problem := _check_schema(value, where + ".items")) is not None:
            return problem
    return None


def _validate(body: dict[str, Any]) -> str | None:
    for key in body:
        if key not in _TOP_LEVEL:
            return f'Unknown name "{key}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"contents[{i}].role must be user or model"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"contents[{i}].parts must not be empty"
        for j, part in enumerate(parts):
            kinds = set(part) & _PART_KINDS
            if len(kinds) != 1 or set(part) - _PART_KINDS - {"thought", "thoughtSignature"}:
                return f"contents[{i}].parts[{j}] must have exactly one data field"
            if "inlineData" in part:
                data = part["inlineData"]
                if set(data) != {"mimeType", "data"}:
                    return f"contents[{i}].parts[{j}].inlineData needs mimeType and data"
                base64.b64decode(data["data"], validate=True)
            if "functionResponse" in part and not isinstance(part["functionResponse"].get("response"), dict):
                return f"contents[{i}].parts[{j}].functionResponse.response must be an object"
    system = body.get("systemInstruction")
    if system is not None and not (isinstance(system, dict) and system.get("parts")):
        return "systemInstruction must be a Content with parts"
    for key in body.get("generationConfig") or {}:
        if key not in _GENERATION:
            return f'Unknown name "{key}" at \'generation_config\': Cannot find field.'
    if (schema := (body.get("generationConfig") or {}).get("responseSchema")) is not None:
        if (problem := _check_schema(schema, "generation_config.response_schema")) is not None:
            return problem
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            if (problem := _check_schema(declaration.get("parameters"), "tools.function_declarations")) is not None:
                return problem
    return None


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The parts of the reply, and the finish reason."""
    last = body["contents"][-1]["parts"]
    declarations = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
    config = body.get("generationConfig") or {}
    images = [p["inlineData"] for c in body["contents"] for p in c["parts"] if "inlineData" in p]
    if any("functionResponse" in p for p in last):
        return [{"text": TOOL_ANSWER}], "STOP"
    if declarations and mode != "NONE":
        return [{"functionCall": {"name": declarations[0]["name"], "args": {"city": "Paris"}}}], "STOP"
    if config.get("responseMimeType") == "application/json":
        return [{"text": JSON_REPLY}], "STOP"
    if images:
        sizes = ", ".join(f"{i['mimeType']} {len(base64.b64decode(i['data']))} bytes" for i in images)
        return [{"text": f"I see {len(images)} image(s): {sizes}."}], "STOP"
    if config.get("maxOutputTokens") == 2:
        return [{"text": "".join(CHAT_REPLY[:2])}], "MAX_TOKENS"
    return [{"text": "".join(CHAT_REPLY)}], "STOP"


def _usage(completion: int) -> dict[str, Any]:
    return {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": completion,
        "totalTokenCount": PROMPT_TOKENS + completion,
        "cachedContentTokenCount": CACHED_TOKENS,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
    }


def _tokens(parts: list[dict[str, Any]]) -> int:
    return sum(len(p["text"].split()) if "text" in p else 3 for p in parts)


def _authorized(request: web.Request) -> web.Response | None:
    if (status := request.app[KNOBS].get("echo")) is not None:
        return error(status, echoed(request))
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if key not in request.app[KEYS]:
        return error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
    if (status := request.app[KNOBS].get("fail_with")) is not None:
        return error(status, "The model is overloaded. Please try again later.")
    return None


async def model_action(request: web.Request) -> web.StreamResponse:
    if (denied := _authorized(request)) is not None:
        return denied
    model, _, action = request.match_info["target"].partition(":")
    body = orjson.loads(await request.read())
    if action == "batchEmbedContents":
        return _embed(model, body)
    if action not in ("generateContent", "streamGenerateContent"):
        return error(404, f"Method {action} not found.")
    if model == "gemini-rejects":
        return error(400, "* GenerateContentRequest.generation_config.temperature: must be in [0, 2]")
    if (problem := _validate(body)) is not None:
        return _invalid(problem)
    parts, finish = _answer(body)
    if action == "streamGenerateContent":
        return await _stream(request, model, parts, finish)
    count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
    candidates = [
        {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": i, "avgLogprobs": -0.1}
        for i in range(count)
    ]
    reply = {"candidates": candidates, "usageMetadata": _usage(_tokens(parts) * count), "modelVersion": model,
             "responseId": "fake-response-id"}
    return web.Response(body=orjson.dumps(reply), content_type="application/json")


async def _stream(request: web.Request, model: str, parts: list[dict[str, Any]], finish: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if "text" in parts[0]:
        words = parts[0]["text"].split(" ")
        pieces = [[{"text": w if i == 0 else " " + w}] for i, w in enumerate(words)]
    else:
        pieces = [parts]
    sent = 0
    for i, piece in enumerate(pieces):
        sent += _tokens(piece)
        candidate: dict[str, Any] = {"content": {"parts": piece, "role": "model"}, "index": 0}
        if i == len(pieces) - 1:
            candidate["finishReason"] = finish
        event = {"candidates": [candidate], "usageMetadata": _usage(sent), "modelVersion": model,
                 "responseId": "fake-response-id"}
        await response.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
    await response.write_eof()
    return response


def embedding_vector(index: int) -> list[float]:
    return [round(0.25 * (index + 1) * (i + 1), 6) for i in range(EMBEDDING_DIM)]


def _embed(model: str, body: dict[str, Any]) -> web.Response:
    requests = body.get("requests") or []
    for request in requests:
        if request.get("model") != f"models/{model}":
            return error(400, f"Model {request.get('model')} does not match the URL's model models/{model}.")
    data = {"embeddings": [{"values": embedding_vector(i)} for i, _ in enumerate(requests)]}
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def create_app(keys: set[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[KEYS] = keys
    app[KNOBS] = {}
    app.router.add_post("/{version}/models/{target}", model_action)
    return app
