"""Task claiming across nodes: two gateways on one PostgreSQL database polling one fake midjourney-proxy.

Each node holds at most ``claim_batch * claim_parallel`` leases and both take a fair share; a
poll that outlasts ``lease_s`` keeps its lease (renewed), so no task is polled twice at once;
a node killed with SIGKILL leaves tasks that the other finishes within the bound docs/tasks.md
gives, each settled once. The tests run in file order on one pair of gateways.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import create_engine, text

from polyrelay.store.db import normalize_url
from tests.conftest import Gateway, empty_postgres_database, start_gateway, wait_until
from tests.fakes import midjourney_proxy
from tests.fakes.server import KNOBS, FakeServer

KEY = "sk-pr-claiming-0123456789abcdef"
PRICE_MICROS = 100_000
POLL_INTERVAL_S = 0.2
LEASE_S = 1.0
CLAIM_BATCH = 20
CLAIM_PARALLEL = 2
POLLS = web.AppKey("poll_spans", dict)


@web.middleware
async def _timed_polls(request: web.Request, handler: Any) -> web.StreamResponse:
    """Hold each status poll ``knobs["list_delay_s"]`` and note, per upstream id, when polls of it ran."""
    if request.path != "/mj/task/list-by-condition":
        return await handler(request)
    ids = [str(i) for i in (await request.json()).get("ids") or []]
    started = time.monotonic()
    if delay := request.app[KNOBS].get("list_delay_s"):
        await asyncio.sleep(delay)
    response = await handler(request)
    ended = time.monotonic()
    for upstream_id in ids:
        request.app[POLLS].setdefault(upstream_id, []).append((started, ended))
    return response


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    app = midjourney_proxy.create_app()
    app[POLLS] = {}
    app.middlewares.append(_timed_polls)
    server = FakeServer(app).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with empty_postgres_database("polyrelay_claiming") as url:
        yield url


@pytest.fixture(scope="module")
def nodes(database: str, upstream: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    config = {
        "database_url": database,
        "tasks": {"poll_interval_s": POLL_INTERVAL_S, "lease_s": LEASE_S, "claim_batch": CLAIM_BATCH,
                  "claim_parallel": CLAIM_PARALLEL},
        "channels": [{"name": "mj", "type": "midjourney", "base_url": upstream.url,
                      "keys": [midjourney_proxy.SECRET], "models": ["mj_*"]}],
        "tokens": [{"name": "claiming", "key": KEY, "quota_usd": 10_000}],
        "prices": {"mj_imagine": {"per_request": PRICE_MICROS / 1e6}},
    }
    started: list[Gateway] = []
    try:
        for _ in range(2):  # one after the other: the first migrates the empty database
            started.append(start_gateway(config, tmp_path_factory.mktemp("node")))
        yield started
    finally:
        for gateway in started:
            gateway.stop()


class LeaseWatch:
    """Samples the tasks' lease owners from outside, every few ms, while a test runs."""

    def __init__(self, url: str, nodes: list[Gateway]) -> None:
        self._engine = create_engine(normalize_url(url))
        self._pids = {str(node.process.pid): index for index, node in enumerate(nodes)}
        self.claims: set[tuple[str, str]] = set()  # (claim, task id): each claim counted once
        self.most_held = [0] * len(nodes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def node_of(self, owner: str) -> int:
        return self._pids[owner.split("-", 1)[0]]

    def held(self) -> list[tuple[str, str]]:
        with self._engine.connect() as connection:
            return [tuple(row) for row in connection.execute(  # type: ignore[misc]
                text("SELECT id, lease_owner FROM tasks WHERE lease_owner IS NOT NULL"))]

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = [0] * len(self.most_held)
            for task_id, owner in self.held():
                self.claims.add((owner, task_id))
                counts[self.node_of(owner)] += 1
            self.most_held = [max(a, b) for a, b in zip(self.most_held, counts)]
            time.sleep(0.01)

    def __enter__(self) -> "LeaseWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(10)
        self._engine.dispose()

    def shares(self) -> list[int]:
        per_node = [0] * len(self.most_held)
        for owner, _ in self.claims:
            per_node[self.node_of(owner)] += 1
        return per_node


def _submit(nodes: list[Gateway], count: int, prompt: str) -> list[str]:
    """``count`` imagines, alternately through each node, 16 at a time; their task ids."""

    def one(index: int) -> str:
        response = httpx.post(nodes[index % len(nodes)].url + "/mj/submit/imagine", json={"prompt": f"{prompt} {index}"},
                              headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert response.status_code == 200 and response.json()["code"] == 1, response.text
        return response.json()["result"]

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def _statuses(node: Gateway, ids: list[str]) -> dict[str, int]:
    rows = node.query("SELECT status, COUNT(*) AS n FROM tasks WHERE id = ANY(:ids) GROUP BY status", ids=ids)
    return {row.status: row.n for row in rows}


def _all(node: Gateway, ids: list[str], status: str) -> bool:
    return _statuses(node, ids) == {status: len(ids)}


def _assert_settled_once(node: Gateway, ids: list[str]) -> None:
    kept = node.query("SELECT COUNT(*) AS n FROM tasks WHERE id = ANY(:ids) AND settlement = 'kept'", ids=ids)[0].n
    assert kept == len(ids)
    charges = node.query("SELECT request_id, kind, amount_micros FROM ledger WHERE request_id = ANY(:r)",
                         r=[f"task-{task_id}" for task_id in ids])
    assert sorted((r.request_id, r.kind, r.amount_micros) for r in charges) == sorted(
        (f"task-{task_id}", "charge", -PRICE_MICROS) for task_id in ids)
    logged = node.query("SELECT COUNT(*) AS n, SUM(cost_micros) AS micros FROM usage_logs WHERE request_id LIKE 'task-%'")[0]
    token = node.query("SELECT used_micros FROM tokens WHERE name = 'claiming'")[0]
    assert token.used_micros == logged.micros  # the token's spend is exactly its usage rows' sum


def test_two_nodes_share_the_due_tasks_and_neither_holds_more_than_its_cap(
    nodes: list[Gateway], upstream: FakeServer
) -> None:
    upstream.knobs.update(list_delay_s=0.3, steps=3)
    with LeaseWatch(nodes[0].database_url, nodes) as watch:
        ids = _submit(nodes, 240, "share")
        wait_until(lambda: _all(nodes[0], ids, "SUCCESS"), timeout=60, what="every task SUCCESS")
    shares = watch.shares()
    print(f"\nclaims per node {shares}; most leases held at once per node {watch.most_held}")
    assert max(watch.most_held) <= CLAIM_BATCH * CLAIM_PARALLEL, watch.most_held
    assert min(watch.most_held) > 0
    assert all(0.25 <= share / sum(shares) <= 0.75 for share in shares), shares
    _assert_settled_once(nodes[0], ids)


def test_a_poll_that_outlasts_the_lease_keeps_it(nodes: list[Gateway], upstream: FakeServer) -> None:
    spans = upstream.app[POLLS]
    upstream.knobs.update(list_delay_s=LEASE_S * 2.5, steps=2)
    try:
        ids = _submit(nodes, 10, "renewed")
        wait_until(lambda: _all(nodes[0], ids, "SUCCESS"), timeout=30, what="every task SUCCESS")
    finally:
        upstream.knobs.update(list_delay_s=0)
    upstream_ids = [row.upstream_id for row in nodes[0].query(
        "SELECT upstream_id FROM tasks WHERE id = ANY(:ids)", ids=ids)]
    for upstream_id in upstream_ids:
        polls = sorted(spans[upstream_id])
        assert len(polls) == 2, polls  # two steps, each polled exactly once
        assert all(end - start >= LEASE_S * 2 for start, end in polls)  # each outlived the lease it started with
        assert polls[0][1] <= polls[1][0], f"task {upstream_id} was polled twice at once: {polls}"
    _assert_settled_once(nodes[0], ids)


def test_tasks_of_a_killed_node_finish_on_the_other_within_the_bound(
    nodes: list[Gateway], upstream: FakeServer
) -> None:
    upstream.knobs.update(hold=True, list_delay_s=0.5, steps=3)
    try:
        ids = _submit(nodes, 60, "stranded")
        victim, survivor = nodes
        prefix = f"{victim.process.pid}-"
        wait_until(lambda: survivor.query("SELECT id FROM tasks WHERE lease_owner LIKE :p", p=prefix + "%"),
                   timeout=20, what="the victim holding leases")
        victim.process.kill()  # SIGKILL: no lease is handed back
        victim.process.wait()
        killed_at = time.monotonic()
        stranded = [row.id for row in survivor.query("SELECT id FROM tasks WHERE lease_owner LIKE :p", p=prefix + "%")]
        upstream.knobs.update(hold=False, list_delay_s=0)
        assert stranded
        # docs/tasks.md: the leases run out lease_s after the last renewal; the survivor claims them at its next
        # tick (at most 1.5 ticks); the fake then needs three polls, poll_interval_s apart.
        tick = POLL_INTERVAL_S / 2
        bound = LEASE_S + 1.5 * tick + 3 * (POLL_INTERVAL_S + 0.1) + 1.0
        wait_until(lambda: _all(survivor, stranded, "SUCCESS"), timeout=bound + 20, what="the stranded tasks SUCCESS")
        finished_after = time.monotonic() - killed_at
        print(f"\n{len(stranded)} tasks stranded by SIGKILL finished {finished_after:.2f} s later (bound {bound:.2f} s)")
        assert finished_after <= bound
        wait_until(lambda: _all(survivor, ids, "SUCCESS"), timeout=20, what="every task SUCCESS")
        _assert_settled_once(survivor, ids)
    finally:
        upstream.knobs.update(hold=False, list_delay_s=0)
