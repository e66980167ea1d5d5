"""Reading a Gemini ``generateContent`` request (the google-genai SDK's) as the OpenAI chat request it means.

Google parses requests as protobuf JSON, which takes a field in camelCase or snake_case
and bytes in standard or URL-safe base64; the SDK sends both forms (``inline_data``,
``mime_type``, ``thinking_budget``), so every field here is read under either name.
What the pivot cannot express (built-in Google tools, audio or image output, cached
content) is refused with a 400, never dropped. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache
from typing import Any

import orjson

from polyrelay.billing import tokenizer
from polyrelay.errors import bad_request
from polyrelay.providers.base import Call

_REQUEST_FIELDS = frozenset({"model", "contents", "systemInstruction", "generationConfig", "tools", "toolConfig",
                             "safetySettings", "cachedContent"})
_CONFIG_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "mediaResolution", "imageConfig"})
# Known but not translated: topK, mediaResolution and enableEnhancedCivicAnswers only steer sampling (OpenAI chat
# has no field for them), and safetySettings are Google's own filters; the answer stays valid without them.
_TOOL_CHOICE = {"AUTO": "auto", "ANY": "required", "VALIDATED": "auto", "NONE": "none"}
_AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}
_SCHEMA_DROPPED = frozenset({"nullable", "propertyOrdering", "example"})  # Gemini's OpenAPI extras


@lru_cache(maxsize=256)
def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


@lru_cache(maxsize=256)
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def field(obj: dict[str, Any], name: str) -> Any:
    """``obj``'s field ``name`` (camelCase) or its snake_case twin, as Google's parser accepts both."""
    value = obj.get(name)
    return obj.get(_snake(name)) if value is None else value


def object_of(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"Invalid JSON payload received. '{where}' must be an object.", param=where)
    return value


def check_fields(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    for key in obj:
        if _camel(key) not in known:
            at = f" at '{where}'" if where else ""
            raise bad_request(f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.',
                              param=key)


def base64_data(data: Any, where: str) -> str:
    """Standard padded base64 of ``data`` given in standard or URL-safe base64 (both are valid bytes in JSON)."""
    if not isinstance(data, str):
        raise bad_request(f"Invalid value at '{where}' (TYPE_BYTES): not base64.", param=where)
    text = data.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed.", param=where) from None
    return text


# ---------------------------------------------------------------- request

def chat_request(call: Call) -> dict[str, Any]:
    """The OpenAI chat request that asks what ``call``'s generateContent body asks."""
    payload = call.payload or {}
    check_fields(payload, _REQUEST_FIELDS, "")
    if field(payload, "cachedContent"):
        raise bad_request("cachedContent refers to a cache on Google's servers; this model's channels cannot use it.",
                          param="cachedContent")
    messages: list[dict[str, Any]] = []
    system = field(payload, "systemInstruction")
    if system is not None:
        text = "".join(_texts(object_of(system, "system_instruction"), "system_instruction"))
        if text:
            messages.append({"role": "system", "content": text})
    messages += _messages(field(payload, "contents"))
    body: dict[str, Any] = {"model": call.model, "messages": messages}
    body.update(_generation(object_of(field(payload, "generationConfig"), "generation_config")))
    tools = _tools(field(payload, "tools"))
    if tools:
        body["tools"] = tools
        config = object_of(field(object_of(field(payload, "toolConfig"), "tool_config"), "functionCallingConfig"),
                         "tool_config.function_calling_config")
        body.update(_tool_choice(config, tools))
    return body


def _texts(content: dict[str, Any], where: str) -> list[str]:
    texts = []
    for p, part in enumerate(field(content, "parts") or ()):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.parts[{p}] must be a text part.", param=where)
        texts.append(part["text"])
    return texts


def _messages(contents: Any) -> list[dict[str, Any]]:
    if not isinstance(contents, list) or not contents:
        raise bad_request("* GenerateContentRequest.contents: contents is not specified", param="contents")
    messages: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (name, id) of the last model turn's calls not yet answered
    for c, content in enumerate(contents):
        where = f"contents[{c}]"
        content = object_of(content, where)
        role = content.get("role") or "user"
        parts = field(content, "parts")
        if not isinstance(parts, list) or not parts:
            raise bad_request(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.",
                              param=where)
        if role == "model":
            message, pending = _model_turn(parts, c)
            messages.append(message)
        elif role == "user":
            messages += _user_turn(parts, pending, c)
        else:
            raise bad_request(f"Please use a valid role: user, model. ({where}.role is {role!r})", param=where)
    return messages


def _model_turn(parts: list[Any], c: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for p, part in enumerate(parts):
        where = f"contents[{c}].parts[{p}]"
        part = object_of(part, where)
        if part.get("thought"):
            continue  # the model's own reasoning: not part of the conversation it continues
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif (function := field(part, "functionCall")) is not None:
            function = object_of(function, where + ".function_call")
            id_ = function.get("id") or f"call_{c}_{p}"
            arguments = orjson.dumps(function.get("args") or {}).decode()
            calls.append({"id": id_, "type": "function", "function": {"name": function.get("name", ""),
                                                                       "arguments": arguments}})
        else:
            raise bad_request(f"{where}: a model turn may hold text and function calls only on this model's "
                              "channels.", param=where)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message, [(call["function"]["name"], call["id"]) for call in calls]


def _user_turn(parts: list[Any], pending: list[tuple[str, str]], c: int) -> list[dict[str, Any]]:
    """Tool results first (OpenAI wants them right after the calls), then the turn's other parts."""
    results: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for p, part in enumerate(parts):
        where = f"contents[{c}].parts[{p}]"
        part = object_of(part, where)
        if isinstance(part.get("text"), str):
            content.append({"type": "text", "text": part["text"]})
        elif (response := field(part, "functionResponse")) is not None:
            response = object_of(response, where + ".function_response")
            name = response.get("name", "")
            id_ = response.get("id") or _answered(pending, name) or f"call_{c}_{p}"
            results.append({"role": "tool", "tool_call_id": id_,
                            "content": orjson.dumps(response.get("response") or {}).decode()})
        elif (data := field(part, "inlineData")) is not None:
            content.append(_inline(object_of(data, where + ".inline_data"), where + ".inline_data"))
        elif (data := field(part, "fileData")) is not None:
            content.append(_file(object_of(data, where + ".file_data"), where + ".file_data"))
        else:
            raise bad_request(f"{where} holds a part this model's channels cannot take (text, inlineData, "
                              "fileData and functionResponse are translated).", param=where)
    if not content:
        return results
    if all(part["type"] == "text" for part in content):
        return [*results, {"role": "user", "content": "".join(part["text"] for part in content)}]
    return [*results, {"role": "user", "content": content}]


def _answered(pending: list[tuple[str, str]], name: str) -> str | None:
    """The id of the earliest unanswered call of ``name`` (Gemini's responses carry names, not ids)."""
    for i, (called, id_) in enumerate(pending):
        if called == name:
            del pending[i]
            return id_
    return None


def _inline(data: dict[str, Any], where: str) -> dict[str, Any]:
    mime = str(field(data, "mimeType") or "")
    encoded = base64_data(data.get("data"), where + ".data")
    if mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}
    if mime in _AUDIO_FORMATS:
        return {"type": "input_audio", "input_audio": {"data": encoded, "format": _AUDIO_FORMATS[mime]}}
    raise bad_request(f"{where}: {mime or 'data without a mimeType'} cannot be sent to this model's channels "
                      "(images, WAV and MP3 audio can).", param=where)


def _file(data: dict[str, Any], where: str) -> dict[str, Any]:
    uri = field(data, "fileUri")
    mime = str(field(data, "mimeType") or "")
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise bad_request(f"{where}: only images at http(s) URLs can be sent to this model's channels "
                          "(files uploaded to Google cannot).", param=where)
    if mime and not mime.startswith("image/"):
        raise bad_request(f"{where}: {mime} files cannot be sent to this model's channels (images can).", param=where)
    return {"type": "image_url", "image_url": {"url": uri}}


def _generation(config: dict[str, Any]) -> dict[str, Any]:
    check_fields(config, _CONFIG_FIELDS, "generation_config")
    body: dict[str, Any] = {}
    for name, target in (("temperature", "temperature"), ("topP", "top_p"), ("maxOutputTokens", "max_tokens"),
                         ("candidateCount", "n"), ("seed", "seed"), ("presencePenalty", "presence_penalty"),
                         ("frequencyPenalty", "frequency_penalty"), ("stopSequences", "stop")):
        if (value := field(config, name)) is not None:
            body[target] = value
    if field(config, "responseLogprobs"):
        body["logprobs"] = True
        if (top := field(config, "logprobs")) is not None:
            body["top_logprobs"] = top
    modalities = field(config, "responseModalities") or []
    if any(str(m).upper() != "TEXT" for m in modalities) or field(config, "speechConfig") or field(config, "imageConfig"):
        raise bad_request("This model's channels answer with text only: responseModalities other than TEXT, "
                          "speechConfig and imageConfig cannot be served.", param="generation_config")
    if (response_format := _response_format(config)) is not None:
        body["response_format"] = response_format
    if (effort := _reasoning_effort(object_of(field(config, "thinkingConfig"), "thinking_config"))) is not None:
        body["reasoning_effort"] = effort
    return body


def _response_format(config: dict[str, Any]) -> dict[str, Any] | None:
    mime = field(config, "responseMimeType")
    raw_schema = field(config, "responseJsonSchema")
    schema = raw_schema if raw_schema is not None else field(config, "responseSchema")
    if mime in (None, "text/plain") and schema is None:
        return None
    if mime not in (None, "text/plain", "application/json"):
        raise bad_request(f"responseMimeType {mime!r} cannot be served by this model's channels "
                          "(text/plain and application/json can).", param="generation_config.response_mime_type")
    if mime != "application/json":  # Google's own rule
        raise bad_request("responseSchema and responseJsonSchema need responseMimeType application/json.",
                          param="generation_config.response_mime_type")
    if schema is None:
        return {"type": "json_object"}
    converted = schema if raw_schema is not None else json_schema(schema)
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": converted}}


def _reasoning_effort(thinking: dict[str, Any]) -> str | None:
    """OpenAI's coarse effort for Gemini's thinking level or budget; none when thinking is off or dynamic."""
    level = field(thinking, "thinkingLevel")
    if isinstance(level, str) and level.lower() in ("minimal", "low", "medium", "high"):
        return level.lower()
    budget = field(thinking, "thinkingBudget")
    if not isinstance(budget, int) or budget <= 0:
        return None
    return "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"


def json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-subset Schema (``"type": "OBJECT"``, ``nullable``) as JSON Schema."""
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        key = _camel(key)
        if key in _SCHEMA_DROPPED:
            continue
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = json_schema(value)
        else:
            out[key] = value
    if field(schema, "nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t, tool in enumerate(tools or ()):
        tool = object_of(tool, f"tools[{t}]")
        other = [key for key in tool if _camel(key) != "functionDeclarations"]
        if other:
            raise bad_request(f"tools[{t}].{other[0]}: only functionDeclarations can be served by this model's "
                              "channels (Google's built-in tools cannot).", param=f"tools[{t}]")
        for d, declaration in enumerate(field(tool, "functionDeclarations") or ()):
            declaration = object_of(declaration, f"tools[{t}].function_declarations[{d}]")
            function: dict[str, Any] = {"name": declaration.get("name", "")}
            if declaration.get("description"):
                function["description"] = declaration["description"]
            if (raw := field(declaration, "parametersJsonSchema")) is not None:
                function["parameters"] = raw
            elif (parameters := declaration.get("parameters")) is not None:
                function["parameters"] = json_schema(parameters)
            out.append({"type": "function", "function": function})
    return out


def _tool_choice(config: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    mode = str(config.get("mode") or "AUTO").upper()
    allowed = field(config, "allowedFunctionNames")
    if mode not in _TOOL_CHOICE:
        raise bad_request(f"Unknown function calling mode {mode!r}.", param="tool_config.function_calling_config.mode")
    if mode == "ANY" and isinstance(allowed, list) and allowed:
        if len(allowed) == 1:
            return {"tool_choice": {"type": "function", "function": {"name": allowed[0]}}}
        return {"tool_choice": "required", "tools": [t for t in tools if t["function"]["name"] in allowed]}
    return {"tool_choice": _TOOL_CHOICE[mode]}


# ---------------------------------------------------------------- local count

# Gemini counts an image of up to 384x384 pixels as 258 tokens; without decoding the image that is the estimate.
_IMAGE_TOKENS = 258


def count_tokens(call: Call) -> dict[str, Any]:
    """A countTokens answer counted here, for models no Gemini channel serves (the count is the local
    tokenizer's, close to but not exactly the upstream model's)."""
    payload = call.payload or {}
    request = field(payload, "generateContentRequest")
    body = object_of(request, "generate_content_request") if request is not None else payload
    texts: list[str] = []
    images = 0
    for content in [field(body, "systemInstruction"), *(field(body, "contents") or ())]:
        for part in field(content, "parts") or () if isinstance(content, dict) else ():
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif field(part, "inlineData") is not None or field(part, "fileData") is not None:
                images += 1
            else:
                texts.append(orjson.dumps(part).decode())  # function calls and results count as their JSON
    for tool in field(body, "tools") or ():
        texts.append(orjson.dumps(tool).decode())
    text_tokens = tokenizer.count_text(call.model, "\n".join(texts))
    details = [{"modality": "TEXT", "tokenCount": text_tokens}]
    if images:
        details.append({"modality": "IMAGE", "tokenCount": images * _IMAGE_TOKENS})
    return {"totalTokens": text_tokens + images * _IMAGE_TOKENS, "promptTokensDetails": details}
