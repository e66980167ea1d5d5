"""Outbound URLs a caller names, end to end on a gateway that does not allow private hosts:
Luma's file_upload refuses private image URLs before any upstream call, and callbacks to a
loopback receiver are refused (not retried) while the task itself completes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conftest import Gateway, wait_until
from tests.fakes import luma_upstream
from tests.fakes.server import FakeServer

KEY = "sk-outbound-alice-0123456789abcdef"
UPLOAD = "/luma/generations/file_upload"


@pytest.fixture(scope="module")
def luma() -> Iterator[FakeServer]:
    server = FakeServer(luma_upstream.create_app()).start()
    yield server
    server.stop()


async def _take(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture(scope="module")
def receiver() -> Iterator[FakeServer]:
    app = web.Application()
    app.router.add_post("/hook", _take)
    server = FakeServer(app).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Gateway], luma: FakeServer) -> Gateway:
    return gateway_factory({  # allow_private_image_hosts and notify_allow_private left at their default: off
        "tasks": {"poll_interval_s": 0.05, "notify_backoff_s": 0.01, "lease_s": 5},
        "channels": [{"name": "luma", "type": "luma", "base_url": luma.url, "keys": [luma_upstream.LUMA_KEY],
                      "models": ["luma_*"]}],
        "tokens": [{"name": "alice", "key": KEY, "quota_usd": 10}],
        "prices": {"luma_generation": {"per_request": 0.4}},
    })


def _post(gateway: Gateway, path: str, body: dict[str, str]) -> httpx.Response:
    return httpx.post(gateway.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"})


@pytest.mark.parametrize("url", ["http://127.0.0.1/cat.png", "http://localhost:8080/cat.png",
                                 "http://169.254.169.254/latest/meta-data", "http://[::ffff:10.0.0.1]/cat.png",
                                 "http://[64:ff9b::a9fe:a9fe]/cat.png", "https://[2002:c0a8:101::1]/cat.png"])
def test_file_upload_refuses_a_private_image_url_before_any_upstream_call(
    gateway: Gateway, luma: FakeServer, url: str
) -> None:
    before = len(luma.requests)
    response = _post(gateway, UPLOAD, {"url": url})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "invalid_image_url" and "not a public address" in detail["reason"]
    assert not luma.requests[before:]


def test_file_upload_relays_a_public_image_url(gateway: Gateway, luma: FakeServer) -> None:
    url = "http://93.184.215.14/cat.png"  # a public literal: nothing to resolve, and polyrelay never fetches it
    response = _post(gateway, UPLOAD, {"url": url})
    assert response.status_code == 200, response.text
    assert response.json()["public_url"].startswith(luma_upstream.CDN)
    assert orjson.loads(luma.last(UPLOAD).body) == {"url": url}


def test_a_callback_to_a_loopback_receiver_is_refused_and_settled(gateway: Gateway, receiver: FakeServer) -> None:
    response = _post(gateway, "/luma/generations", {"user_prompt": "a cat", "notify_hook": receiver.url + "/hook"})
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    wait_until(lambda: gateway.query("SELECT status, notify_due_at FROM tasks WHERE id = :i", i=task_id)[0]
               == ("SUCCESS", None), what="the task completed and its callbacks settled")
    assert f"callback to {receiver.url}/hook refused" in gateway.logs()
    assert not receiver.requests
