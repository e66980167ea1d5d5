"""One gateway with Ideogram, BFL, Recraft and Stability channels on fake upstreams, for the image tests."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from tests.conftest import Gateway
from tests.fakes import bfl_upstream, ideogram_upstream, recraft_upstream, stability_upstream
from tests.fakes.server import FakeServer

ALICE = "sk-alice-images-0123456789"
RESTRICTED = "sk-restricted-images-0123456789"
POOR = "sk-poor-images-0123456789"
IDEOGRAM_KEY, BFL_KEY, RECRAFT_KEY, STABILITY_KEY = "ideo-up-key", "bfl-up-key", "recraft-up-key", "stab-up-key"

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 8
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(64)


def png(width: int = 64, height: int = 64, padding: int = 200) -> bytes:
    """A PNG signature and IHDR chunk declaring ``width`` x ``height`` (enough for header checks)."""
    ihdr = struct.pack(">II", width, height) + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00" * 4 + b"\x00" * padding


PRICES: dict[str, dict[str, float]] = {
    "ideogram-V_1": {"per_image": 0.06},
    "ideogram-V_1_TURBO": {"per_image": 0.02},
    "ideogram-V_2": {"per_image": 0.08},
    "ideogram-V_2A": {"per_image": 0.04},
    "ideogram-V_3-*": {"per_image": 0.06},
    "ideogram-V_3-TURBO": {"per_image": 0.03},
    "ideogram-upscale": {"per_image": 0.06},
    "ideogram-describe": {"per_request": 0.01},
    "flux-pro-1.1": {"per_image": 0.04},
    "recraftv3": {"per_image": 0.04},
    "recraft-*": {"per_image": 0.01},
    "recraft-styles": {"per_request": 0.04},
    "sd3*": {"per_image": 0.065},
    "stable-image-ultra": {"per_image": 0.08},
    "stable-image-core": {"per_image": 0.03},
    "stable-diffusion-*": {"per_image": 0.01},
}


@dataclass
class ImageSetup:
    gateway: Gateway
    ideogram: FakeServer
    bfl: FakeServer
    recraft: FakeServer
    stability: FakeServer

    @property
    def fakes(self) -> tuple[FakeServer, ...]:
        return self.ideogram, self.bfl, self.recraft, self.stability

    def client(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.gateway.v1, max_retries=0)

    def post(self, path: str, key: str | None = ALICE, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.post(self.gateway.url + path, headers=headers, timeout=30, **kwargs)

    def row(self, response: httpx.Response) -> Any:
        return self.gateway.usage_row(response.headers["x-request-id"])

    def usage_rows(self) -> int:
        return self.gateway.query("SELECT COUNT(*) FROM usage_logs")[0][0]

    @contextmanager
    def nothing_relayed_or_billed(self, then: Callable[[], httpx.Response]) -> Iterator[None]:
        """The block's requests reach no upstream and write no usage row. ``then`` is a good call whose
        row we wait for, before and after: the batching writer flushes rows in order, so the count
        after it includes everything the block queued."""
        self.row(then())  # a barrier: every row queued before the block is now in the table
        upstream_before = [len(f.requests) for f in self.fakes]
        rows_before = self.usage_rows()
        yield
        assert [len(f.requests) for f in self.fakes] == upstream_before, "a refused request reached an upstream"
        self.row(then())
        assert self.usage_rows() == rows_before + 1, "a refused request was logged or billed"


def config(ideogram: str, bfl: str, recraft: str, stability: str) -> dict[str, Any]:
    return {
        "key_rest_s": 0,
        "cooldown_s": 0,
        "channels": [
            {"name": "ideogram", "type": "ideogram", "base_url": ideogram, "keys": [IDEOGRAM_KEY],
             "models": ["ideogram-V_1", "ideogram-V_2", "ideogram-V_2_TURBO", "ideogram-V_3-*", "ideogram-upscale",
                        "ideogram-describe"], "model_mapping": {"ideogram-V_1_TURBO": "ideogram-V_1"}},
            {"name": "ideogram-strict", "type": "ideogram", "base_url": ideogram, "keys": [IDEOGRAM_KEY],
             "models": ["ideogram-V_2A"], "options": {"max_upload_bytes": 2048}},
            {"name": "bfl", "type": "flux", "base_url": bfl, "keys": [BFL_KEY], "models": ["flux-*"],
             "options": {"poll_interval_s": 0.01, "poll_timeout_s": 10}},
            {"name": "recraft", "type": "recraft", "base_url": recraft, "keys": [RECRAFT_KEY],
             "models": ["recraftv3", "recraftv2", "recraft-*"]},
            {"name": "stability", "type": "stability", "base_url": stability, "keys": [STABILITY_KEY],
             "models": ["sd3*", "stable-diffusion-*", "stable-image-*"],
             "model_mapping": {"sd3-medium": "sd3-large", "sd3.5-large": "sd3-large"}},
        ],
        "tokens": [
            {"name": "alice", "key": ALICE, "quota_usd": 50.0},
            {"name": "restricted", "key": RESTRICTED, "models": ["flux-*"]},
            {"name": "poor", "key": POOR, "quota_usd": 0.000001},
        ],
        "prices": PRICES,
    }


def start(gateway_factory: Callable[..., Gateway]) -> Iterator[ImageSetup]:
    fakes = (
        FakeServer(ideogram_upstream.create_app({IDEOGRAM_KEY})).start(),
        FakeServer(bfl_upstream.create_app({BFL_KEY})).start(),
        FakeServer(recraft_upstream.create_app({RECRAFT_KEY})).start(),
        FakeServer(stability_upstream.create_app({STABILITY_KEY})).start(),
    )
    try:
        gateway = gateway_factory(config(*(fake.url for fake in fakes)))
        yield ImageSetup(gateway, *fakes)
    finally:
        for fake in fakes:
            fake.stop()
