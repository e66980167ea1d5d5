"""Console sign-in that cannot be timed, flooded or flushed: equal cost for every name, limits per name and
address that a flood cannot reset (shared through Redis), a bounded body, and a Secure cookie over HTTPS."""

from __future__ import annotations

import os
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from polyrelay.api.admin.throttle import MAX_ADDRESS_FAILURES, MAX_FAILURES, FailureTable
from tests.conftest import Gateway, free_port, start_gateway, wait_until

REDIS_URL = os.environ.get("POLYRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "admin-key-signin-0123456789"
PASSWORD = "known-password-0123"
USERS = [{"name": "known", "password": PASSWORD}, {"name": "victim", "password": PASSWORD}]
SMALL_TABLE = 4  # entries; a flood from SMALL_TABLE addresses adds two each (name and address): twice too many


def sign_in(gateway_url: str, name: str, password: str, address: str = "127.0.0.1", **extra: Any) -> httpx.Response:
    """POST /api/auth/login from ``address`` (any 127.x.y.z reaches the gateway on loopback)."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30) as client:
        return client.post(gateway_url + "/api/auth/login", json={"name": name, "password": password}, **extra)


def address(n: int) -> str:
    return f"127.0.{n // 250}.{n % 250 + 2}"


def unknown_name() -> str:
    return f"nobody-{uuid.uuid4().hex[:12]}"


def assert_locked(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_attempts"
    assert 800 < int(response.headers["retry-after"]) <= 900


def lock(gateway_url: str, name: str, source: str) -> None:
    """Fail ``MAX_FAILURES`` times for ``name`` from ``source``: the next try is refused, right password or not."""
    for _ in range(MAX_FAILURES):
        assert sign_in(gateway_url, name, "wrong guess", source).status_code == 401
    assert_locked(sign_in(gateway_url, name, PASSWORD, source))


def fail_concurrently(gateway_url: str, sources: list[str]) -> None:
    """One unknown name from each source; concurrent, since every failure costs the gateway a password hash."""
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda source: sign_in(gateway_url, unknown_name(), "guess", source).status_code,
                                 sources))
    assert statuses == [401] * len(sources)


def flood(gateway_url: str, first: int) -> None:
    """Unknown names from fresh addresses: none of them locked, together twice as many entries as the table holds."""
    fail_concurrently(gateway_url, [address(n) for n in range(first, first + SMALL_TABLE)])


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory({"users": USERS, "sign_in_throttle_entries": SMALL_TABLE, "admin_key": ADMIN_KEY})


def test_an_unknown_name_takes_as_long_as_a_wrong_password(gateway: Gateway) -> None:
    def seconds(name: str, source: str) -> float:
        started = time.perf_counter()
        assert sign_in(gateway.url, name, "not the password", source).status_code == 401
        return time.perf_counter() - started

    # One try per fresh address, interleaved, so no limit is reached and load changes hit both kinds alike.
    unknown, known = [], []
    for n in range(100, 107):
        unknown.append(seconds(unknown_name(), address(n)))
        known.append(seconds("known", address(n + 50)))
    # Without the dummy hash an unknown name took ~3 ms against ~160 ms: a ratio near 0.02.
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (unknown, known)


def test_a_flood_of_unknown_names_does_not_unlock_a_locked_name(gateway: Gateway) -> None:
    attacker = address(200)
    lock(gateway.url, "victim", attacker)
    flood(gateway.url, 201)
    assert_locked(sign_in(gateway.url, "victim", PASSWORD, attacker))
    # The lock is the attacker's alone: the victim signs in from elsewhere.
    assert sign_in(gateway.url, "victim", PASSWORD, address(299)).status_code == 200


def test_one_address_fails_at_most_twenty_times_over_all_names(gateway: Gateway) -> None:
    sprayer = address(300)
    fail_concurrently(gateway.url, [sprayer] * (MAX_ADDRESS_FAILURES - 1))
    # Sign-ins that succeed do not use up the address's allowance.
    assert [sign_in(gateway.url, "known", PASSWORD, sprayer).status_code for _ in range(2)] == [200, 200]
    assert sign_in(gateway.url, unknown_name(), "password1", sprayer).status_code == 401
    assert_locked(sign_in(gateway.url, "known", PASSWORD, sprayer))
    assert_locked(sign_in(gateway.url, unknown_name(), "password1", sprayer))
    assert sign_in(gateway.url, "known", PASSWORD, address(301)).status_code == 200


def test_sign_in_and_admin_bodies_are_bounded(gateway: Gateway) -> None:
    def assert_too_large(response: httpx.Response) -> None:
        assert response.status_code == 413
        assert response.json()["error"] == {"status": 413, "code": "request_too_large",
                                             "message": response.json()["error"]["message"]}

    padded = {"name": "known", "password": PASSWORD}
    url = gateway.url + "/api/auth/login"
    assert httpx.post(url, json={**padded, "pad": "x" * 60_000}).status_code == 200
    assert_too_large(httpx.post(url, json={**padded, "pad": "x" * 70_000}))

    def chunks() -> Iterator[bytes]:  # chunked, no Content-Length: refused as it grows, not once it is all in
        yield b'{"name": "known", "password": "'
        for _ in range(16):
            yield b"x" * 16_384

    assert_too_large(httpx.post(url, content=chunks(), headers={"content-type": "application/json"}))
    # Every admin write is bounded too, well above what a record needs.
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    huge = {"name": "huge", "password": PASSWORD, "pad": "x" * (1024 * 1024)}
    assert_too_large(httpx.post(gateway.url + "/api/users", json=huge, headers=headers, timeout=30))
    assert httpx.post(gateway.url + "/api/users", json={"name": "fine", "password": PASSWORD}, headers=headers,
                      timeout=30).status_code == 201


def _cookie(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["set-cookie"].lower()


def test_the_cookie_is_secure_when_configured_and_not_over_plain_http(
    gateway_factory: Callable[..., Gateway], gateway: Gateway
) -> None:
    assert "; secure" not in _cookie(sign_in(gateway.url, "known", PASSWORD, address(400)))
    behind_tls_proxy = gateway_factory({"users": USERS, "cookie_secure": True})
    cookie = _cookie(sign_in(behind_tls_proxy.url, "known", PASSWORD))
    assert "; secure" in cookie and "httponly" in cookie


@pytest.fixture
def https_gateway(database_factory: Callable[[], str], tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """The gateway app served over real TLS by uvicorn (a self-signed certificate for 127.0.0.1)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    config = tmp_path / "polyrelay.yaml"
    config.write_text(yaml.safe_dump({"database_url": database_factory(), "users": USERS}))
    subprocess.run([sys.executable, "-m", "polyrelay", "migrate", "--config", str(config)], check=True,
                   capture_output=True, cwd=tmp_path)
    port = free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "polyrelay.app:app_from_env", "--host", "127.0.0.1",
         "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--no-proxy-headers"],
        env={**os.environ, "POLYRELAY_CONFIG_FILE": str(config)}, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    url, trusting = f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(cert))

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "uvicorn.log").read_text()
        try:
            return httpx.get(url + "/healthz", verify=trusting, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=30, what="the HTTPS gateway")
        yield url, trusting
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def test_the_cookie_is_secure_when_signing_in_over_https(https_gateway: tuple[str, ssl.SSLContext]) -> None:
    url, trusting = https_gateway
    with httpx.Client(base_url=url, verify=trusting, timeout=30) as browser:
        response = browser.post("/api/auth/login", json={"name": "known", "password": PASSWORD})
        cookie = _cookie(response)
        assert "; secure" in cookie and "httponly" in cookie and "path=/api" in cookie
        assert browser.get("/api/me").json()["name"] == "known"
        assert "; secure" in browser.post("/api/auth/logout", headers={"X-Requested-With": "test"}).headers[
            "set-cookie"].lower()


def test_two_gateways_share_locks_through_redis_and_neither_can_be_flushed(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = {"users": USERS, "redis_url": REDIS_URL, "sign_in_throttle_entries": SMALL_TABLE}
    first = gateway_factory(config)
    second = start_gateway({**config, "database_url": first.database_url}, tmp_path)
    try:
        attacker = address(500)
        lock(first.url, "victim", attacker)
        assert_locked(sign_in(second.url, "victim", PASSWORD, attacker))
        flood(second.url, 501)
        for gateway in (first, second):
            assert_locked(sign_in(gateway.url, "victim", PASSWORD, attacker))
        assert sign_in(second.url, "victim", PASSWORD, address(601)).status_code == 200
    finally:
        second.stop()


def test_sign_in_goes_on_and_stays_throttled_when_redis_is_down(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory({"users": USERS, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    lock(gateway.url, "victim", address(700))
    assert sign_in(gateway.url, "victim", PASSWORD, address(701)).status_code == 200
    assert gateway.logs().count("sign-in throttle: Redis does not answer") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_table_full_of_live_locks_refuses_new_keys_until_the_first_lock_runs_out() -> None:
    clock = Clock()
    table = FailureTable(window_s=900, max_entries=4, clock=clock)
    for key in ("a", "b", "c", "d"):
        for _ in range(2):
            assert table.admit([(key, 2)], clock.now) is None
        clock.now += 10
    # Every entry is a live lock: a new key gets no room, and no lock is dropped to make some.
    assert table.admit([("new", 2)], clock.now) == pytest.approx(900 - 40)
    assert table.admit([("a", 2)], clock.now) == pytest.approx(900 - 40)
    clock.now += 900 - 40  # "a" has run out: its room goes to the new key, the other locks hold
    assert table.admit([("new", 2)], clock.now) is None
    assert table.admit([("b", 2)], clock.now) == pytest.approx(10)
    assert len(table) == 4
