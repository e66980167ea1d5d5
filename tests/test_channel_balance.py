"""Upstream balances (issue 16): a channel's balance fetched from its provider — OpenRouter, DeepSeek,
SiliconFlow and one-api/new-api relays (``tests/fakes/balance_upstreams.py``) — on demand through
``POST /api/channels/{id}/balance`` and on a schedule, the upstream key scrubbed from every refusal,
and a low channel balance alerted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from polyrelay.relay.balance import protocol_of
from tests.conftest import Gateway, wait_until
from tests.fakes import balance_upstreams, webhook_sink
from tests.fakes.server import FakeServer

KEY = "sk-balance-upstream-0123456789abcdef"
WRONG_KEY = "sk-balance-wrong-key-9876543210fedcba"
ADMIN_KEY = "admin-key-balance-0123456789"
CALLER_KEY = "sk-balance-caller-0123456789"


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeServer
    sink: FakeServer

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None,
              key: str = ADMIN_KEY) -> httpx.Response:
        return httpx.request(method, self.gateway.url + path, headers={"Authorization": f"Bearer {key}"}, json=body,
                             timeout=20)

    def channel(self, name: str) -> int:
        return self.gateway.query("SELECT id FROM channels WHERE name = :n", n=name)[0].id

    def fetch(self, name: str) -> httpx.Response:
        return self.admin("POST", f"/api/channels/{self.channel(name)}/balance")

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        bodies = [json.loads(r.body) for r in list(self.sink.requests) if r.path == "/generic"]
        return [b for b in bodies if b["kind"] == kind]


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    upstream = FakeServer(balance_upstreams.create_app(KEY)).start()
    sink = FakeServer(webhook_sink.create_app()).start()

    def channel(name: str, protocol: str | None, base_url: str = upstream.url, key: str = KEY) -> dict[str, Any]:
        return {"name": name, "base_url": base_url, "keys": [key], "models": [f"{name}-model"],
                "options": {"balance": protocol} if protocol else {}}

    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "channels": [channel("router", "openrouter"), channel("seek", "deepseek"), channel("flow", "siliconflow"),
                     channel("relay", "openai", upstream.url + "/v1"), channel("plain", None),
                     channel("refused", "deepseek", key=WRONG_KEY), channel("scheduled", "openrouter")],
        "users": [{"name": "caller"}], "tokens": [{"name": "caller-key", "key": CALLER_KEY, "user": "caller"}],
        "channel_balance": {"interval_s": 0.5, "cny_per_usd": 7.2},
        "alerts": {"interval_s": 0.2, "channel_balance_below_usd": 20, "error_rate": None, "task_backlog_count": None,
                   "webhooks": [{"url": f"{sink.url}/generic"}]},
    })
    yield Setup(gateway, upstream, sink)
    for server in (sink, upstream):
        server.stop()


@pytest.mark.parametrize(("name", "protocol", "micros"), [
    ("router", "openrouter", 74_750_000),  # 100.5 credits - 25.75 used
    ("seek", "deepseek", 15_277_778),  # 110.00 CNY at 7.2 CNY per USD
    ("flow", "siliconflow", 12_344_444),  # 88.88 CNY
    ("relay", "openai", 37_660_000),  # hard limit 50 USD - 1234 cents used
])
def test_each_protocol_fetches_the_balance_its_upstream_gives(setup: Setup, name: str, protocol: str,
                                                              micros: int) -> None:
    response = setup.fetch(name)
    assert response.status_code == 200, response.text
    assert response.json()["protocol"] == protocol and response.json()["balance_micros"] == micros
    channel = setup.admin("GET", f"/api/channels/{setup.channel(name)}").json()
    fetched_at = datetime.fromisoformat(response.json()["balance_updated_at"])
    assert channel["balance_micros"] == micros  # the schedule may have fetched it again since, never older
    assert datetime.fromisoformat(channel["balance_updated_at"]) >= fetched_at


def test_deepseek_prefers_its_usd_balance(setup: Setup) -> None:
    setup.upstream.knobs["deepseek"] = [("CNY", "110.00"), ("USD", "15.50")]
    try:
        assert setup.fetch("seek").json()["balance_micros"] == 15_500_000
    finally:
        del setup.upstream.knobs["deepseek"]


def test_a_channel_without_a_balance_endpoint_a_missing_channel_and_a_caller_are_refused(setup: Setup) -> None:
    plain = setup.fetch("plain")
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "no_balance_protocol"
    assert setup.admin("POST", "/api/channels/999999/balance").json()["error"]["status"] == 404
    caller = setup.admin("POST", f"/api/channels/{setup.channel('router')}/balance", key=CALLER_KEY)
    assert caller.status_code in (401, 403) and "error" in caller.json()


def test_a_refusal_is_reported_without_the_upstream_key(setup: Setup) -> None:
    setup.upstream.knobs["echo_key"] = True  # the upstream quotes the key it was sent
    try:
        refused = setup.fetch("refused")
    finally:
        del setup.upstream.knobs["echo_key"]
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "upstream_error"
    assert "401" in refused.json()["error"]["message"]
    assert WRONG_KEY not in refused.text and WRONG_KEY not in setup.gateway.logs()
    row = setup.gateway.query("SELECT balance_micros, balance_updated_at FROM channels WHERE name = 'refused'")[0]
    assert row.balance_micros is None and row.balance_updated_at is None  # nothing stored from a refusal


def test_the_schedule_keeps_balances_current(setup: Setup) -> None:
    setup.upstream.knobs["openrouter"] = (10.0, 1.0)
    try:
        wait_until(lambda: setup.gateway.query("SELECT balance_micros FROM channels WHERE name = 'scheduled'")[0]
                   .balance_micros == 9_000_000, what="the scheduled fetch of the new balance")
    finally:
        del setup.upstream.knobs["openrouter"]
    assert setup.gateway.query("SELECT node FROM job_leases WHERE name = 'channel_balances'")  # one node fetches


def test_a_low_channel_balance_is_alerted(setup: Setup) -> None:
    assert setup.fetch("flow").status_code == 200  # 12.34 USD, under the 20 USD threshold
    low = wait_until(lambda: [a for a in setup.alerts("channel_balance_low") if a["details"]["channel"] == "flow"],
                     what="the low channel balance alert")
    assert low[0]["subject"] == "Channel flow's upstream balance is below 20 USD"
    assert float(low[0]["details"]["balance_usd"]) == pytest.approx(12.344444)
    assert not [a for a in setup.alerts("channel_balance_low") if a["details"]["channel"] == "relay"]  # 37.66 USD


def test_a_balance_noted_by_hand_is_not_marked_fetched(setup: Setup) -> None:
    relay = setup.channel("relay")
    assert setup.fetch("relay").status_code == 200
    noted = setup.admin("PATCH", f"/api/channels/{relay}", {"balance_micros": 5_000_000}).json()
    assert noted["balance_micros"] == 5_000_000 and noted["balance_updated_at"] is None


def test_the_protocol_is_inferred_from_the_providers_host() -> None:
    assert protocol_of("https://openrouter.ai/api/v1", {}) == "openrouter"
    assert protocol_of("https://api.deepseek.com", {}) == "deepseek"
    assert protocol_of("https://api.siliconflow.cn/v1", {}) == "siliconflow"
    assert protocol_of("https://api.openai.com", {}) is None  # OpenAI's own keys have no balance endpoint
    assert protocol_of("https://relay.example.com/v1", {"balance": "openai"}) == "openai"
    assert protocol_of("https://api.deepseek.com", {"balance": "off"}) is None
