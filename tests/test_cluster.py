"""Three ``polyrelay serve`` nodes on one PostgreSQL database, a Redis and a SeaweedFS S3 store,
behind HAProxy (round-robin): what issue 15 promises of N nodes, asserted at N=3.

One cluster for the module (its start is the cold-start test), on PostgreSQL only: this is about
the cluster, not the database backends. The tests run in file order; the kill -9 test starts its
node again before it ends.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from polyrelay.billing.meter import usd_to_micros
from tests.cluster import Cluster, start_cluster
from tests.conftest import BACKENDS, empty_postgres_database, wait_until
from tests.fakes import bfl_upstream, midjourney_proxy, openai_upstream
from tests.fakes.server import KNOBS, FakeServer
from tests.s3server import S3Server, start_seaweedfs

pytestmark = pytest.mark.skipif("postgresql" not in BACKENDS, reason="the cluster runs on PostgreSQL")

ADMIN = "admin-key-cluster-0123456789abcdef"
PAYER = "sk-pr-cluster-payer-0123456789abcdef"  # a prepaid user with $0.50
LIMITED = "sk-pr-cluster-limited-0123456789abcdef"  # 60 requests a minute
REVOCABLE = "sk-pr-cluster-revocable-0123456789abcdef"
FREE = "sk-pr-cluster-free-0123456789abcdef"  # unlimited, for calls that only need to be served
IMAGES = "sk-pr-cluster-images-0123456789abcdef"
TASKS = "sk-pr-cluster-tasks-0123456789abcdef"
OPENAI_KEY, BFL_KEY = "sk-upstream-cluster", "bfl-upstream-cluster"
CHAT_MODEL = "cluster-chat"
CALL_PRICE = usd_to_micros(0.01)
BALANCE = usd_to_micros(0.50)
IMAGINE_PRICE = usd_to_micros(0.1)
LEASE_S = 3.0
POLL_INTERVAL_S = 0.1
CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}]}


@web.middleware
async def _slow_polls(request: web.Request, handler: Any) -> web.StreamResponse:
    """``knobs["list_delay_s"]`` holds each status poll that long, so a poll round keeps its leases
    for a while and a node can be killed while it holds some."""
    if request.path == "/mj/task/list-by-condition" and (delay := request.app[KNOBS].get("list_delay_s")):
        await asyncio.sleep(delay)
    return await handler(request)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    midjourney = midjourney_proxy.create_app()
    midjourney.middlewares.append(_slow_polls)
    servers = {
        "openai": FakeServer(openai_upstream.create_app({OPENAI_KEY})).start(),
        "bfl": FakeServer(bfl_upstream.create_app({BFL_KEY})).start(),
        "midjourney": FakeServer(midjourney).start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the module (the nodes migrate it at once)."""
    with empty_postgres_database("polyrelay_cluster") as url:
        yield url


def _config(database_url: str, fakes: dict[str, FakeServer], s3: S3Server) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "cluster_id": f"cluster-test-{uuid.uuid4().hex[:8]}",
        "admin_key": ADMIN,
        "key_rest_s": 0,
        "cooldown_s": 0,
        "allow_private_image_hosts": True,  # the fakes are on loopback
        "files": s3.files_config(rehost=True),  # public_base_url: the balancer's, set by start_cluster
        "tasks": {"poll_interval_s": POLL_INTERVAL_S, "lease_s": LEASE_S},
        "channels": [
            {"name": "openai", "type": "openai", "base_url": fakes["openai"].url, "keys": [OPENAI_KEY],
             "models": [CHAT_MODEL]},
            {"name": "bfl", "type": "flux", "base_url": fakes["bfl"].url, "keys": [BFL_KEY], "models": ["flux-*"],
             "options": {"poll_interval_s": 0.01, "poll_timeout_s": 10}},
            {"name": "mj", "type": "midjourney", "base_url": fakes["midjourney"].url,
             "keys": [midjourney_proxy.SECRET]},
        ],
        "users": [{"name": "payer", "balance_usd": 0.50}],
        "tokens": [
            {"name": "payer-key", "key": PAYER, "user": "payer"},
            {"name": "limited", "key": LIMITED, "rpm_limit": 60},
            {"name": "revocable", "key": REVOCABLE},
            {"name": "free", "key": FREE},
            {"name": "images", "key": IMAGES, "quota_usd": 10},
            {"name": "tasks", "key": TASKS, "quota_usd": 100},
        ],
        "prices": {CHAT_MODEL: {"per_request": 0.01}, "flux-pro-1.1": {"per_image": 0.04},
                   "mj_imagine": {"per_request": 0.1}},
    }


@pytest.fixture(scope="module")
def cluster(database: str, fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    s3 = start_seaweedfs(workdir / "s3")
    try:
        started = start_cluster(_config(database, fakes, s3), workdir, s3=s3)
    except BaseException:
        s3.stop()
        raise
    yield started
    started.stop()


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _chat(base_url: str, key: str) -> httpx.Response:
    return httpx.post(base_url + "/v1/chat/completions", json=CHAT, headers=_headers(key), timeout=30)


async def _concurrently(method: str, urls: list[str], key: str, body: Any = None) -> list[tuple[int, Any]]:
    """One request per URL, all at once; each answer's status and JSON body."""
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        async def one(url: str) -> tuple[int, Any]:
            async with session.request(method, url, json=body, headers=_headers(key)) as response:
                raw = await response.read()
                try:
                    return response.status, json.loads(raw)
                except ValueError:  # a balancer's error page, say
                    return response.status, raw.decode(errors="replace")

        return list(await asyncio.gather(*(one(url) for url in urls)))


def _burst(url: str, key: str, count: int) -> list[int]:
    """``count`` chat calls at once; their HTTP statuses."""
    answers = asyncio.run(_concurrently("POST", [url + "/v1/chat/completions"] * count, key, CHAT))
    return [status for status, _ in answers]


def _scalar(cluster: Cluster, sql: str, **params: Any) -> Any:
    return cluster.query(sql, **params)[0][0]


def test_concurrent_cold_start_on_an_empty_database(cluster: Cluster) -> None:
    """The fixture started the three nodes at the same instant on an empty database."""
    failures = "\n\n".join(cluster.cold_start_failures)
    assert not failures, f"nodes that crashed in the concurrent cold start:\n{failures}"
    assert [node.starts for node in cluster.nodes] == [1, 1, 1], cluster.logs()
    for node in cluster.nodes:
        assert httpx.get(node.url + "/healthz", timeout=5).status_code == 200, node.tail()

    def once(sql: str) -> dict[str, int]:
        return {row[0]: row[1] for row in cluster.query(sql)}

    assert once("SELECT name, COUNT(*) FROM channels GROUP BY name") == {"openai": 1, "bfl": 1, "mj": 1}
    assert once("SELECT name, COUNT(*) FROM tokens GROUP BY name") == {
        name: 1 for name in ("payer-key", "limited", "revocable", "free", "images", "tasks")}
    assert once("SELECT name, COUNT(*) FROM users GROUP BY name") == {
        name: 1 for name in ("payer", "limited", "revocable", "free", "images", "tasks")}
    assert once("SELECT model, COUNT(*) FROM prices GROUP BY model") == {
        CHAT_MODEL: 1, "flux-pro-1.1": 1, "mj_imagine": 1}
    # The seeded balance is credited once, not once per node.
    topups = cluster.query("SELECT l.amount_micros FROM ledger l JOIN users u ON u.id = l.user_id "
                           "WHERE u.name = 'payer' AND l.kind = 'topup'")
    assert [row.amount_micros for row in topups] == [BALANCE]
    assert _scalar(cluster, "SELECT COUNT(*) FROM alembic_version") == 1


def test_money_at_three_nodes_stays_within_the_single_node_bound(cluster: Cluster) -> None:
    """$0.50 at $0.01 a call: 300 concurrent calls through the balancer serve at most 50, the balance
    never goes below 0, the last cent stays spendable, and afterwards no node serves from a stale view."""
    user_id = _scalar(cluster, "SELECT id FROM users WHERE name = 'payer'")
    token_id = _scalar(cluster, "SELECT id FROM tokens WHERE name = 'payer-key'")
    statuses = _burst(cluster.url, PAYER, 300)
    served = statuses.count(200)
    assert set(statuses) <= {200, 429}, (sorted(set(statuses)), cluster.logs())
    # With a per-request price the single-node bound is exact: never more calls than the balance covers.
    assert served <= 50, f"{served} calls served on a balance for 50"
    burst_served = served

    # The rest stays spendable, whichever node holds it: calls on each node's own port until the
    # balance is spent (a node may hold part of it a while before handing it back).
    drain_started = time.monotonic()
    counts = {"served": served}

    def spent_in_full() -> bool:
        statuses = [_chat(node.url, PAYER).status_code for node in cluster.nodes]
        assert set(statuses) <= {200, 429}, (statuses, cluster.logs())
        counts["served"] += statuses.count(200)
        return counts["served"] >= 50

    try:
        wait_until(spent_in_full, timeout=20, what="the whole balance spent")
    except AssertionError as error:
        if not str(error).startswith("timed out"):
            raise
        left = _scalar(cluster, "SELECT balance_micros FROM users WHERE id = :u", u=user_id)
        raise AssertionError(f"{error}: {counts['served']} calls served on a balance for 50, every node refusing "
                             f"with {left} micro-USD left in the database (usage rows may lag)") from None
    served = counts["served"]
    assert served == 50, f"{served} calls served on a balance for 50"
    print(f"\n$0.50 at $0.01 a call: {burst_served} of 300 concurrent calls served, the other "
          f"{served - burst_served} within {time.monotonic() - drain_started:.2f} s after")

    wait_until(lambda: _scalar(cluster, "SELECT COUNT(*) FROM usage_logs WHERE token_id = :t AND status_code = 200",
                               t=token_id) == served, timeout=15, what="every served call's usage row")
    balance = _scalar(cluster, "SELECT balance_micros FROM users WHERE id = :u", u=user_id)
    assert balance == BALANCE - CALL_PRICE * served and balance >= 0
    ledger = _scalar(cluster, "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger WHERE user_id = :u", u=user_id)
    charges = _scalar(cluster, "SELECT COUNT(*) FROM ledger WHERE user_id = :u AND kind = 'charge'", u=user_id)
    spent = _scalar(cluster, "SELECT COALESCE(SUM(cost_micros), 0) FROM usage_logs WHERE token_id = :t", t=token_id)
    assert (ledger, charges, spent) == (balance, served, CALL_PRICE * served)
    for node in cluster.nodes:  # the next call, on each node's own port
        refused = _chat(node.url, PAYER)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota", (
            node.name, refused.text)


def test_a_burst_through_the_balancer_keeps_the_rate_limit(cluster: Cluster) -> None:
    statuses = _burst(cluster.url, LIMITED, 240)
    served = statuses.count(200)
    assert set(statuses) <= {200, 429}, (sorted(set(statuses)), cluster.logs())
    print(f"\n{served} of 240 concurrent calls served through a 60 rpm limit")
    assert 0 < served <= 60, f"{served} of 240 served through a 60 rpm limit"


def test_a_file_rehosted_by_one_node_is_served_by_every_node(cluster: Cluster) -> None:
    first, *others = cluster.nodes
    response = httpx.post(first.url + "/v1/images/generations", headers=_headers(IMAGES), timeout=30,
                          json={"model": "flux-pro-1.1", "prompt": "a lighthouse"})
    assert response.status_code == 200, (response.text, first.tail())
    url = response.json()["data"][0]["url"]
    assert url.startswith(f"{cluster.url}/files/"), (url, first.tail())  # re-hosted, at the balancer's address
    path = url.removeprefix(cluster.url)
    for node in others:
        served = httpx.get(node.url + path, timeout=10, follow_redirects=True)
        assert served.status_code == 200, (node.name, served.status_code, node.tail())
        assert served.content == bfl_upstream.SAMPLE_PNG
    through_balancer = httpx.get(url, timeout=10, follow_redirects=True)
    assert through_balancer.status_code == 200 and through_balancer.content == bfl_upstream.SAMPLE_PNG


def test_an_admin_change_reaches_every_node_within_a_second(cluster: Cluster) -> None:
    token_id = _scalar(cluster, "SELECT id FROM tokens WHERE name = 'revocable'")
    for node in cluster.nodes:
        assert httpx.get(node.url + "/v1/models", headers=_headers(REVOCABLE), timeout=10).status_code == 200
    clients = [httpx.Client(base_url=node.url, headers=_headers(REVOCABLE), timeout=5) for node in cluster.nodes]
    try:
        sent = time.monotonic()
        disabled = httpx.patch(f"{cluster.nodes[0].url}/api/tokens/{token_id}", json={"enabled": False},
                               headers=_headers(ADMIN), timeout=10)
        assert disabled.status_code == 200, disabled.text
        started = time.monotonic()  # the change is committed: from here on it has to reach every node
        refused_after: dict[str, float] = {}

        def everywhere() -> bool:
            for node, client in zip(cluster.nodes, clients):
                if node.name not in refused_after and client.get("/v1/models").status_code == 401:
                    refused_after[node.name] = time.monotonic() - started
            return len(refused_after) == len(cluster.nodes)

        wait_until(everywhere, timeout=10, what="every node to refuse the disabled token")
    finally:
        for client in clients:
            client.close()
    print(f"\nadmin change (PATCH answered in {started - sent:.3f} s) refused after (s): "
          f"{ {k: round(v, 3) for k, v in sorted(refused_after.items())} }")
    assert max(refused_after.values()) < 1.0, refused_after


def test_tasks_of_a_killed_node_finish_on_the_others_and_are_settled_once(
    cluster: Cluster, fakes: dict[str, FakeServer]
) -> None:
    upstream = fakes["midjourney"]
    upstream.knobs.update(hold=True, list_delay_s=0.5)
    task_ids: list[str] = []
    victim = None
    try:
        submitted = asyncio.run(_concurrently("POST", [cluster.url + "/mj/submit/imagine"] * 30, TASKS,
                                              {"prompt": "a cluster task"}))
        assert all(status == 200 and answer["code"] == 1 for status, answer in submitted), (submitted, cluster.logs())
        task_ids.extend(answer["result"] for _, answer in submitted)
        by_pid = {str(node.pid): node for node in cluster.nodes}

        def a_node_holding_leases() -> Any:
            owners = cluster.query("SELECT lease_owner FROM tasks WHERE lease_owner IS NOT NULL "
                                   "AND lease_expires_at > :now", now=int(time.time() * 1000))
            pids = [owner.lease_owner.split("-", 1)[0].split(":", 1)[0] for owner in owners]
            return next((by_pid[pid] for pid in pids if pid in by_pid), None)

        victim = wait_until(a_node_holding_leases, timeout=20, what="a node holding task leases (owner: <pid>-...)")
        victim.kill9()
        killed_at = time.monotonic()
        stranded = cluster.query("SELECT id FROM tasks WHERE lease_owner LIKE :owner AND status <> 'SUCCESS'",
                                 owner=f"{victim.pid}-%")
        upstream.knobs.update(hold=False, list_delay_s=0)
        assert stranded, "the killed node held no lease when it died"

        def all_done() -> bool:
            return _scalar(cluster, "SELECT COUNT(*) FROM tasks WHERE status = 'SUCCESS'") == len(task_ids)

        # docs/tasks.md: a dead process's leases expire after lease_s and another node takes over;
        # the rest is the fake's three polls at poll_interval_s.
        bound = LEASE_S + 20 * POLL_INTERVAL_S + 1.0
        try:
            wait_until(all_done, timeout=bound + 10, what="every task SUCCESS")
        except AssertionError as error:
            counts = cluster.query("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")
            raise AssertionError(f"{error}; tasks by status: {[tuple(r) for r in counts]}\n{cluster.logs()}") from None
        finished_after = time.monotonic() - killed_at
        print(f"\n{len(stranded)} tasks stranded by kill -9 of {victim.name}; "
              f"all {len(task_ids)} finished {finished_after:.2f} s after it (lease_s {LEASE_S})")
        assert finished_after <= bound, f"tasks finished {finished_after:.1f} s after the kill; bound {bound:.1f} s"

        # Through the balancer, which took the dead node out of rotation.
        fetched = asyncio.run(_concurrently("GET", [f"{cluster.url}/mj/task/{t}/fetch" for t in task_ids], TASKS))
        assert [(status, task["id"], task["status"]) for status, task in fetched] == [
            (200, task_id, "SUCCESS") for task_id in task_ids]
        token = cluster.query("SELECT id, user_id, used_micros FROM tokens WHERE name = 'tasks'")[0]
        charges = cluster.query("SELECT request_id, kind, amount_micros FROM ledger WHERE user_id = :u",
                                u=token.user_id)
        assert sorted((r.request_id, r.kind, r.amount_micros) for r in charges) == sorted(
            (f"task-{task_id}", "charge", -IMAGINE_PRICE) for task_id in task_ids)
        logged = cluster.query("SELECT request_id, cost_micros FROM usage_logs WHERE token_id = :t", t=token.id)
        assert sorted((r.request_id, r.cost_micros) for r in logged) == sorted(
            (f"task-{task_id}", IMAGINE_PRICE) for task_id in task_ids)
        assert token.used_micros == IMAGINE_PRICE * len(task_ids)
        assert _scalar(cluster, "SELECT COUNT(*) FROM tasks WHERE settlement = 'kept'") == len(task_ids)
    finally:
        upstream.knobs.update(hold=False, list_delay_s=0)
        if victim is not None:
            cluster.restart(victim)


def _readyz(cluster: Cluster) -> list[int]:
    return [httpx.get(node.url + "/readyz", timeout=5).status_code for node in cluster.nodes]


def test_readiness_follows_redis_while_the_nodes_keep_serving(cluster: Cluster) -> None:
    assert _readyz(cluster) == [200, 200, 200], cluster.logs()
    cluster.redis.stop()
    try:
        wait_until(lambda: _readyz(cluster) == [503, 503, 503], timeout=15, what="/readyz 503 on every node")
        for node in cluster.nodes:
            served = _chat(node.url, FREE)
            assert served.status_code == 200, (node.name, served.text, node.tail())
        cluster.balancer.wait_rotation({node.name for node in cluster.nodes})  # every live node, none ready
        statuses = [_chat(cluster.url, FREE).status_code for _ in range(6)]
        assert statuses == [200] * 6, (statuses, cluster.logs())
    finally:
        cluster.redis.start()
    wait_until(lambda: _readyz(cluster) == [200, 200, 200], timeout=15, what="/readyz 200 again on every node")
    assert _chat(cluster.url, FREE).status_code == 200
