"""Limits before work, and the caller's real address behind a reverse proxy.

A multipart body is parsed once, within ``max_multipart_parts`` and
``max_multipart_field_bytes``, and refused (413, in the calling family's error shape)
before any upstream hears of it; a huge one is refused without stalling the gateway.
With ``trusted_proxies``, a trusted peer's ``X-Forwarded-For`` / ``X-Real-IP`` /
``X-Forwarded-Proto`` name the caller's address and scheme; anyone else's are ignored.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from polyrelay.multipart import MAX_FIELD_BYTES, MAX_PARTS
from tests.conftest import Gateway
from tests.fakes import ideogram_upstream, openai_upstream
from tests.fakes.openai_upstream import FORMS
from tests.fakes.server import FakeServer
from tests.image_setup import JPEG

ALICE = "sk-alice-edge-0123456789"
FENCED = "sk-fenced-edge-0123456789"  # allowed only from CALLER
CALLER = "203.0.113.7"
OTHER = "198.51.100.9"
OPENAI_KEY, IDEOGRAM_KEY = "sk-upstream-edge", "ideogram-edge-key"
OPERATOR, PASSWORD = "operator", "correct horse battery staple"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(4 * MAX_FIELD_BYTES)  # a file: larger than a text field may be, and fine


@dataclass
class Edge:
    gateway: Gateway
    openai: FakeServer
    ideogram: FakeServer

    def client(self, key: str = ALICE, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.gateway.v1, max_retries=0, timeout=20,
                             default_headers=headers)

    def post(self, path: str, key: str = ALICE, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.gateway.url + path, headers={"Authorization": f"Bearer {key}", **(headers or {})},
                          timeout=60, **kwargs)

    def chat(self, key: str = ALICE, **headers: str) -> Any:
        """A served chat call's usage row."""
        raw = self.client(key, **headers).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        return self.gateway.usage_row(raw.headers["x-request-id"])

    def rows(self) -> int:
        return self.gateway.query("SELECT COUNT(*) FROM usage_logs")[0][0]

    @contextmanager
    def nothing_relayed_or_logged(self) -> Iterator[None]:
        """The block's requests reach no upstream and write no usage row. A served call before and after
        is the barrier: the writer flushes rows in order, so its row means the block's would be there too."""
        self.chat()
        upstream_before, rows_before = len(self.openai.requests) + len(self.ideogram.requests), self.rows()
        yield
        assert len(self.openai.requests) + len(self.ideogram.requests) == upstream_before, "an upstream was called"
        self.chat()
        assert self.rows() == rows_before + 1, "a refused request was logged"


def config(openai_url: str, ideogram_url: str, **settings: Any) -> dict[str, Any]:
    return {
        **settings,
        "channels": [
            {"name": "openai", "type": "openai", "base_url": openai_url, "keys": [OPENAI_KEY],
             "models": ["gpt-4o-mini", "dall-e-2", "whisper-1"]},
            {"name": "ideogram", "type": "ideogram", "base_url": ideogram_url, "keys": [IDEOGRAM_KEY],
             "models": ["ideogram-V_2"]},
        ],
        "users": [{"name": OPERATOR, "role": "admin", "password": PASSWORD}],
        "tokens": [
            {"name": "alice", "key": ALICE, "quota_usd": 100.0},
            {"name": "fenced", "key": FENCED, "quota_usd": 100.0, "allowed_ips": [f"{CALLER}/32"]},
        ],
        "prices": {
            "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            "dall-e-2": {"per_image": 0.02},
            "whisper-1": {"per_second": 0.006},
            "ideogram-V_2": {"per_image": 0.08},
        },
    }


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeServer, FakeServer]]:
    servers = (FakeServer(openai_upstream.create_app({OPENAI_KEY})).start(),
               FakeServer(ideogram_upstream.create_app({IDEOGRAM_KEY})).start())
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def edge(gateway_factory: Callable[..., Gateway], fakes: tuple[FakeServer, FakeServer]) -> Edge:
    """Behind a proxy on 127.0.0.1 (the tests' own address); multipart limits at their defaults."""
    gateway = gateway_factory(config(fakes[0].url, fakes[1].url, trusted_proxies=["127.0.0.1"]))
    return Edge(gateway, *fakes)


@pytest.fixture(scope="module")
def untrusting(gateway_factory: Callable[..., Gateway], fakes: tuple[FakeServer, FakeServer]) -> Edge:
    """The default: no proxy is trusted."""
    return Edge(gateway_factory(config(fakes[0].url, fakes[1].url)), *fakes)


def _edit(edge: Edge, fields: dict[str, str]) -> httpx.Response:
    """An image edit with one file, ``model``, ``prompt`` and ``fields``: 3 + len(fields) parts."""
    data = {"model": "dall-e-2", "prompt": "add a hat", **fields}
    return edge.post("/v1/images/edits", files={"image": ("cat.png", PNG, "image/png")}, data=data)


def _remix(edge: Edge, image_request: str, fields: dict[str, str] | None = None) -> httpx.Response:
    return edge.post("/ideogram/v1/remix", files={"image_file": ("photo.jpg", JPEG, "image/jpeg")},
                     data={"image_request": image_request, **(fields or {})})


def _extra(count: int) -> dict[str, str]:
    return {f"extra{i}": "x" for i in range(count)}


# --- multipart limits -------------------------------------------------------------------------


def test_openai_upload_of_as_many_parts_as_allowed_is_served_one_more_is_refused(edge: Edge) -> None:
    served = _edit(edge, _extra(MAX_PARTS - 3))
    assert served.status_code == 200, served.text
    assert len(edge.openai.app[FORMS][-1]) == MAX_PARTS  # every part went upstream

    with edge.nothing_relayed_or_logged():
        refused = _edit(edge, _extra(MAX_PARTS - 2))
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "too_many_parts")
    assert str(MAX_PARTS) in error["message"]


def test_openai_text_field_over_the_limit_is_refused_but_a_larger_file_is_not(edge: Edge) -> None:
    prompt = "猫" * (MAX_FIELD_BYTES // 3)  # 3 bytes a character: at the limit, in a script where that matters
    served = _edit(edge, {"prompt": prompt})
    assert served.status_code == 200, served.text
    sent = edge.openai.app[FORMS][-1]
    assert (sent["prompt"], sent["image"]) == (prompt, PNG)

    with edge.nothing_relayed_or_logged():
        refused = _edit(edge, {"prompt": "a" * (MAX_FIELD_BYTES + 1)})
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("field_too_large", "prompt")


def test_openai_transcription_refuses_an_oversized_field_with_the_sdk(edge: Edge) -> None:
    with edge.nothing_relayed_or_logged(), pytest.raises(openai.APIStatusError) as info:
        edge.client().audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF" + bytes(1000), "audio/wav"),
                                                  prompt="p" * (MAX_FIELD_BYTES + 1))
    assert info.value.status_code == 413
    assert info.value.code == "field_too_large"  # type: ignore[attr-defined]


def test_ideogram_refuses_too_many_parts_and_an_oversized_field_in_its_own_shape(edge: Edge) -> None:
    image_request = '{"prompt": "a beach", "model": "V_2"}'
    served = _remix(edge, image_request, _extra(MAX_PARTS - 2))
    assert served.status_code == 200, served.text

    huge_request = json.dumps({"prompt": "a" * MAX_FIELD_BYTES, "model": "V_2"})
    with edge.nothing_relayed_or_logged():
        too_many = _remix(edge, image_request, _extra(MAX_PARTS - 1))
        too_big = _remix(edge, huge_request)
    assert too_many.status_code == too_big.status_code == 413
    assert set(too_many.json()) == set(too_big.json()) == {"error"}  # Ideogram's shape: {"error": "..."}
    assert str(MAX_PARTS) in too_many.json()["error"]
    assert "'image_request'" in too_big.json()["error"]


def _many_parts(size: int) -> tuple[bytes, str]:
    """A body of about ``size`` bytes made of tiny text fields: 7 s of parsing before there were limits."""
    part = b'--edge\r\nContent-Disposition: form-data; name="f"\r\n\r\nvalue\r\n'
    return part * (size // len(part)) + b"--edge--\r\n", "multipart/form-data; boundary=edge"


def _upload(url: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    """POST ``body`` with http.client, which sends it with one ``sendall`` that lets go of the GIL:
    httpx would copy what is left of the body after every send, in this process, slowing down the
    /healthz probes this test times."""
    address = httpx.URL(url)
    connection = http.client.HTTPConnection(address.host, address.port, timeout=60)
    try:
        connection.request("POST", "/v1/images/edits", body=body,
                           headers={"Authorization": f"Bearer {ALICE}", "Content-Type": content_type})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_healthz_stays_responsive_while_a_25_mb_upload_of_many_parts_is_refused(edge: Edge) -> None:
    body, content_type = _many_parts(25 * 1024 * 1024)
    answers: list[tuple[int, dict[str, Any]]] = []
    uploading = threading.Thread(target=lambda: answers.append(_upload(edge.gateway.url, body, content_type)))
    latencies: list[float] = []
    with httpx.Client(base_url=edge.gateway.url, timeout=30) as probe:
        probe.get("/healthz")  # connected before the upload starts
        uploading.start()
        while uploading.is_alive():
            started = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
    uploading.join()
    (status, answer), = answers
    assert (status, answer["error"]["code"]) == (413, "too_many_parts")
    assert len(latencies) >= 3, "the upload ended before /healthz could be asked while it ran"
    # Parsed on the loop, such a body stalled /healthz for seconds; 2 shared cores still see scheduling hiccups.
    assert statistics.median(latencies) < 0.05 and max(latencies) < 0.5, \
        f"/healthz took {statistics.median(latencies) * 1000:.0f} ms (median), {max(latencies) * 1000:.0f} ms (max)"


# --- trusted proxies --------------------------------------------------------------------------


def test_a_trusted_proxy_names_the_caller_for_the_ip_fence_and_the_usage_row(edge: Edge) -> None:
    row = edge.chat(FENCED, **{"X-Forwarded-For": CALLER})
    assert (row.status_code, row.client_ip) == (200, CALLER)

    row = edge.chat(FENCED, **{"X-Real-IP": CALLER})  # the other header proxies use
    assert (row.status_code, row.client_ip) == (200, CALLER)

    row = edge.chat(ALICE, **{"X-Forwarded-For": f"{OTHER}, 127.0.0.1"})  # the trusted hop is skipped
    assert row.client_ip == OTHER


@pytest.mark.parametrize("headers", [{}, {"X-Forwarded-For": f"{CALLER}, {OTHER}"}, {"X-Forwarded-For": "unknown"}],
                         ids=["no-header", "caller-forged-left-hop", "not-an-address"])
def test_the_fence_refuses_what_the_trusted_proxy_did_not_vouch_for(edge: Edge, headers: dict[str, str]) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        edge.chat(FENCED, **headers)
    assert info.value.code == "ip_not_allowed"  # type: ignore[attr-defined]


def test_forwarding_headers_are_ignored_when_the_peer_is_not_trusted(untrusting: Edge) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        untrusting.chat(FENCED, **{"X-Forwarded-For": CALLER, "X-Real-IP": CALLER})
    assert info.value.code == "ip_not_allowed"  # type: ignore[attr-defined]
    assert untrusting.chat(ALICE, **{"X-Forwarded-For": CALLER}).client_ip == "127.0.0.1"


def _sign_in(edge: Edge, **headers: str) -> httpx.Response:
    response = httpx.post(edge.gateway.url + "/api/auth/login", json={"name": OPERATOR, "password": PASSWORD},
                          headers=headers, timeout=20)
    assert response.status_code == 200, response.text
    return response


def test_https_at_a_trusted_proxy_gives_a_secure_session_cookie(edge: Edge, untrusting: Edge) -> None:
    def secure(response: httpx.Response) -> bool:
        return "secure" in response.headers["set-cookie"].lower().split("; ")

    assert secure(_sign_in(edge, **{"X-Forwarded-Proto": "https"}))
    assert not secure(_sign_in(edge))
    assert not secure(_sign_in(untrusting, **{"X-Forwarded-Proto": "https"}))
