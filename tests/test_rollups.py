"""Daily rollups, raw-row retention and the streamed CSV export: the logs that stay fast at any size."""

from __future__ import annotations

import csv
import io
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import insert, select

from polyrelay.store import models, rollups
from polyrelay.store.db import SCHEMA_HEAD, alembic_config, create_db_engine
from tests.conftest import Gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-rollups-0123456789"
ADMIN_KEY = "admin-key-rollups-0123456789"
KEYS = {"alice": "sk-rollups-alice-0123456789", "bob": "sk-rollups-bob-0123456789"}
LOG = models.UsageLog.__table__
EXPORTED_ROWS = 6_000  # more than one page of the export
EXPORT_USER = 9_999  # rows inserted directly, for a user id no other test uses


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    server.stop()


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeServer
    admin: httpx.Client
    users: dict[str, int]

    def chat(self, user: str, model: str, stream: bool = False) -> httpx.Response:
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return httpx.post(self.gateway.v1 + "/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEYS[user]}"}, timeout=20)

    def raw_rows(self, user: str) -> int:
        return self.gateway.query("SELECT COUNT(*) FROM usage_logs WHERE user_id = :u", u=self.users[user])[0][0]


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Iterator[Setup]:
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "channels": [{"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
                      "models": ["per-call", "by-token"]}],
        "prices": {"per-call": {"per_request": 0.01}, "by-token": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "users": [{"name": name, "balance_usd": 100} for name in KEYS],
        "tokens": [{"name": f"{name}-key", "key": key, "user": name} for name, key in KEYS.items()],
        "usage_logs": {"retention_days": 30, "retention_interval_s": 0.2},
    })
    users = {name: id_ for id_, name in gateway.query("SELECT id, name FROM users")}
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        yield Setup(gateway, upstream, admin, users)


def raw_by_model(gateway: Gateway, user_id: int) -> dict[str, tuple[Any, ...]]:
    rows = gateway.query(
        "SELECT model, SUM(CASE WHEN status_code > 0 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens), SUM(completion_tokens), "
        "SUM(cost_micros) FROM usage_logs WHERE user_id = :u GROUP BY model", u=user_id)
    return {row[0]: tuple(int(v) for v in row[1:]) for row in rows}


def test_requests_land_in_the_rollups_with_the_totals_of_the_raw_rows(setup: Setup) -> None:
    for _ in range(3):
        assert setup.chat("alice", "per-call").status_code == 200
    for _ in range(2):
        assert setup.chat("alice", "by-token", stream=True).status_code == 200
    setup.upstream.knobs["fail_with"] = 400
    try:
        assert setup.chat("alice", "per-call").status_code == 400
    finally:
        setup.upstream.knobs.pop("fail_with")
    wait_until(lambda: setup.raw_rows("alice") == 6, what="alice's six usage rows")

    alice = setup.users["alice"]
    rolled = setup.gateway.query(
        "SELECT model, SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros), "
        f"SUM({' + '.join(f'latency_le_{b}' for b in models.LATENCY_BUCKETS_MS)}) "
        "FROM usage_daily WHERE user_id = :u GROUP BY model", u=alice)
    by_model = {row[0]: tuple(int(v) for v in row[1:6]) for row in rolled}
    assert by_model == raw_by_model(setup.gateway, alice)
    assert by_model["per-call"][:2] == (4, 1) and by_model["per-call"][4] == 30_000  # the refused call is free
    assert by_model["by-token"][2] > 0 and by_model["by-token"][3] > 0
    assert {int(row[6]) for row in rolled} == {4, 2}  # every fast request is in a latency bucket

    # Per channel too: one channel served all of them (this is the module's first traffic).
    channel = setup.gateway.query("SELECT SUM(requests), SUM(errors), SUM(cost_micros), SUM(latency_ms_sum) "
                                  "FROM channel_daily")[0]
    raw = setup.gateway.query("SELECT COUNT(*), SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), "
                              "SUM(cost_micros), SUM(latency_ms) FROM usage_logs")[0]
    assert (int(channel[0]), int(channel[1]), int(channel[2])) == (int(raw[0]), int(raw[1]), int(raw[2]))
    assert float(channel[3]) == pytest.approx(float(raw[3]))


def test_the_stats_answer_in_the_dashboards_shape_from_the_rollups(setup: Setup) -> None:
    for _ in range(3):
        assert setup.chat("bob", "per-call").status_code == 200
    wait_until(lambda: setup.raw_rows("bob") == 3, what="bob's usage rows")
    stats = setup.admin.get("/api/stats", params={"days": 7, "user_id": setup.users["bob"]}).json()

    today = datetime.now(timezone.utc).date()
    assert stats["days"] == [(today - timedelta(days=n)).isoformat() for n in range(6, -1, -1)]
    assert [s["model"] for s in stats["series"]] == ["per-call"]
    assert stats["series"][0] == {"model": "per-call", "requests": [0] * 6 + [3], "errors": [0] * 7,
                                  "cost_micros": [0] * 6 + [30_000]}
    totals = stats["totals"]
    assert {k: totals[k] for k in ("requests", "errors", "cost_micros", "error_rate")} == {
        "requests": 3, "errors": 0, "cost_micros": 30_000, "error_rate": 0.0}
    assert totals["prompt_tokens"] > 0 and totals["completion_tokens"] > 0
    latencies = sorted(r[0] for r in setup.gateway.query("SELECT latency_ms FROM usage_logs WHERE user_id = :u",
                                                         u=setup.users["bob"]))
    bucket = bisect_left(models.LATENCY_BUCKETS_MS, latencies[len(latencies) // 2])
    bounds = (0, *models.LATENCY_BUCKETS_MS)
    assert bounds[bucket] <= totals["p50_latency_ms"] <= bounds[bucket + 1]  # estimated within the true median's bucket

    everyone = setup.admin.get("/api/stats", params={"days": 7}).json()["totals"]
    assert everyone["requests"] == 3 + 6 and everyone["errors"] == 1


def test_channel_stats_read_the_channel_rollup_per_day(setup: Setup) -> None:
    """After the two tests above: alice's 6 (1 refused by the upstream) and bob's 3, all through "main"."""
    today = datetime.now(timezone.utc).date().isoformat()
    answer = setup.admin.get("/api/stats/channels").json()
    (main,) = [row for row in answer["data"] if row["channel"] == "main"]
    raw = setup.gateway.query("SELECT SUM(cost_micros), SUM(prompt_tokens) FROM usage_logs")[0]
    assert (main["day"], main["requests"], main["errors"]) == (today, 9, 1)
    assert (main["cost_micros"], main["prompt_tokens"]) == (int(raw[0]), int(raw[1]))
    assert main["error_rate"] == pytest.approx(1 / 9) and main["p50_latency_ms"] > 0
    assert answer["end"] == today
    past = setup.admin.get("/api/stats/channels", params={"start": "2020-01-01", "end": "2020-01-31"}).json()
    assert past == {"start": "2020-01-01", "end": "2020-01-31", "data": []}
    for params in ({"start": "yesterday"}, {"start": "2026-02-30"}, {"start": "2020-01-02", "end": "2020-01-01"},
                   {"start": "2020-01-01", "end": "2021-12-31"}):
        refused = setup.admin.get("/api/stats/channels", params=params)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_query", params


def test_retention_deletes_old_raw_rows_and_keeps_their_rollups(setup: Setup) -> None:
    bob = setup.users["bob"]
    now = datetime.now(timezone.utc)
    old, kept = now - timedelta(days=40), now - timedelta(days=10)
    with setup.gateway.db.begin() as connection:
        connection.execute(insert(LOG), [
            {"request_id": f"old-{n}", "created_at": old, "family": "openai", "endpoint": "chat", "model": "archived",
             "status_code": 200, "cost_micros": 100, "user_id": bob} for n in range(7)
        ] + [{"request_id": "recent", "created_at": kept, "family": "openai", "endpoint": "chat",
              "model": "archived", "status_code": 200, "cost_micros": 100, "user_id": bob}])
        connection.execute(insert(models.UsageDaily.__table__),  # what the writer summed when they were written
                           [{"day": old.date(), "user_id": bob, "model": "archived", "requests": 7, "cost_micros": 700}])

    wait_until(lambda: not setup.gateway.query("SELECT id FROM usage_logs WHERE request_id LIKE 'old-%'"),
               what="the sweep of rows past the retention")
    assert setup.gateway.query("SELECT request_id FROM usage_logs WHERE request_id = 'recent'")
    stats = setup.admin.get("/api/stats", params={"days": 60, "user_id": bob}).json()
    archived = next(s for s in stats["series"] if s["model"] == "archived")
    at = stats["days"].index(old.date().isoformat())
    assert archived["requests"][at] == 7 and archived["cost_micros"][at] == 700
    aggregate = setup.admin.get("/api/logs/aggregate", params={"user_id": bob, "model": "archived"}).json()["data"]
    assert {"day": old.date().isoformat(), "model": "archived", "user_id": bob, "requests": 7, "errors": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "cost_micros": 700} in aggregate


def test_the_csv_export_streams_every_row_under_its_header(setup: Setup) -> None:
    now = datetime.now(timezone.utc)
    with setup.gateway.db.begin() as connection:
        connection.execute(insert(LOG), [
            {"request_id": f"export-{n}", "created_at": now, "family": "openai", "endpoint": "chat",
             "model": "exported", "status_code": 200, "user_id": EXPORT_USER, "error": "a, \"quoted\"\nline"}
            for n in range(EXPORTED_ROWS)])
    with setup.admin.stream("GET", "/api/logs/export.csv", params={"user_id": EXPORT_USER}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert "content-length" not in response.headers  # sent as it is read, not built first
        text = "".join(response.iter_text())
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [c.name for c in LOG.columns]
    body = [dict(zip(rows[0], row)) for row in rows[1:]]
    assert len(body) == EXPORTED_ROWS
    assert sorted(r["request_id"] for r in body) == sorted(f"export-{n}" for n in range(EXPORTED_ROWS))
    assert [int(r["id"]) for r in body] == sorted(int(r["id"]) for r in body)
    assert body[0]["error"] == "a, \"quoted\"\nline"


def test_the_migration_backfills_the_rollups_from_the_rows_already_there(database_factory: Callable[[], str]) -> None:
    engine = create_db_engine(database_factory())
    config = alembic_config(engine)
    before = ScriptDirectory.from_config(config).get_revision(SCHEMA_HEAD)
    while before.revision != "0013":  # the schema just before the rollups
        before = ScriptDirectory.from_config(config).get_revision(before.down_revision)
    command.upgrade(config, before.down_revision)
    day = datetime(2026, 3, 1, 23, 59, tzinfo=timezone.utc)
    rows = [{"request_id": f"r{n}", "created_at": day + timedelta(minutes=n), "family": "openai", "endpoint": "chat",
             "model": ("a", "b")[n % 2], "status_code": (200, 429, 0)[n % 3], "prompt_tokens": n,
             "completion_tokens": 2 * n, "cost_micros": 10 * n, "latency_ms": 40.0 * n,
             "user_id": (None, 7)[n % 2], "channel_id": (None, 3)[n % 2]} for n in range(12)]
    with engine.begin() as connection:
        connection.execute(insert(LOG), rows)
    command.upgrade(config, "head")

    keys = {models.UsageDaily: lambda row: (row["created_at"].date(), row["user_id"] or 0, row["model"]),
            models.ModelDaily: lambda row: (row["created_at"].date(), row["model"]),
            models.ChannelDaily: lambda row: (row["created_at"].date(), row["channel_id"] or 0)}
    with engine.connect() as connection:
        for table, key_of in keys.items():
            expected: rollups.Sums = {}
            for row in rows:
                rollups.add(expected, key_of(row), row["status_code"], row["prompt_tokens"], row["completion_tokens"],
                            row["cost_micros"], row["latency_ms"])
            columns = table.__table__.c
            keys_width = len(table.__table__.primary_key.columns)
            got = {tuple(r[:keys_width]): list(r[keys_width:]) for r in connection.execute(
                select(*table.__table__.primary_key.columns, *(columns[name] for name in models.DAILY_MEASURES)))}
            assert got.keys() == expected.keys(), table.__tablename__
            for key, values in expected.items():
                assert got[key] == pytest.approx(values), (table.__tablename__, key)
    engine.dispose()
    assert len(expected) == 3  # two days x (a channel, none)
