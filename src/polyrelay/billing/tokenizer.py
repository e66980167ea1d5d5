"""Local token counting, used only when an upstream reports no usage.

bpe-openai ships its vocabularies inside the wheel, so nothing is downloaded at run
time. The package and its encoding are loaded on first use (about 0.9 s together), never
at start-up, so a gateway whose upstreams report usage never pays for them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# Per-message framing tokens OpenAI adds in chat formatting (role markers, separators).
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    import bpe_openai  # deferred: importing it alone takes ~0.7 s

    return bpe_openai.get_encoding(name)


_CL100K_PREFIXES = ("gpt-3.5", "gpt-4-", "text-embedding-")


def _encoding_for(model: str) -> Any:
    legacy = model == "gpt-4" or model.startswith(_CL100K_PREFIXES)
    return _encoding("cl100k_base" if legacy else "o200k_base")


def count_text(model: str, text: str) -> int:
    if not text:
        return 0
    return len(_encoding_for(model).encode(text))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def count_messages(model: str, messages: list[Any]) -> int:
    """Prompt tokens of a chat request, in OpenAI's own framing."""
    total = _TOKENS_PER_REPLY
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += _TOKENS_PER_MESSAGE
        total += count_text(model, _content_text(message.get("content")))
        if name := message.get("name"):
            total += count_text(model, str(name)) + 1
    return total


def count_prompt(model: str, prompt: Any) -> int:
    """Prompt tokens of a completions or embeddings input: a string, strings or token arrays."""
    if isinstance(prompt, str):
        return count_text(model, prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(item, int) for item in prompt):
            return len(prompt)
        return sum(count_prompt(model, item) for item in prompt)
    return 0
