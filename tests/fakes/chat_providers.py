"""Fake Gemini, Anthropic, Azure and OpenAI upstreams plus a gateway config that routes to them.

Shared by the tests of translated chat (``test_chat_providers``), the native paths
(``test_native_paths``) and image fetching (``test_image_fetch``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes import anthropic_upstream, azure_upstream, gemini_upstream, image_server, openai_upstream
from tests.fakes.server import FakeServer

GEMINI_KEY = "gemini-upstream-key"
ANTHROPIC_KEY = "sk-ant-upstream-key"
AZURE_KEY = "azure-upstream-key"
OPENAI_KEY = "sk-openai-upstream-key"
CALLER = "sk-caller-0123456789abcdef"
AZURE_DEPLOYMENT = "prod-gpt4o"
AZURE_API_VERSION = "2024-06-01"


@dataclass
class Upstreams:
    gemini: FakeServer
    anthropic: FakeServer
    overloaded: FakeServer  # an Anthropic upstream that always answers 529
    azure: FakeServer
    openai: FakeServer
    images: FakeServer


@contextmanager
def upstreams() -> Iterator[Upstreams]:
    servers = Upstreams(
        gemini=FakeServer(gemini_upstream.create_app({GEMINI_KEY})).start(),
        anthropic=FakeServer(anthropic_upstream.create_app({ANTHROPIC_KEY})).start(),
        overloaded=FakeServer(anthropic_upstream.create_app({"sk-ant-busy"})).start(),
        azure=FakeServer(azure_upstream.create_app({AZURE_KEY}, {AZURE_DEPLOYMENT})).start(),
        openai=FakeServer(openai_upstream.create_app({OPENAI_KEY})).start(),
        images=FakeServer(image_server.create_app()).start(),
    )
    servers.overloaded.knobs["fail_with"] = 529
    try:
        yield servers
    finally:
        for server in vars(servers).values():
            server.stop()


def config(up: Upstreams, **settings: Any) -> dict[str, Any]:
    return {
        "cooldown_after_failures": 1000,  # failover tests count attempts: never cool a channel down
        **settings,
        "channels": [
            {"name": "gemini", "type": "gemini", "base_url": up.gemini.url, "keys": [GEMINI_KEY],
             "models": ["gemini-1.5-flash", "gemini-rejects", "text-embedding-004"],
             "model_mapping": {"gemini-pro": "gemini-1.5-flash"},
             "options": {"safety_settings": "BLOCK_NONE"}},
            {"name": "claude-busy", "type": "anthropic", "base_url": up.overloaded.url, "keys": ["sk-ant-busy"],
             "models": ["claude-3-opus", "claude-busy-only"], "priority": 20},
            {"name": "anthropic", "type": "anthropic", "base_url": up.anthropic.url, "keys": [ANTHROPIC_KEY],
             "models": ["claude-3-5-haiku", "claude-3-opus", "claude-rejects"],
             "model_mapping": {"claude-latest": "claude-3-5-haiku"}},
            {"name": "azure", "type": "azure", "base_url": up.azure.url, "keys": [AZURE_KEY],
             "models": ["gpt-4o-azure", "text-embedding-azure"],
             "model_mapping": {"gpt-4o-azure": "gpt-4o", "text-embedding-azure": "prod-embeddings"},
             "options": {"api_version": AZURE_API_VERSION, "deployments": {"gpt-4o": AZURE_DEPLOYMENT,
                                                                           "prod-embeddings": AZURE_DEPLOYMENT}}},
            {"name": "gpts", "type": "openai", "base_url": up.openai.url, "keys": [OPENAI_KEY],
             "models": ["gpt-4-gizmo-*", "gpt-4o-gizmo-*"]},
        ],
        "tokens": [{"name": "caller", "key": CALLER, "quota_usd": 10.0,
                    "models": ["gemini-*", "text-embedding-*", "claude-*", "gpt-4o-azure", "gpt-4-gizmo-*"]}],
        "prices": {
            "gemini-*": {"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 0.5},
            "text-embedding-*": {"input_per_mtok": 1},
            "claude-*": {"input_per_mtok": 1, "output_per_mtok": 5, "cached_input_per_mtok": 0.1,
                         "cache_write_per_mtok": 1.25},
            "gpt-4o-azure": {"input_per_mtok": 2.5, "output_per_mtok": 10},
            "gpt-4-gizmo-*": {"input_per_mtok": 10, "output_per_mtok": 30},
        },
    }
