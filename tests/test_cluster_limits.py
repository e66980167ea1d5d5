"""Rate limits and the sign-in throttle across gateways sharing one database and one Redis.

Two ``polyrelay serve`` processes on one database, each spelling the database URL its own way
(``127.0.0.1`` or ``localhost``; an absolute or a relative SQLite path), so the cluster id they
derive must agree for them to share anything. Redis is a private ``redis-server`` on a free port
that the outage test stops and starts again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import RedisServer
from tests.conftest import Gateway, start_gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-cluster-limits"
ADMIN = "admin-key-cluster-limits-0123456789"
PASSWORD = "cluster-password-0123"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
# name -> rpm_limit; every limit has a spare key, for a check a minute boundary cut in two.
LIMITS = {"burst": 60, "spelled": 5, "outage": 3, "after": 4}
FREE = "sk-pr-cluster-free-0123456789abcdef"


def key(name: str, spare: bool = False) -> str:
    return f"sk-pr-cluster-{name}{'-spare' if spare else ''}-0123456789abcdef"


def _spellings(database_url: str, workdir: Path) -> list[str]:
    """The same database written two ways."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        return [database_url, "sqlite:///" + os.path.relpath(path, workdir)]
    assert "@127.0.0.1:" in database_url, database_url
    return [database_url, database_url.replace("@127.0.0.1:", "@localhost:")]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nodes(database_factory: Callable[[], str], redis: RedisServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    workdir = tmp_path_factory.mktemp("nodes")
    tokens = [{"name": "free", "key": FREE}]
    for name, rpm in LIMITS.items():
        tokens += [{"name": name, "key": key(name), "rpm_limit": rpm},
                   {"name": name + "-spare", "key": key(name, True), "rpm_limit": rpm}]
    tokens += [{"name": "tpm", "key": key("tpm"), "tpm_limit": 1},
               {"name": "tpm-spare", "key": key("tpm", True), "tpm_limit": 1}]
    config = {
        "redis_url": redis.url, "admin_key": ADMIN,
        "channels": [{"name": "openai", "type": "openai", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
                      "models": ["gpt-4o-mini"]}],
        "users": [{"name": name, "password": PASSWORD} for name in ("alice", "bob")],
        "tokens": tokens,
    }
    started: list[Gateway] = []
    try:
        for url in _spellings(database_factory(), workdir):  # one by one: cold start is another test's subject
            started.append(start_gateway({**config, "database_url": url}, workdir))
        yield started
    finally:
        for gateway in started:
            gateway.stop()
        upstream.stop()


def _minute() -> int:
    return int(time.time()) // 60  # billing/ratelimit.py: fixed windows of int(time.time()) // 60


def in_one_window(name: str, attempt: Callable[[str], list[int]]) -> list[int]:
    """The statuses of ``attempt(key)`` made inside one rate-limit window: with the spare key if a
    minute boundary fell inside the first try (the gateways run on this machine's clock)."""
    for spare in (False, True):
        window = _minute()
        statuses = attempt(key(name, spare))
        if _minute() == window:
            return statuses
    raise AssertionError("a minute boundary fell inside both tries")


def chat(gateway: Gateway, bearer: str) -> httpx.Response:
    return httpx.post(gateway.v1 + "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {bearer}"},
                      timeout=30)


def round_robin(nodes: list[Gateway], count: int) -> Callable[[str], list[int]]:
    return lambda bearer: [chat(nodes[i % len(nodes)], bearer).status_code for i in range(count)]


def ready(gateway: Gateway) -> httpx.Response:
    return httpx.get(gateway.url + "/readyz", timeout=10)


def test_a_burst_over_two_gateways_serves_exactly_the_limit(nodes: list[Gateway]) -> None:
    async def burst(bearer: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            return await asyncio.gather(*(
                client.post(nodes[i % len(nodes)].v1 + "/chat/completions", json=CHAT,
                            headers={"Authorization": f"Bearer {bearer}"})
                for i in range(240)))

    refused: list[httpx.Response] = []

    def attempt(bearer: str) -> list[int]:
        responses = asyncio.run(burst(bearer))
        refused[:] = [r for r in responses if r.status_code == 429]
        return [r.status_code for r in responses]

    wait_until(lambda: time.time() % 60 < 50, timeout=15, what="a minute with room for the burst")
    statuses = in_one_window("burst", attempt)
    served = statuses.count(200)
    assert 55 <= served <= 60 and served + statuses.count(429) == 240, (served, sorted(set(statuses)))
    error = refused[0].json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded"), error
    assert "may send 60 requests per minute" in error["message"], error
    assert all(r.headers["retry-after"].isdigit() and 1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    for gateway in nodes:
        assert ready(gateway).json()["limits_shared"] is True


def test_gateways_that_spell_the_database_differently_share_counters(nodes: list[Gateway]) -> None:
    assert nodes[0].database_url != nodes[1].database_url
    statuses = in_one_window("spelled", round_robin(nodes, 8))
    assert statuses == [200] * 5 + [429] * 3, statuses


def test_tokens_spent_on_one_gateway_count_on_the_other(nodes: list[Gateway]) -> None:
    # The first call's tokens (counted after it, not awaited) reach Redis before the next call does.
    statuses = in_one_window("tpm", lambda bearer: [chat(nodes[0], bearer).status_code,
                                                    chat(nodes[1], bearer).status_code])
    assert statuses == [200, 429], statuses


def test_the_sign_in_throttle_is_shared_and_exact(nodes: list[Gateway]) -> None:
    def sign_in(gateway: Gateway, name: str, password: str) -> int:
        return httpx.post(gateway.url + "/api/auth/login", json={"name": name, "password": password},
                          timeout=30).status_code

    # Five failures spread over both gateways lock the name on both, right password or not.
    assert [sign_in(nodes[i % 2], "alice", "wrong") for i in range(5)] == [401] * 5
    assert [sign_in(gateway, "alice", PASSWORD) for gateway in nodes] == [429] * 2

    async def guesses() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(*(
                client.post(nodes[i % 2].url + "/api/auth/login", json={"name": "bob", "password": "wrong"})
                for i in range(8)))
            return [r.status_code for r in responses]

    statuses = asyncio.run(guesses())  # concurrent guesses cannot slip past the limit
    assert sorted(statuses) == [401] * 5 + [429] * 3, statuses


def test_limits_fall_back_to_each_process_while_redis_is_away(nodes: list[Gateway], redis: RedisServer) -> None:
    lost, back = "rate limits: Redis at", "rate limits: Redis answers again"
    assert all(gateway.logs().count(lost) == 0 for gateway in nodes)
    redis.stop()
    try:
        # Served with limits counted in each process: 3 a minute on one gateway.
        statuses = in_one_window("outage", round_robin(nodes[:1], 5))
        assert statuses == [200] * 3 + [429] * 2, statuses
        assert chat(nodes[1], FREE).status_code == 200
        down = {"status": "degraded", "database": "ok", "redis": "down", "limits_shared": False}
        for gateway in nodes:
            wait_until(lambda: ready(gateway).status_code == 503, what=f"{gateway.url} /readyz 503")
            assert ready(gateway).json() == down
            assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
        for i in range(6):  # more limited requests and probes: still one warning per process
            chat(nodes[i % 2], key("outage", True))
        for gateway in nodes:
            assert gateway.logs().count(lost) == 1, gateway.logs()[-3000:]
    finally:
        redis.start()
    for gateway in nodes:
        wait_until(lambda: ready(gateway).status_code == 200, what=f"{gateway.url} /readyz 200 again")
        assert ready(gateway).json() == {"status": "ready", "database": "ok", "redis": "ok", "limits_shared": True}
        assert gateway.logs().count(back) == 1 and gateway.logs().count(lost) == 1
    statuses = in_one_window("after", round_robin(nodes, 6))  # shared again
    assert statuses == [200] * 4 + [429] * 2, statuses
