"""Request kinds: what a call asks an upstream to do, as routing sees it.

Every adaptor declares the kinds its protocol serves; routing picks channels by
(kind, model), so a channel only ever gets requests its type can serve, whatever its
model list says, and a channel with no model list serves every model *of its kinds*.
A request of one dialect reaches a channel of another only through a translator that
the adaptor declares by listing the kind.
"""

from __future__ import annotations

CHAT = "chat"  # OpenAI Chat Completions
COMPLETIONS = "completions"  # OpenAI legacy completions
EMBEDDINGS = "embeddings"
IMAGES = "images"  # OpenAI image generations (DALL·E format)
IMAGE_EDITS = "image-edits"  # OpenAI image edits and variations (multipart uploads)
AUDIO = "audio"  # OpenAI speech, transcriptions, translations
RESPONSES = "responses"  # OpenAI Responses API
MODERATIONS = "moderations"
RERANK = "rerank"  # Jina/Cohere rerank
CLAUDE = "claude"  # Anthropic Messages, as the anthropic SDK sends it
CLAUDE_COUNT = "claude-count"  # Anthropic count_tokens
GEMINI = "gemini"  # Gemini generateContent, as the google-genai SDK sends it
GEMINI_COUNT = "gemini-count"  # Gemini countTokens
GEMINI_EMBED = "gemini-embed"  # Gemini embedContent and batchEmbedContents
IDEOGRAM = "ideogram"
STABILITY = "stability"  # Stability's own image endpoints
RECRAFT = "recraft"
FLUX = "flux"  # BFL's own task API
MIDJOURNEY = "midjourney"
SUNO = "suno"
LUMA = "luma"
KLING = "kling"
STABILITY_VIDEO = "stability-video"

_OPENAI_ENDPOINTS = {
    "chat.completions": CHAT,
    "completions": COMPLETIONS,
    "embeddings": EMBEDDINGS,
    "images.generations": IMAGES,
    "images.edits": IMAGE_EDITS,
    "images.variations": IMAGE_EDITS,
    "audio.speech": AUDIO,
    "audio.transcriptions": AUDIO,
    "audio.translations": AUDIO,
    "responses": RESPONSES,
    "moderations": MODERATIONS,
    "rerank": RERANK,
}
# Endpoints of a native family that are not its main kind.
_NATIVE_ENDPOINTS = {
    ("anthropic", "messages.count_tokens"): CLAUDE_COUNT,
    ("gemini", "gemini.countTokens"): GEMINI_COUNT,
    ("gemini", "gemini.embedContent"): GEMINI_EMBED,
    ("gemini", "gemini.batchEmbedContents"): GEMINI_EMBED,
}
# Families whose every endpoint is one kind: the family's own protocol.
_NATIVE_FAMILIES = {"anthropic": CLAUDE, "gemini": GEMINI, "ideogram": IDEOGRAM, "stability": STABILITY,
                    "recraft": RECRAFT}


def of_call(family: str, endpoint: str) -> str:
    """The kind of a synchronous call; "" for a pair no adaptor serves (routing then finds no channel)."""
    if family == "openai":
        return _OPENAI_ENDPOINTS.get(endpoint, "")
    return _NATIVE_ENDPOINTS.get((family, endpoint)) or _NATIVE_FAMILIES.get(family, "")
