"""Alerts in a cluster (issue 16): two gateways on one database (each backend) tell each alert once,
not once per node, and when the node telling them stops, the other takes over."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import openai_upstream, webhook_sink
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-alert-cluster-0123456789"
ADMIN_KEY = "admin-key-alert-cluster-0123456789"


@dataclass
class Pair:
    first: Gateway
    second: Gateway
    sink: FakeServer

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        bodies = [json.loads(r.body) for r in list(self.sink.requests) if r.path == "/generic"]
        return [b for b in bodies if b["kind"] == kind]

    def switch(self, gateway: Gateway, on: bool) -> None:
        channel = gateway.query("SELECT id FROM channels WHERE name = 'spare'")[0].id
        response = httpx.post(f"{gateway.url}/api/channels/{channel}/{'enable' if on else 'disable'}",
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
        assert response.status_code == 200, response.text

    def holder(self) -> str:
        return self.second.query("SELECT node FROM job_leases WHERE name = 'alerts'")[0].node


def lease_expiry(pair: Pair) -> int:
    return pair.second.query("SELECT expires_at FROM job_leases WHERE name = 'alerts'")[0].expires_at


@pytest.fixture(scope="module")
def pair(gateway_factory: Callable[..., Gateway]) -> Iterator[Pair]:
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    sink = FakeServer(webhook_sink.create_app()).start()
    config: dict[str, Any] = {
        "admin_key": ADMIN_KEY, "snapshot_refresh_s": 0.5,
        "channels": [{"name": "spare", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": ["spare-model"]}],
        "alerts": {"interval_s": 0.2, "task_backlog_count": None, "error_rate": None,
                   "webhooks": [{"url": f"{sink.url}/generic"}]},
    }
    first = gateway_factory(config)
    # The first node holds the lease before the second starts: the test knows who tells.
    wait_until(lambda: first.query("SELECT node FROM job_leases WHERE name = 'alerts'"), what="the first lease")
    second = gateway_factory({**config, "database_url": first.database_url})
    yield Pair(first, second, sink)
    for server in (sink, upstream):
        server.stop()


def test_two_nodes_tell_a_channel_change_once(pair: Pair) -> None:
    leader = pair.holder()
    pair.switch(pair.second, on=False)  # through the node that does not tell
    wait_until(lambda: pair.alerts("channel_disabled"), what="the disabled alert")
    pair.switch(pair.first, on=True)
    wait_until(lambda: pair.alerts("channel_enabled"), what="the enabled alert")
    # Both nodes' rounds ran many times over the change (0.2 s each): still one alert each, from one node.
    assert len(pair.alerts("channel_disabled")) == 1 and len(pair.alerts("channel_enabled")) == 1
    told = pair.first.query("SELECT kind, node FROM alert_log ORDER BY id")
    assert [(row.kind, row.node) for row in told] == [("channel_disabled", leader), ("channel_enabled", leader)]
    assert pair.holder() == leader


def test_when_the_telling_node_stops_the_other_takes_over(pair: Pair) -> None:
    leader = pair.holder()
    pair.first.stop()  # a graceful stop gives the lease up
    successor = wait_until(lambda: (node := pair.holder()) != leader and node, what="the second node's lease")
    # Its first round as holder only records the channels; once it renews (its next round), a change is told.
    taken = lease_expiry(pair)
    wait_until(lambda: lease_expiry(pair) > taken, what="a renewal by the successor")
    before = len(pair.alerts("channel_disabled"))
    pair.switch(pair.second, on=False)
    wait_until(lambda: len(pair.alerts("channel_disabled")) > before, what="the successor's alert")
    rows = pair.second.query("SELECT node FROM alert_log WHERE kind = 'channel_disabled' ORDER BY id")
    assert [row.node for row in rows] == [leader, successor]
    assert len(pair.alerts("channel_disabled")) == before + 1
