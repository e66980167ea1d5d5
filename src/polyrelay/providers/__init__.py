"""Provider adaptors, one module per upstream protocol, found by channel ``type``."""

from __future__ import annotations

from polyrelay.providers.base import Adaptor
from polyrelay.providers.openai import OpenAIAdaptor
from polyrelay.providers.anthropic import AnthropicAdaptor
from polyrelay.providers.azure import AzureAdaptor
from polyrelay.providers.gemini import GeminiAdaptor
from polyrelay.providers.flux import FluxAdaptor
from polyrelay.providers.ideogram import IdeogramAdaptor
from polyrelay.providers.recraft import RecraftAdaptor
from polyrelay.providers.stability import StabilityAdaptor

ADAPTORS: dict[str, Adaptor] = {adaptor.type: adaptor for adaptor in (OpenAIAdaptor(),
    IdeogramAdaptor(), FluxAdaptor(), RecraftAdaptor(), StabilityAdaptor(),
    GeminiAdaptor(), AnthropicAdaptor(), AzureAdaptor())}


def adaptor_for(channel_type: str) -> Adaptor:
    try:
        return ADAPTORS[channel_type]
    except KeyError:
        raise ValueError(f"unknown channel type {channel_type!r}; known: {', '.join(sorted(ADAPTORS))}") from None
