"""What a caller dialect must say to be bridged to any channel that speaks its pivot.

Chat is the pivot for generation and embeddings for embedding: every channel type that
serves chat already translates it to its own protocol (``providers/*_chat``), so a
dialect needs one translator, to and from the pivot, not one per upstream protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from polyrelay.billing.meter import Usage
from polyrelay.providers.base import Call
from polyrelay.providers.streams import StreamTranslator


class Dialect(ABC):
    """One caller dialect's translation to and from its pivot kind. Pure: no I/O, no clock but ids."""

    kind: str  # the kind of the caller's calls (``polyrelay.kinds``)
    via: str  # the pivot kind: ``kinds.CHAT`` or ``kinds.EMBEDDINGS``

    @abstractmethod
    def request(self, call: Call) -> dict[str, Any]:
        """The pivot request body (OpenAI chat or embeddings JSON) for ``call``; raise ``bad_request``
        for what the pivot cannot express, never drop it silently."""

    @abstractmethod
    def reply(self, call: Call, pivot: dict[str, Any], usage: Usage | None) -> bytes:
        """The caller's reply body from the pivot's (a ``chat.completion`` or embeddings list)."""

    def needs_native(self, call: Call) -> tuple[str, str] | None:
        """(why, field) when ``call`` can only be served natively (it refers to state an upstream keeps):
        routing then skips bridged channels, and answers 400 with ``why`` when no native one is left."""
        return None

    def stream(self, call: Call) -> StreamTranslator:
        """A translator fed the pivot's SSE events (``chat.completion.chunk`` data, ``[DONE]``, error
        objects) that writes the caller's stream; its ``usage`` is not used (the pivot stream's is)."""
        raise NotImplementedError(f"{self.kind} calls are not streamed")

    def stream_content_type(self, call: Call) -> str:
        return "text/event-stream"
