"""Failover, channel health, key rotation, credential hygiene and quota, as a caller and an operator see them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, free_port, start_gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

GOOD_KEY = "sk-upstream-good-routing"
REVOKED_KEY = "sk-upstream-revoked-0123456789abcdef"  # the fake answers 401 and echoes it
OTHER_REVOKED_KEY = "sk-upstream-also-revoked-9876543210"
ALICE = "sk-alice-routing-0123456789"
HI = [{"role": "user", "content": "Hi"}]


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeServer
    broken: FakeServer

    def client(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=self.gateway.v1, max_retries=0, timeout=20)

    def chat(self, model: str, key: str = ALICE) -> Any:
        raw = self.client(key).chat.completions.with_raw_response.create(model=model, messages=HI)
        raw.parse()
        return self.gateway.usage_row(raw.headers["x-request-id"])

    def channel(self, name: str) -> Any:
        return self.gateway.query("SELECT * FROM channels WHERE name = :name", name=name)[0]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeServer, FakeServer]]:
    upstream = FakeServer(openai_upstream.create_app({GOOD_KEY})).start()
    broken = FakeServer(openai_upstream.create_app({GOOD_KEY})).start()
    broken.knobs["fail_with"] = 500
    yield upstream, broken
    upstream.stop()
    broken.stop()


def _channel(name: str, url: str, keys: list[str], models: list[str], priority: int) -> dict[str, Any]:
    return {"name": name, "type": "openai", "base_url": url, "keys": keys, "models": models, "priority": priority}


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], upstreams: tuple[FakeServer, FakeServer]) -> Setup:
    upstream, broken = upstreams
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = {
        "cooldown_after_failures": 100,  # keep channel order deterministic in this module
        "channels": [
            # model "revoked": the preferred channel's key was revoked upstream.
            _channel("revoked-first", upstream.url, [REVOKED_KEY], ["revoked"], 20),
            _channel("revoked-fallback", upstream.url, [GOOD_KEY], ["revoked"], 10),
            # model "rotating": the only channel has two keys, and one of them is revoked.
            _channel("rotating", upstream.url, [REVOKED_KEY, GOOD_KEY], ["rotating"], 0),
            # model "down": every channel answers 500.
            _channel("down-a", broken.url, [GOOD_KEY], ["down"], 20),
            _channel("down-b", broken.url, [GOOD_KEY], ["down"], 10),
            # model "refused": every channel refuses polyrelay's credentials.
            _channel("refused-a", upstream.url, [REVOKED_KEY], ["refused"], 20),
            _channel("refused-b", upstream.url, [OTHER_REVOKED_KEY], ["refused"], 10),
            # model "unreachable": the preferred channel's host is down.
            _channel("unreachable-first", closed, [GOOD_KEY], ["unreachable"], 20),
            _channel("unreachable-fallback", upstream.url, [GOOD_KEY], ["unreachable"], 10),
        ],
        "tokens": [{"name": "alice", "key": ALICE}],
        "prices": {"default": {"per_request": 0.001}},
    }
    return Setup(gateway_factory(config), upstream, broken)


def test_revoked_key_fails_over_to_another_channel(setup: Setup) -> None:
    row = setup.chat("revoked")
    assert (row.status_code, row.channel_name, row.attempts) == (200, "revoked-fallback", 2)
    # A stream fails over the same way: nothing has reached the caller before the first byte.
    raw = setup.client().chat.completions.with_raw_response.create(model="revoked", messages=HI, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Hello from the fake upstream."
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.status_code, row.channel_name, row.attempts, row.stream) == (200, "revoked-fallback", 2, True)
    channel = wait_until(
        lambda: (c := setup.channel("revoked-first")).failure_count >= 1 and c, what="revoked-first's failure"
    )
    assert "Incorrect API key" in channel.last_error
    assert REVOKED_KEY not in channel.last_error


def test_rotation_rests_the_rejected_key(setup: Setup) -> None:
    rows = [setup.chat("rotating") for _ in range(5)]
    assert all((row.status_code, row.channel_name) == (200, "rotating") for row in rows)
    used = [r.headers["Authorization"] for r in setup.upstream.requests if r.body and b'"rotating"' in r.body]
    assert used.count(f"Bearer {REVOKED_KEY}") == 1, "a key the upstream refused was used again"
    # The first call met the revoked key and retried the channel with its other key; once the bad
    # key rests, every call uses the good key on the first try.
    assert [row.attempts for row in rows] == [2, 1, 1, 1, 1]


def test_every_channel_failing_gives_the_upstream_error(setup: Setup) -> None:
    before = len(setup.broken.requests)
    with pytest.raises(openai.InternalServerError, match="The server had an error while processing your request"):
        setup.client().chat.completions.create(model="down", messages=HI)
    assert len(setup.broken.requests) == before + 2  # both channels were tried
    for name in ("down-a", "down-b"):
        channel = wait_until(lambda: (c := setup.channel(name)).failure_count >= 1 and c, what=f"{name}'s failure")
        assert "The server had an error" in channel.last_error


def test_refused_credentials_are_a_gateway_error_not_the_callers(setup: Setup) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        setup.client().chat.completions.create(model="refused", messages=HI)
    error = info.value
    assert not isinstance(error, openai.AuthenticationError), "the SDK would blame the caller's own key"
    assert error.status_code == 502
    assert error.code == "upstream_auth_failed"  # type: ignore[attr-defined]
    visible = str(error) + error.response.text
    assert REVOKED_KEY not in visible and OTHER_REVOKED_KEY not in visible


def test_unreachable_channel_fails_over(setup: Setup) -> None:
    row = setup.chat("unreachable")
    assert (row.status_code, row.channel_name, row.attempts) == (200, "unreachable-fallback", 2)
    channel = wait_until(
        lambda: (c := setup.channel("unreachable-first")).failure_count >= 1 and c, what="the unreachable failure"
    )
    assert "unreachable" in channel.last_error


def test_errors_never_contain_the_upstream_key(setup: Setup) -> None:
    """The fake's 401 message echoes the key it got; the caller and the logs must not see it."""
    with pytest.raises(openai.APIStatusError) as info:
        setup.client().chat.completions.create(model="refused", messages=HI)
    assert "Incorrect API key provided" in info.value.response.text  # the upstream's reason is kept...
    assert REVOKED_KEY not in info.value.response.text  # ...without the key
    rows = setup.gateway.query("SELECT error FROM usage_logs WHERE model = 'refused'")
    assert rows and all(REVOKED_KEY not in row.error for row in rows)
    assert REVOKED_KEY not in setup.gateway.logs()


# --- quota --------------------------------------------------------------------------------

METERED = "sk-metered-0123456789abcdef"
BURST = "sk-burst-0123456789abcdef"


def _quota_config(upstream: FakeServer) -> dict[str, Any]:
    return {
        "channels": [_channel("main", upstream.url, [GOOD_KEY], ["gpt-4o-mini", "per-call"], 0)],
        "tokens": [
            # Covers three calls of "per-call" (0.01 USD each) and nothing more.
            {"name": "metered", "key": METERED, "quota_usd": 0.03},
            {"name": "burst", "key": BURST, "quota_usd": 0.03},
        ],
        "prices": {
            "per-call": {"per_request": 0.01},
            "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
        },
    }


def _spend(gateway: Gateway, token: str) -> tuple[int, int]:
    """(tokens.used_micros, sum of the token's usage-log costs)."""
    used = gateway.query("SELECT used_micros FROM tokens WHERE name = :name", name=token)[0].used_micros
    logged = gateway.query(
        "SELECT COALESCE(SUM(u.cost_micros), 0) AS total FROM usage_logs u JOIN tokens t ON t.id = u.token_id "
        "WHERE t.name = :name",
        name=token,
    )[0].total
    return int(used), int(logged)


def test_quota_is_enforced_persisted_and_survives_a_restart(
    gateway_factory: Callable[..., Gateway], upstreams: tuple[FakeServer, FakeServer], tmp_path: Path
) -> None:
    upstream = upstreams[0]
    gateway = gateway_factory(_quota_config(upstream))
    client = openai.OpenAI(api_key=METERED, base_url=gateway.v1, max_retries=0, timeout=20)
    for _ in range(3):
        client.chat.completions.create(model="per-call", messages=HI)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="per-call", messages=HI)
    assert info.value.code == "insufficient_quota"  # type: ignore[attr-defined]
    # Cheap token-priced calls need a reservation too: with nothing left, they are refused as well.
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert wait_until(lambda: _spend(gateway, "metered") == (30_000, 30_000), what="the spend to be persisted")

    gateway.stop()  # graceful: flushes the batching writer
    config = {**_quota_config(upstream), "database_url": gateway.database_url}
    restarted = start_gateway(config, tmp_path)
    try:
        client = openai.OpenAI(api_key=METERED, base_url=restarted.v1, max_retries=0, timeout=20)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="per-call", messages=HI)
        assert _spend(restarted, "metered") == (30_000, 30_000)
    finally:
        restarted.stop()


def test_concurrent_requests_cannot_overdraw_the_quota(
    gateway_factory: Callable[..., Gateway], upstreams: tuple[FakeServer, FakeServer]
) -> None:
    gateway = gateway_factory(_quota_config(upstreams[0]))
    client = openai.OpenAI(api_key=BURST, base_url=gateway.v1, max_retries=0, timeout=20)

    def call(_: int) -> str:
        try:
            client.chat.completions.create(model="per-call", messages=HI)
            return "ok"
        except openai.RateLimitError:
            return "quota"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(8)))
    assert sorted(outcomes) == ["ok"] * 3 + ["quota"] * 5
    assert wait_until(lambda: _spend(gateway, "burst") == (30_000, 30_000), what="the spend to be persisted")
