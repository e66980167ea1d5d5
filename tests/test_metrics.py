"""``/metrics`` and the JSON request log, as an operator's Prometheus and log shipper see them.

One gateway in prometheus-client's multiprocess mode (what ``--workers N`` runs: series kept in
files, the scrape reads every process's), JSON logs, and a fresh database, so its start-up runs
the migrations and must stay quiet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway
from tests.fakes import midjourney_proxy, openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-metrics-0123456789"
ALICE = "sk-alice-metrics-0123456789abcdef"
ADMIN = "admin-key-metrics-0123456789"
FENCED = "sk-fenced-metrics-0123456789abcdef"  # only from 10.0.0.0/8
LIMITED = "sk-limited-metrics-0123456789abcdef"  # one request a minute
HI = [{"role": "user", "content": "Hi"}]
# input 2 USD and output 8 USD per million tokens: the fake's 12 + 6 tokens cost 24 + 48 micro-USD.
COST = openai_upstream.PROMPT_TOKENS * 2 + openai_upstream.COMPLETION_TOKENS * 8


@dataclass
class Setup:
    gateway: Gateway
    request_ids: dict[str, list[str]]  # model -> ids of the requests made before the scrape
    series: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (sample, have), v in self.series.items() if sample == name and wanted <= have)


def scrape(gateway: Gateway, **headers: str) -> httpx.Response:
    return httpx.get(gateway.url + "/metrics", headers=headers, timeout=10)


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeServer, FakeServer, FakeServer]]:
    good = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    broken = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    broken.knobs["fail_with"] = 500
    mj = FakeServer(midjourney_proxy.create_app()).start()
    yield good, broken, mj
    for server in (good, broken, mj):
        server.stop()


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], database_factory: Callable[[], str],
          upstreams: tuple[FakeServer, FakeServer, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Setup:
    good, broken, mj = upstreams
    gateway = gateway_factory({
        "database_url": database_factory(),  # empty: this start migrates
        "log_format": "json",
        "admin_key": ADMIN,
        "trusted_proxies": ["127.0.0.1/32"],  # so a test can speak for a caller elsewhere
        "cooldown_after_failures": 100,
        "channels": [
            {"name": "good", "type": "openai", "base_url": good.url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-m", "gpt-f", "upstream-rejects"]},
            {"name": "down", "type": "openai", "base_url": broken.url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-f"], "priority": 10},
            {"name": "mj", "type": "midjourney", "base_url": mj.url, "keys": [midjourney_proxy.SECRET],
             "models": ["mj_*"]},
        ],
        "users": [{"name": "alice", "group": "gold", "unlimited": True}],
        "tokens": [{"name": "alice-laptop", "key": ALICE, "user": "alice"},
                   {"name": "fenced", "key": FENCED, "user": "alice", "allowed_ips": ["10.0.0.0/8"]},
                   {"name": "limited", "key": LIMITED, "user": "alice", "rpm_limit": 1}],
        "prices": {"default": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}, "mj_imagine": {"per_request": 0.1}},
    }, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("metrics"))})
    client = openai.OpenAI(api_key=ALICE, base_url=gateway.v1, max_retries=0, timeout=20)
    ids: dict[str, list[str]] = {"gpt-m": [], "gpt-f": [], "upstream-rejects": []}
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-m", messages=HI)
        raw.parse()
        ids["gpt-m"].append(raw.headers["x-request-id"])
    raw = client.chat.completions.with_raw_response.create(model="gpt-m", messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    ids["gpt-m"].append(raw.headers["x-request-id"])
    raw = client.chat.completions.with_raw_response.create(model="gpt-f", messages=HI)  # down, then good
    raw.parse()
    ids["gpt-f"].append(raw.headers["x-request-id"])
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="upstream-rejects", messages=HI)
    ids["upstream-rejects"].append(refused.value.response.headers["x-request-id"])
    for model_ids in ids.values():  # every request is settled (and so counted) once its row is written
        for request_id in model_ids:
            gateway.usage_row(request_id)
    response = scrape(gateway)
    assert response.status_code == 200, response.text
    return Setup(gateway, ids, parse(response.text))


def test_requests_tokens_and_spend_are_counted_by_model_channel_and_group(setup: Setup) -> None:
    ok = {"model": "gpt-m", "channel": "good", "status_class": "2xx"}
    assert setup.value("polyrelay_requests_total", family="openai", endpoint="chat.completions", **ok) == 3
    assert setup.value("polyrelay_errors_total", model="gpt-m") == 0
    money = {"model": "gpt-m", "channel": "good", "group": "gold"}
    assert setup.value("polyrelay_tokens_total", kind="prompt", **money) == 3 * openai_upstream.PROMPT_TOKENS
    assert setup.value("polyrelay_tokens_total", kind="completion", **money) == 3 * openai_upstream.COMPLETION_TOKENS
    assert setup.value("polyrelay_spend_micros_total", **money) == 3 * COST
    rows = [setup.gateway.usage_row(request_id) for request_id in setup.request_ids["gpt-m"]]
    assert sum(row.cost_micros for row in rows) == 3 * COST  # the same money the ledger books
    assert setup.value("polyrelay_request_duration_seconds_count", model="gpt-m", channel="good") == 3
    assert setup.value("polyrelay_time_to_first_byte_seconds_count", model="gpt-m", channel="good") == 3
    assert setup.value("polyrelay_request_duration_seconds_bucket", model="gpt-m", le="+Inf") == 3


def test_failovers_upstream_statuses_and_errors(setup: Setup) -> None:
    assert setup.value("polyrelay_failovers_total", channel="down") == 1
    assert setup.value("polyrelay_failovers_total", channel="good") == 0
    assert setup.value("polyrelay_upstream_responses_total", channel="down", code="500") == 1
    assert setup.value("polyrelay_upstream_responses_total", channel="good", code="200") == 4
    assert setup.value("polyrelay_upstream_responses_total", channel="good", code="400") == 1
    assert setup.value("polyrelay_requests_total", model="gpt-f", channel="good", status_class="2xx") == 1
    assert setup.value("polyrelay_errors_total", model="upstream-rejects", channel="good", status_class="4xx") == 1
    assert setup.value("polyrelay_spend_micros_total", model="upstream-rejects") == 0  # a refusal is free


def test_refusals_before_any_upstream_and_charged_task_submits_are_counted(setup: Setup) -> None:
    chat = {"model": "gpt-m", "messages": HI}

    def call(key: str) -> httpx.Response:
        return httpx.post(setup.gateway.v1 + "/chat/completions", json=chat, timeout=20,
                          headers={"Authorization": f"Bearer {key}"})

    assert call("sk-nobody-0123456789").status_code == 401
    assert call(FENCED).status_code == 403  # from 127.0.0.1, outside the key's fence
    assert call(LIMITED).status_code == 200
    assert call(LIMITED).status_code == 429
    submitted = httpx.post(setup.gateway.url + "/mj/submit/imagine", json={"prompt": "a counted fox"}, timeout=20,
                           headers={"Authorization": f"Bearer {ALICE}"})
    assert submitted.json()["code"] == 1, submitted.text
    (task,) = setup.gateway.query("SELECT family, model, cost_micros FROM usage_logs WHERE request_id LIKE 'task-%'")
    series = parse(scrape(setup.gateway).text)
    counted = Setup(setup.gateway, setup.request_ids, series).value
    assert counted("polyrelay_refusals_total", reason="invalid_api_key") == 1
    assert counted("polyrelay_refusals_total", reason="ip_not_allowed") == 1
    assert counted("polyrelay_refusals_total", reason="rate_limit_exceeded") == 1
    assert counted("polyrelay_requests_total", family=task.family, model=task.model, status_class="2xx") == 1
    assert counted("polyrelay_spend_micros_total", model=task.model, channel="mj") == task.cost_micros == 100_000


def test_channel_states_writer_and_tasks_are_read_at_scrape(setup: Setup) -> None:
    assert setup.value("polyrelay_channel_state", channel="good", state="enabled") == 1
    assert setup.value("polyrelay_channel_state", channel="good", state="disabled") == 0
    assert setup.value("polyrelay_writer_flush_seconds_count") >= 1
    assert setup.value("polyrelay_writer_flush_failures_total") == 0
    assert setup.value("polyrelay_callback_backlog") == 0
    assert ("polyrelay_reserved_micros", frozenset()) in setup.series


def test_metrics_need_the_admin_key_from_elsewhere(setup: Setup) -> None:
    elsewhere = {"X-Forwarded-For": "203.0.113.9"}  # a caller on the internet, through the trusted proxy
    refused = scrape(setup.gateway, **elsewhere)
    assert refused.status_code == 401
    assert "polyrelay_requests_total" not in refused.text
    assert scrape(setup.gateway, **elsewhere, Authorization="Bearer wrong").status_code == 401
    allowed = scrape(setup.gateway, **elsewhere, Authorization=f"Bearer {ADMIN}")
    assert allowed.status_code == 200
    assert "polyrelay_requests_total" in allowed.text


def test_json_log_has_one_line_per_request_and_no_keys(setup: Setup) -> None:
    logs = setup.gateway.logs()
    lines: list[dict[str, Any]] = []
    for line in logs.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    access = {line["request_id"]: line for line in lines if line["logger"] == "polyrelay.access"}
    (failed,) = setup.request_ids["upstream-rejects"]
    assert access[failed]["status"] == 400
    for request_id in setup.request_ids["gpt-m"]:
        line = access[request_id]
        assert (line["key_name"], line["model"], line["channel"], line["status"]) == ("alice-laptop", "gpt-m", "good", 200)
        assert line["cost_micros"] == COST and line["latency_ms"] > 0
    assert access[setup.request_ids["gpt-f"][0]]["attempts"] == 2
    assert ALICE not in logs and UPSTREAM_KEY not in logs and ADMIN not in logs
    # A quiet start: the migrations this start ran announced nothing at info level.
    assert "alembic" not in logs.lower(), logs
