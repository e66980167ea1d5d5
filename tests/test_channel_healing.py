"""Self-healing channels: an auto-disabled channel is probed back once its upstream recovers, one an
administrator disabled never is, and the trail says who did what (events API, /api/health)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

KEY = "sk-upstream-healing-0123456789"
CALLER = "sk-caller-healing-0123456789"
ADMIN_KEY = "admin-key-healing-0123456789"


@dataclass
class Setup:
    gateway: Gateway
    healing: FakeServer  # recovers during the test
    manual: FakeServer  # its channel is disabled by hand after health disabled it
    broken: FakeServer  # never recovers: its probes show that probe rounds keep running
    cooling: FakeServer  # fails twice (a cooldown, not a disable), then recovers

    def chat(self, model: str) -> httpx.Response:
        return httpx.post(f"{self.gateway.v1}/chat/completions", headers={"Authorization": f"Bearer {CALLER}"},
                          json={"model": model, "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)

    def admin(self, method: str, path: str) -> Any:
        response = httpx.request(method, self.gateway.url + path, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                 timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def channel(self, name: str) -> Any:
        return self.gateway.query("SELECT * FROM channels WHERE name = :name", name=name)[0]

    def events(self, name: str) -> list[dict[str, Any]]:
        return list(reversed(self.admin("GET", f"/api/channels/{self.channel(name).id}/events")["data"]))

    def disable_by_failures(self, name: str) -> None:
        for _ in range(3):  # disable_after_failures
            assert self.chat(name).status_code >= 500
        wait_until(lambda: not self.channel(name).enabled, what=f"{name} to be disabled automatically")


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    servers = [FakeServer(openai_upstream.create_app({KEY})).start() for _ in range(4)]
    for server in servers:
        server.knobs["fail_with"] = 500
    healing, manual, broken, cooling = servers
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "disable_after_failures": 3,
        "cooldown_after_failures": 2,
        "snapshot_refresh_s": 0.2,  # an auto-disable reaches the snapshot through the feed's poll
        "probes": {"interval_s": 0.2, "successes_to_enable": 3, "timeout_s": 5},
        "channels": [{"name": name, "type": "openai", "base_url": server.url, "keys": [KEY], "models": [name]}
                     for name, server in (("healing", healing), ("manual", manual), ("broken", broken),
                                          ("cooling", cooling))],
        "tokens": [{"name": "caller", "key": CALLER}],
        "prices": {"default": {"per_request": 0.001}},
    })
    setup = Setup(gateway, healing, manual, broken, cooling)
    setup.disable_by_failures("broken")
    yield setup
    for server in servers:
        server.stop()


def test_an_auto_disabled_channel_comes_back_when_its_upstream_recovers(setup: Setup) -> None:
    setup.disable_by_failures("healing")
    assert setup.channel("healing").disabled_reason.startswith("auto-disabled after 3 consecutive failures")
    # Out of rotation once the snapshot has the change: no channel serves the model.
    wait_until(lambda: setup.chat("healing").status_code == 404, what="the channel to leave rotation")
    wait_until(lambda: any(e["kind"] == "probe_failed" for e in setup.events("healing")), what="a failed probe")

    setup.healing.knobs.pop("fail_with")
    wait_until(lambda: setup.channel("healing").enabled, what="the probes to enable the channel again")
    reply = wait_until(lambda: (r := setup.chat("healing")).status_code == 200 and r, what="the channel to serve")
    assert reply.json()["choices"][0]["message"]["content"]
    channel = setup.channel("healing")
    assert (channel.disabled_reason, channel.failure_count) == ("", 0)
    # Probes (one-token chats) reached the upstream but were never charged: the one successful usage
    # row of the channel is the caller's request above.
    setup.gateway.usage_row(reply.headers["x-request-id"])
    assert sum(b'"max_tokens":1' in r.body for r in setup.healing.requests) >= 3
    assert setup.gateway.query("SELECT COUNT(*) FROM usage_logs WHERE channel_name = 'healing' "
                               "AND status_code = 200")[0][0] == 1

    trail = [(e["kind"], e["actor"]) for e in setup.events("healing")]
    assert trail[0] == ("cooled", "auto") and ("disabled", "auto") in trail
    assert trail[-2:] == [("probe_succeeded", "probe"), ("enabled", "probe")]
    assert ("probe_failed", "probe") in trail
    enabled = setup.events("healing")[-1]
    assert enabled["reason"] == "3 probes in a row succeeded"


def test_a_channel_disabled_by_hand_is_never_probed_back(setup: Setup) -> None:
    setup.disable_by_failures("manual")
    channel_id = setup.channel("manual").id
    setup.admin("POST", f"/api/channels/{channel_id}/disable")
    assert setup.channel("manual").disabled_reason == "disabled by admin:admin"
    setup.manual.knobs.pop("fail_with")
    seen = len(setup.manual.requests)
    probes = len(setup.broken.requests)
    wait_until(lambda: len(setup.broken.requests) >= probes + 4, what="several probe rounds")
    assert not setup.channel("manual").enabled
    assert len(setup.manual.requests) == seen  # not one probe reached it
    assert [(e["kind"], e["actor"]) for e in setup.events("manual")][-1] == ("disabled", "admin:admin")

    setup.admin("POST", f"/api/channels/{channel_id}/enable")
    assert setup.events("manual")[-1]["kind"] == "enabled"
    assert setup.chat("manual").status_code == 200


def test_a_failure_that_persists_is_noted_once_not_every_probe(setup: Setup) -> None:
    probes = len(setup.broken.requests)
    wait_until(lambda: len(setup.broken.requests) >= probes + 3, what="more probe rounds")
    kinds = [e["kind"] for e in setup.events("broken")]
    # Cooling, then disabled; probed all along (a cooling channel is probed too), failing every time.
    assert kinds[0] == "cooled" and kinds.count("disabled") == 1 and kinds.count("probe_failed") == 1, kinds


def test_health_summary_shows_states_last_probe_and_trail(setup: Setup) -> None:
    health = setup.admin("GET", "/api/health")
    by_name = {c["name"]: c for c in health["channels"]}
    assert by_name["broken"]["state"] == "disabled" and by_name["broken"]["probed"]
    assert by_name["broken"]["last_probe"]["ok"] is False
    assert "HTTP 500" in by_name["broken"]["last_probe"]["result"]
    assert by_name["broken"]["last_event"]["kind"] in ("probe_failed", "disabled")  # as probes raced the calls
    assert health["counts"]["disabled"] >= 1
    assert health["probes"]["successes_to_enable"] == 3
    assert {e["channel_id"] for e in health["events"]} >= {by_name["broken"]["id"]}
    response = httpx.get(setup.gateway.url + "/api/health", timeout=10)
    assert response.status_code == 401


def test_a_cooling_channel_leaves_its_cooldown_early_once_probes_succeed(setup: Setup) -> None:
    for _ in range(2):  # cooldown_after_failures; cooldown_s is 30 s
        assert setup.chat("cooling").status_code >= 500
    wait_until(lambda: any(e["kind"] == "cooled" for e in setup.events("cooling")), what="the cooldown")
    setup.cooling.knobs.pop("fail_with")
    wait_until(lambda: setup.events("cooling")[-1]["kind"] == "recovered", what="the cooldown to end early")
    channel = setup.channel("cooling")
    assert channel.enabled
    state = wait_until(lambda: next(c for c in setup.admin("GET", "/api/health")["channels"]
                                    if c["name"] == "cooling")["state"] == "enabled", what="the state to be enabled")
    assert state
    assert setup.chat("cooling").status_code == 200
