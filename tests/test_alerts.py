"""Alerts (issue 16): each trigger, driven by real behaviour through one gateway, reaches a generic,
a Slack, a Feishu and a DingTalk webhook (``tests/fakes/webhook_sink.py``, which checks the vendors'
signatures and refuses like they do) and a real SMTP server on loopback (``aiosmtpd``), once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from polyrelay.alerts.messages import Alert
from polyrelay.alerts.watch import Tracker
from tests.conftest import Gateway, wait_until
from tests.fakes import midjourney_proxy, openai_upstream, webhook_sink
from tests.fakes.mailbox import Mailbox, smtp_server
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-alerts-0123456789"
ADMIN_KEY = "admin-key-alerts-0123456789"
SPENDER_KEY = "sk-spender-alerts-0123456789"  # a user with 0.05 USD; the threshold is 0.04, a call costs 0.02
PAYER_KEY = "sk-payer-alerts-0123456789"  # an unlimited user: never low
HOOKS = ("generic", "slack", "feishu", "dingtalk")


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeServer
    mj: FakeServer
    sink: FakeServer
    mailbox: Mailbox

    def bodies(self, hook: str) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in list(self.sink.requests) if r.path == f"/{hook}"]

    def texts(self, hook: str) -> list[str]:
        """What a person reads in each message of one destination."""
        if hook == "email":
            return [f"{m['Subject']}\n{m.get_content()}" for m in list(self.mailbox.messages)]
        pick = {"generic": lambda b: f"{b['subject']}\n{json.dumps(b)}", "slack": lambda b: b["text"],
                "feishu": lambda b: b["content"]["text"], "dingtalk": lambda b: b["text"]["content"]}[hook]
        return [pick(body) for body in self.bodies(hook)]

    def alert(self, kind: str, match: Callable[[dict[str, Any]], bool] = lambda body: True) -> dict[str, Any]:
        """Wait for the generic webhook's alert of ``kind``, then for its subject at every other destination."""
        body = wait_until(lambda: next((b for b in self.bodies("generic") if b["kind"] == kind and match(b)), None),
                          what=f"a {kind} alert")
        for hook in (*HOOKS[1:], "email"):
            wait_until(lambda: any(body["subject"] in t for t in self.texts(hook)), what=f"{kind} at {hook}")
        return body

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.request(method, self.gateway.url + path, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                             json=body, timeout=20)

    def chat(self, key: str, model: str = "gpt-4o-mini") -> httpx.Response:
        return httpx.post(self.gateway.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": model, "messages": [{"role": "user", "content": "Hi"}]}, timeout=20)


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[Setup]:
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    mj = FakeServer(midjourney_proxy.create_app()).start()
    sink = FakeServer(webhook_sink.create_app()).start()
    mailbox = Mailbox()
    smtp = smtp_server(mailbox)
    secret = webhook_sink.SECRET
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "tasks": {"poll_interval_s": 0.1, "lease_s": 5},
        "channels": [{"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY]},
                     {"name": "spare", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": ["spare-model"]},
                     {"name": "mj", "type": "midjourney", "base_url": mj.url, "keys": [midjourney_proxy.SECRET],
                      "models": ["mj_*"]}],
        "users": [{"name": "spender", "balance_usd": 0.05}, {"name": "payer", "unlimited": True}],
        "tokens": [{"name": "spender-key", "key": SPENDER_KEY, "user": "spender"},
                   {"name": "payer-key", "key": PAYER_KEY, "user": "payer"}],
        "prices": {"default": {"per_request": 0.02}, "mj_imagine": {"per_request": 0.1}},
        "alerts": {
            "interval_s": 0.2, "error_rate": 0.5, "error_window_s": 3, "error_min_requests": 3,
            "balance_below_usd": 0.04, "task_backlog_after_s": 0.5, "task_backlog_count": 0,
            "webhooks": [{"url": f"{sink.url}/generic"}, {"url": f"{sink.url}/slack", "format": "slack"},
                         {"url": f"{sink.url}/feishu", "format": "feishu", "secret": secret},
                         {"url": f"{sink.url}/dingtalk?access_token=robot", "format": "dingtalk", "secret": secret}],
            "email": {"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from": "polyrelay@example.test",
                      "to": ["ops@example.test"]},
        },
    })
    yield Setup(gateway, upstream, mj, sink, mailbox)
    gateway.stop()
    smtp.stop()
    for server in (sink, mj, upstream):
        server.stop()


def sent(setup: Setup, subject: str) -> dict[str, int]:
    """How many messages with ``subject`` each destination received."""
    return {hook: sum(subject in t for t in setup.texts(hook)) for hook in (*HOOKS, "email")}


def channel_id(setup: Setup, name: str) -> int:
    return setup.gateway.query("SELECT id FROM channels WHERE name = :n", n=name)[0].id


def test_a_channel_disabled_by_the_admin_and_enabled_again_is_announced(setup: Setup) -> None:
    spare = channel_id(setup, "spare")
    assert setup.admin("POST", f"/api/channels/{spare}/disable").status_code == 200
    disabled = setup.alert("channel_disabled", lambda b: b["details"]["channel"] == "spare")
    assert disabled["severity"] == "warning" and disabled["subject"] == "Channel spare was disabled"
    assert setup.admin("POST", f"/api/channels/{spare}/enable").status_code == 200
    enabled = setup.alert("channel_enabled", lambda b: b["details"]["channel"] == "spare")
    assert enabled["subject"] == "Channel spare is back in rotation"
    assert setup.mailbox.messages[-1]["To"] == "ops@example.test"
    everything = b"".join(r.body for r in setup.sink.requests) + b"".join(m.as_bytes() for m in setup.mailbox.messages)
    assert UPSTREAM_KEY.encode() not in everything  # channel names only, never a key


def test_a_user_whose_balance_runs_low_is_announced_to_the_operator_and_to_them(setup: Setup) -> None:
    spender = setup.gateway.query("SELECT id FROM users WHERE name = 'spender'")[0].id
    verified = {"email": "spender@example.test", "email_verified": True}
    assert setup.admin("PATCH", f"/api/users/{spender}", verified).status_code == 200
    # A user with an address nobody proved is theirs: the operator hears of them, the address gets nothing.
    assert setup.admin("POST", "/api/users", {"name": "unproven", "email": "unproven@example.test"}).status_code == 201
    assert setup.chat(SPENDER_KEY).status_code == 200  # 0.05 - 0.02 = 0.03 USD, under 0.04
    low = setup.alert("balance_low", lambda b: b["details"]["user"] == "spender")
    assert low["subject"] == "User spender's balance is below 0.04 USD"
    assert float(low["details"]["balance_usd"]) == pytest.approx(0.03)
    setup.alert("balance_low", lambda b: b["details"]["user"] == "unproven")
    mine = wait_until(lambda: [m for m in setup.mailbox.messages if m["To"] == "spender@example.test"],
                      what="the spender's own mail")
    assert mine[0]["Subject"] == "[polyrelay] Your polyrelay balance is below 0.04 USD"
    assert "balance_usd: 0.030000" in mine[0].get_content() and "ops@" not in mine[0]["To"]

    def logged() -> dict[str, dict[str, Any]] | None:
        lows = {a["details"]["user"]: a for a in setup.admin("GET", "/api/alerts").json()["data"]
                if a["kind"] == "balance_low"}
        return lows if {"spender", "unproven"} <= lows.keys() else None

    listed = wait_until(logged, what="both low balances in the alert log")
    assert listed["spender"]["user_id"] == spender and listed["spender"]["user_emailed"] is True
    assert listed["unproven"]["user_emailed"] is False
    assert all(m["To"] != "unproven@example.test" for m in setup.mailbox.messages)


def test_the_alert_log_pages_newest_first_for_administrators_only(setup: Setup) -> None:
    wait_until(lambda: setup.admin("GET", "/api/alerts").json()["total"] >= 2, what="two alerts logged")
    everything = setup.admin("GET", "/api/alerts?limit=1000").json()
    first, second = (setup.admin("GET", f"/api/alerts?limit=1&offset={n}").json()["data"][0] for n in (0, 1))
    assert [first["id"], second["id"]] == [a["id"] for a in everything["data"][:2]]
    assert first["created_at"] >= second["created_at"] and everything["total"] >= len(everything["data"])
    assert setup.admin("GET", "/api/alerts?limit=0").json()["error"]["code"] == "invalid_query"
    as_user = httpx.get(setup.gateway.url + "/api/alerts", headers={"Authorization": f"Bearer {SPENDER_KEY}"})
    assert as_user.status_code in (401, 403) and "error" in as_user.json()


def test_an_error_rate_over_the_threshold_is_announced_and_cleared(setup: Setup) -> None:
    setup.upstream.knobs["fail_with"] = 500
    try:
        for _ in range(4):
            assert setup.chat(PAYER_KEY).status_code >= 500
    finally:
        del setup.upstream.knobs["fail_with"]
    high = setup.alert("error_rate")
    details = high["details"]
    assert high["severity"] == "critical" and details["requests"] >= 3 and details["errors"] / details["requests"] > 0.5
    setup.alert("error_rate_resolved")  # the failures leave the 3 s window


def test_a_task_backlog_is_announced_and_cleared(setup: Setup) -> None:
    setup.mj.knobs["hold"] = True
    response = httpx.post(setup.gateway.url + "/mj/submit/imagine", json={"prompt": "a slow fox"},
                          headers={"Authorization": f"Bearer {PAYER_KEY}"}, timeout=20)
    assert response.json()["code"] == 1, response.text
    late = setup.alert("task_backlog")
    assert late["details"]["late_tasks"] == 1
    setup.mj.knobs["hold"] = False
    setup.alert("task_backlog_resolved")


def test_a_usage_write_the_database_refuses_is_announced(setup: Setup, backend: str) -> None:
    refuse = {
        "sqlite": ["CREATE TRIGGER refuse_model BEFORE INSERT ON usage_logs WHEN NEW.model = 'refused-model' "
                   "BEGIN SELECT RAISE(ABORT, 'model refused'); END"],
        "postgresql": ["CREATE FUNCTION refuse_model() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       "IF NEW.model = 'refused-model' THEN RAISE EXCEPTION 'model refused'; END IF; RETURN NEW; END $$",
                       "CREATE TRIGGER refuse_model BEFORE INSERT ON usage_logs FOR EACH ROW "
                       "EXECUTE FUNCTION refuse_model()"],
    }[backend]
    with setup.gateway.db.begin() as connection:
        for statement in refuse:
            connection.execute(text(statement))
    assert setup.chat(PAYER_KEY, "refused-model").status_code == 200
    kept = setup.alert("writer_dead_letters")
    assert kept["severity"] == "critical" and kept["details"]["kept_aside"] == 1


def test_a_receiver_that_is_down_gets_the_alert_once_it_is_back(setup: Setup) -> None:
    before = len(setup.bodies("generic"))
    setup.sink.knobs["fail_with"] = 503
    try:
        assert setup.admin("POST", f"/api/channels/{channel_id(setup, 'spare')}/disable").status_code == 200
        # The same alert refused twice: the first POST and the retry of the next round.
        wait_until(lambda: len(setup.bodies("generic")) >= before + 2, what="refused deliveries")
    finally:
        del setup.sink.knobs["fail_with"]
    refused = setup.bodies("generic")[before:before + 2]
    assert [b["subject"] for b in refused] == ["Channel spare was disabled"] * 2 and refused[0] == refused[1]
    assert "alert to generic webhook failed, retrying every interval: HTTP 503" in setup.gateway.logs()
    for hook in HOOKS:  # each destination's queue is drained once the receiver answers again
        wait_until(lambda: f"alerts to {hook} webhook are delivered again" in setup.gateway.logs(), what=hook)
    delivered = [b for b in setup.bodies("generic") if b == refused[0]]
    assert len(delivered) >= 3  # refused, refused, ..., accepted: the same alert, not a new one


def test_each_alert_went_once_to_every_destination(setup: Setup) -> None:
    """The low balance lasted through every test, evaluated every 0.2 s: it was still told once (the
    re-notify interval is an hour); the Feishu and DingTalk signatures were accepted the first time."""
    setup.alert("channel_disabled", lambda b: b["details"]["channel"] == "spare")
    for subject in ("User spender's balance is below 0.04 USD", "Channel spare is back in rotation",
                    "usage writes refused by the database"):
        assert sent(setup, subject) == {hook: 1 for hook in (*HOOKS, "email")}, subject


def test_a_lasting_condition_is_told_when_it_starts_every_repeat_and_when_it_ends() -> None:
    """The tracker alone (no gateway, no clock): an hour's re-notify interval over rounds at 0, 30 min,
    61 min, 90 min; a round whose check could not run changes nothing; then the condition ends."""
    at = datetime.now(timezone.utc)
    low = Alert("balance_low", "warning", "User a's balance is below 1 USD", {"user": "a"}, at)
    tracker = Tracker(repeat_s=3600)
    told = [tracker.update("balance", states, at, now) for states, now in
            [({"u": low}, 0), ({"u": low}, 1800), ({"u": low}, 3660), (None, 5400), ({"u": low}, 5400), ({}, 5500)]]
    assert [[a.subject for a in alerts] for alerts in told] == [
        ["User a's balance is below 1 USD"], [], ["Still: User a's balance is below 1 USD"], [], [],
        ["Resolved: User a's balance is below 1 USD"]]
    assert told[-1][0].kind == "balance_low_resolved" and told[-1][0].severity == "info"
