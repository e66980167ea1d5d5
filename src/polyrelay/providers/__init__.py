"""Provider adaptors, one module per upstream protocol, found by channel ``type``."""

from __future__ import annotations

from polyrelay.providers.base import Adaptor
from polyrelay.providers.openai import OpenAIAdaptor

ADAPTORS: dict[str, Adaptor] = {adaptor.type: adaptor for adaptor in (OpenAIAdaptor(),)}


def adaptor_for(channel_type: str) -> Adaptor:
    try:
        return ADAPTORS[channel_type]
    except KeyError:
        raise ValueError(f"unknown channel type {channel_type!r}; known: {', '.join(sorted(ADAPTORS))}") from None
