"""A wire-accurate fake of the Gemini API (``generativelanguage.googleapis.com``).

Shapes follow Google's REST reference: ``models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` (``data: {...}\\r\\n\\r\\n`` events, usageMetadata on
every event), ``:countTokens``, ``:embedContent``, ``:batchEmbedContents``, under ``/v1`` and
``/v1beta``; errors ``{"error":{code,message,status,details}}``, a bad key answering 400
INVALID_ARGUMENT with reason API_KEY_INVALID, as the real one does. Requests are validated
strictly (unknown fields, empty parts, JSON-Schema extras in OpenAPI schemas) so a
translation that drifts from the wire format fails the tests. As Google's protobuf JSON
parser does, a field is accepted in camelCase or snake_case and bytes in standard or
URL-safe base64: the google-genai SDK (3.6, recorded) sends ``inline_data.mime_type``,
``thinking_config.thinking_budget`` and ``parameters_json_schema`` in snake_case and
image bytes URL-safe; the values of Struct fields (``args``, ``response``,
``parametersJsonSchema``) and the names in ``properties`` are kept as sent.

The reply depends on the request: a functionResponse in the last turn -> the tool
answer; tools offered -> a functionCall; JSON mode -> a JSON object; inline images ->
a description of them; else ``CHAT_REPLY``.

Knobs: ``fail_with`` (an HTTP status; the body carries the matching google.rpc status); ``echo`` (an
HTTP status: every request is refused with it, the message repeating the key it was sent, see
``tests.fakes.echo``; without the API_KEY_INVALID reason, so a 400 stays a 400).
"""

from __future__ import annotations

import base64
import binascii
import re
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
_TOP_LEVEL = {"model", "contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings",
              "cachedContent"}
_GENERATION = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount",
               "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities", "seed",
               "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs", "thinkingConfig",
               "speechConfig", "mediaResolution", "enableEnhancedCivicAnswers", "imageConfig"}
_THINKING = {"thinkingBudget", "includeThoughts", "thinkingLevel"}
_PART_KINDS = {"text", "inlineData", "functionCall", "functionResponse", "fileData", "executableCode",
               "codeExecutionResult"}
_PART_META = {"thought", "thoughtSignature", "videoMetadata"}
_DECLARATION = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema",
                "behavior"}
_EMBED_REQUEST = {"model", "content", "taskType", "title", "outputDimensionality"}
_STRUCTS = {"args", "response", "parametersJsonSchema", "responseJsonSchema"}  # google.protobuf.Struct values
IMAGE_TOKENS = 258
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


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def proto(value: Any, key: str = "") -> Any:
    """A request as Google's parser reads it: every field name camelCase, Struct values and property names as sent."""
    if isinstance(value, list):
        return [proto(item, key) for item in value]
    if not isinstance(value, dict) or key in _STRUCTS:
        return value
    if key == "properties":
        return {name: proto(schema) for name, schema in value.items()}
    return {_camel(k): proto(v, _camel(k)) for k, v in value.items()}


def decoded(data: Any) -> bytes:
    """Bytes from standard or URL-safe base64, as protobuf JSON takes either; ValueError otherwise."""
    if not isinstance(data, str):
        raise ValueError("bytes must be a base64 string")
    text = data.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


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


def _validate_contents(contents: Any) -> str | None:
    if not isinstance(contents, list) or not contents:
        return "contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model"):
            return f"contents[{i}].role must be user or model"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"contents[{i}].parts must not be empty"
        for j, part in enumerate(parts):
            kinds = set(part) & _PART_KINDS
            if len(kinds) != 1 or set(part) - _PART_KINDS - _PART_META:
                return f"contents[{i}].parts[{j}] must have exactly one data field"
            if "inlineData" in part:
                data = part["inlineData"]
                if set(data) != {"mimeType", "data"}:
                    return f"contents[{i}].parts[{j}].inlineData needs mimeType and data"
                try:
                    decoded(data["data"])
                except ValueError:
                    return f"Invalid value at 'contents[{i}].parts[{j}].inline_data.data' (TYPE_BYTES), Base64 decoding failed"
            if "functionCall" in part and set(part["functionCall"]) - {"name", "args", "id"}:
                return f"contents[{i}].parts[{j}].functionCall has an unknown field"
            if "functionResponse" in part and not isinstance(part["functionResponse"].get("response"), dict):
                return f"contents[{i}].parts[{j}].functionResponse.response must be an object"
    return None


def _validate(body: dict[str, Any]) -> str | None:
    for key in body:
        if key not in _TOP_LEVEL:
            return f'Unknown name "{key}": Cannot find field.'
    if (problem := _validate_contents(body.get("contents"))) is not None:
        return problem
    system = body.get("systemInstruction")
    if system is not None and not (isinstance(system, dict) and system.get("parts")):
        return "systemInstruction must be a Content with parts"
    config = body.get("generationConfig") or {}
    for key in config:
        if key not in _GENERATION:
            return f'Unknown name "{key}" at \'generation_config\': Cannot find field.'
    for key in config.get("thinkingConfig") or {}:
        if key not in _THINKING:
            return f'Unknown name "{key}" at \'generation_config.thinking_config\': Cannot find field.'
    if "responseSchema" in config and "responseJsonSchema" in config:
        return "response_schema and response_json_schema cannot both be set"
    if (schema := config.get("responseSchema")) is not None:
        if (problem := _check_schema(schema, "generation_config.response_schema")) is not None:
            return problem
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            if unknown := set(declaration) - _DECLARATION:
                return f'Unknown name "{unknown.pop()}" at \'tools.function_declarations\': Cannot find field.'
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return "parameters and parameters_json_schema cannot both be set"
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
        sizes = ", ".join(f"{i['mimeType']} {len(decoded(i['data']))} bytes" for i in images)
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
    body = proto(orjson.loads(await request.read()))
    if action in ("embedContent", "batchEmbedContents"):
        return _embed(model, action, body)
    if action == "countTokens":
        return _count(body)
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
    """SSE with ``alt=sse``; else, as Google does, one JSON array written element by element."""
    sse = request.query.get("alt") == "sse"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream" if sse else
                                           "application/json; charset=UTF-8"})
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
        if sse:
            await response.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
        else:
            await response.write((b"[" if i == 0 else b"\n,\r\n") + orjson.dumps(event))
    if not sse:
        await response.write(b"]")
    await response.write_eof()
    return response


def embedding_vector(index: int) -> list[float]:
    return [round(0.25 * (index + 1) * (i + 1), 6) for i in range(EMBEDDING_DIM)]


def _count(body: dict[str, Any]) -> web.Response:
    """countTokens: a word per token, ``IMAGE_TOKENS`` per image, as a function of the request alone."""
    if unknown := set(body) - {"contents", "generateContentRequest"}:
        return _invalid(f'Unknown name "{unknown.pop()}": Cannot find field.')
    if ("contents" in body) == ("generateContentRequest" in body):
        return _invalid("exactly one of contents and generate_content_request must be set")
    request = body.get("generateContentRequest") or {"contents": body["contents"]}
    if (problem := _validate(request)) is not None:
        return _invalid(problem)
    parts = [p for c in request["contents"] for p in c["parts"]]
    text = sum(len(p["text"].split()) for p in parts if "text" in p)
    images = IMAGE_TOKENS * sum(1 for p in parts if "inlineData" in p)
    details = [{"modality": "TEXT", "tokenCount": text}] + ([{"modality": "IMAGE", "tokenCount": images}] if images else [])
    return web.Response(body=orjson.dumps({"totalTokens": text + images, "promptTokensDetails": details}),
                        content_type="application/json")


def _embed_one(model: str, request: dict[str, Any], index: int, batch: bool) -> tuple[dict[str, Any] | None, str | None]:
    if unknown := set(request) - _EMBED_REQUEST:
        return None, f'Unknown name "{unknown.pop()}": Cannot find field.'
    if batch and request.get("model") != f"models/{model}":
        return None, f"Model {request.get('model')} does not match the URL's model models/{model}."
    parts = (request.get("content") or {}).get("parts")
    if not isinstance(parts, list) or not parts or any(set(p) != {"text"} for p in parts):
        return None, "content must hold text parts"
    vector = embedding_vector(index)[: request.get("outputDimensionality") or EMBEDDING_DIM]
    return {"values": vector}, None


def _embed(model: str, action: str, body: dict[str, Any]) -> web.Response:
    if action == "embedContent":
        embedding, problem = _embed_one(model, body, 0, batch=False)
        return _invalid(problem) if embedding is None else web.json_response({"embedding": embedding})
    if set(body) != {"requests"} or not isinstance(body["requests"], list) or not body["requests"]:
        return _invalid("requests is not specified")
    embeddings = []
    for index, request in enumerate(body["requests"]):
        embedding, problem = _embed_one(model, request, index, batch=True)
        if embedding is None:
            return error(400, str(problem))
        embeddings.append(embedding)
    return web.Response(body=orjson.dumps({"embeddings": embeddings}), content_type="application/json")


def create_app(keys: set[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[KEYS] = keys
    app[KNOBS] = {}
    app.router.add_post("/{version}/models/{target}", model_action)
    return app
