"""The Midjourney family and the task engine end to end: httpx -> polyrelay -> fake midjourney-proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import Gateway, start_gateway, wait_until
from tests.fakes import midjourney_proxy
from tests.fakes.midjourney_proxy import SECRET
from tests.fakes.server import FakeServer

ALICE = "sk-mj-alice-0123456789abcdef"
BOB = "sk-mj-bob-0123456789abcdef"
TIGHT = "sk-mj-tight-0123456789abcdef"  # quota for exactly one imagine
IMAGINE, UPSCALE = 100_000, 50_000  # micro-USD


def _config(upstream: FakeServer, **tasks: Any) -> dict[str, Any]:
    return {
        "tasks": {"poll_interval_s": 0.1, "notify_allow_private": True, "notify_backoff_s": 0.05, "lease_s": 5,
                  **tasks},
        "midjourney": {"banned_words": ["forbiddenword"], "mode_multipliers": {"fast": 1, "relax": 0.5, "turbo": 2}},
        "channels": [{"name": "mj", "type": "midjourney", "base_url": upstream.url, "keys": [SECRET],
                      "models": ["mj_*", "swap_face"]}],
        "tokens": [{"name": "alice", "key": ALICE, "quota_usd": 10}, {"name": "bob", "key": BOB, "quota_usd": 10},
                   {"name": "tight", "key": TIGHT, "quota_usd": 0.1}],
        "prices": {"mj_imagine": {"per_request": 0.1}, "mj_upscale": {"per_request": 0.05},
                   "mj_variation": {"per_request": 0.05}, "mj_*": {"per_request": 0.05}},
    }


def _receiver() -> FakeServer:
    """Records callback bodies; answers 500 to the very first one, so delivery must retry."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = FakeServer(app).start()
    server.knobs["received"] = received
    return server


@dataclass
class Mj:
    gateway: Gateway
    upstream: FakeServer

    def post(self, path: str, body: Any, key: str = ALICE, **headers: str) -> httpx.Response:
        return httpx.post(self.gateway.url + path, json=body, headers={"Authorization": f"Bearer {key}", **headers})

    def get(self, path: str, key: str = ALICE) -> httpx.Response:
        return httpx.get(self.gateway.url + path, headers={"Authorization": f"Bearer {key}"})

    def fetch(self, task_id: str, key: str = ALICE) -> dict[str, Any]:
        response = self.get(f"/mj/task/{task_id}/fetch", key)
        assert response.status_code == 200, response.text
        return response.json()

    def until(self, task_id: str, status: str, key: str = ALICE, timeout: float = 15) -> dict[str, Any]:
        return wait_until(lambda: (t := self.fetch(task_id, key))["status"] == status and t, timeout, f"task {status}")

    def submit(self, prompt: str, key: str = ALICE, path: str = "/mj/submit/imagine", **extra: Any) -> str:
        response = self.post(path, {"prompt": prompt, **extra}, key)
        assert response.status_code == 200 and response.json()["code"] == 1, response.text
        return response.json()["result"]

    def used(self, name: str) -> int:
        return self.gateway.query("SELECT used_micros FROM tokens WHERE name = :n", n=name)[0].used_micros

    def ledger(self, name: str) -> int:
        rows = self.gateway.query(
            "SELECT COALESCE(SUM(cost_micros), 0) AS s FROM usage_logs u JOIN tokens t ON t.id = u.token_id "
            "WHERE t.name = :n", n=name)
        return int(rows[0].s)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(midjourney_proxy.create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_upstream() -> Iterator[FakeServer]:
    """A fake of one's own, for tests that turn its knobs."""
    server = FakeServer(midjourney_proxy.create_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[FakeServer]:
    server = _receiver()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mj(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Mj:
    return Mj(gateway_factory(_config(upstream)), upstream)


def test_imagine_poll_upscale_flow_with_callbacks(mj: Mj, receiver: FakeServer) -> None:
    used_before = mj.used("alice")
    hook = receiver.url + "/hook"
    task_id = mj.submit("a red fox in the snow", notifyHook=hook, state="my-state")
    assert task_id.isdigit()
    upstream_id = mj.upstream.last("/mj/submit/imagine")
    assert upstream_id.headers["mj-api-secret"] == SECRET and b"notifyHook" not in upstream_id.body

    task = mj.until(task_id, "SUCCESS")
    assert task["id"] == task_id and task["action"] == "IMAGINE" and task["progress"] == "100%"
    assert task["state"] == "my-state" and task["prompt"] == "a red fox in the snow"
    assert task["imageUrl"] == f"{mj.gateway.url}/mj/image/{task_id}"  # forwarded through polyrelay (default)
    assert task["submitTime"] <= task["startTime"] <= task["finishTime"]
    assert "notifyHook" not in task["properties"] and task["properties"]["finalPrompt"]
    u1 = next(b["customId"] for b in task["buttons"] if b["label"] == "U1")

    response = mj.post("/mj/submit/action", {"taskId": task_id, "customId": u1})
    assert response.json()["code"] == 1, response.text
    child_id = response.json()["result"]
    sent = mj.upstream.last("/mj/submit/action")
    assert child_id != task_id and b'"customId":"' + u1.encode() + b'"' in sent.body
    assert b'"taskId":"' + task_id.encode() + b'"' not in sent.body  # upstream got its own id, not ours
    child = mj.until(child_id, "SUCCESS")
    assert child["action"] == "UPSCALE"

    listed = mj.post("/mj/task/list-by-condition", {"ids": [task_id, child_id, "nope"]}).json()
    assert [t["id"] for t in listed] == [task_id, child_id]
    assert [t["id"] for t in mj.post("/mj/task/list-by-ids", {"ids": [child_id]}).json()] == [child_id]
    assert {task_id, child_id} <= {t["id"] for t in mj.get("/mj/task/list").json()}
    seed = mj.get(f"/mj/task/{task_id}/image-seed").json()
    assert seed["code"] == 1 and seed["result"].isdigit()

    # Money: one imagine and one upscale, charged once each; the ledger adds up to the key's spend.
    assert wait_until(lambda: mj.used("alice") == used_before + IMAGINE + UPSCALE, what="charges")
    assert mj.ledger("alice") == mj.used("alice")

    # Callbacks: every state change in order, the final SUCCESS delivered though the first POST got 500.
    received: list[dict[str, Any]] = receiver.knobs["received"]
    final = wait_until(lambda: [r for r in received if r["id"] == task_id and r["status"] == "SUCCESS"],
                       what="the SUCCESS callback")
    assert final[-1]["imageUrl"] == task["imageUrl"] and final[-1]["state"] == "my-state"
    ranks = {"NOT_START": 0, "SUBMITTED": 1, "IN_PROGRESS": 3, "SUCCESS": 4}
    seen = [ranks[r["status"]] for r in received if r["id"] == task_id]
    assert seen == sorted(seen)


def test_speed_modes_and_mj_api_secret_auth(mj: Mj) -> None:
    before = mj.used("bob")
    response = mj.post("/mj-turbo/mj/submit/imagine", {"prompt": "turbo fox"}, key="x", **{"mj-api-secret": BOB})
    assert response.status_code == 401  # Authorization wins over mj-api-secret when both are sent
    response = httpx.post(mj.gateway.url + "/mj-turbo/mj/submit/imagine", json={"prompt": "turbo fox"},
                          headers={"mj-api-secret": BOB})
    assert response.json()["code"] == 1, response.text
    relax = mj.submit("relax fox", BOB, path="/mj-relax/mj/submit/imagine")
    assert mj.fetch(relax, BOB)["mode"] == "relax"
    assert wait_until(lambda: mj.used("bob") == before + 2 * IMAGINE + IMAGINE // 2, what="mode-priced charges")
    assert mj.post("/mj-warp/mj/submit/imagine", {"prompt": "x"}).json()["code"] == 3


def test_ownership_isolation(mj: Mj) -> None:
    task_id = mj.submit("alice's own fox")
    mj.until(task_id, "SUCCESS")
    assert mj.fetch(task_id)["id"] == task_id
    for response in (
        mj.get(f"/mj/task/{task_id}/fetch", BOB),
        mj.get(f"/mj/task/{task_id}/image-seed", BOB),
        mj.post("/mj/submit/action", {"taskId": task_id, "customId": "MJ::JOB::upsample::1::x"}, BOB),
        mj.post(f"/mj/task/{task_id}/cancel", {}, BOB),
        mj.get("/mj/task/123/fetch"),
    ):
        assert response.status_code == 404 and response.json()["code"] == 3, response.text
    assert mj.post("/mj/task/list-by-condition", {"ids": [task_id]}, BOB).json() == []
    assert task_id not in {t["id"] for t in mj.get("/mj/task/list", BOB).json()}


def test_validation_banned_words_and_auth(mj: Mj) -> None:
    submits = len([r for r in mj.upstream.requests if r.path == "/mj/submit/imagine"])
    blank = mj.post("/mj/submit/imagine", {"prompt": "  "})
    assert blank.status_code == 400 and blank.json()["code"] == 4
    banned = mj.post("/mj/submit/imagine", {"prompt": "a ForbiddenWord fox"})
    assert banned.status_code == 200 and banned.json()["code"] == 24
    assert banned.json()["properties"]["bannedWord"] == "forbiddenword"
    assert mj.post("/mj/submit/blend", {"base64Array": ["data:image/png;base64,AA=="]}).json()["code"] == 4
    assert mj.post("/mj/submit/action", {"taskId": "1"}).json()["code"] == 4
    assert len([r for r in mj.upstream.requests if r.path == "/mj/submit/imagine"]) == submits  # nothing went upstream
    missing = httpx.post(mj.gateway.url + "/mj/submit/imagine", json={"prompt": "fox"})
    assert missing.status_code == 401 and missing.json()["code"] == 4
    wrong = mj.post("/mj/submit/imagine", {"prompt": "fox"}, key="sk-nobody-0123456789")
    assert wrong.status_code == 401


def test_upstream_banned_prompt_passes_through_uncharged(gateway_factory: Callable[..., Gateway],
                                                         fresh_upstream: FakeServer) -> None:
    mj = Mj(gateway_factory(_config(fresh_upstream)), fresh_upstream)
    fresh_upstream.knobs["ban"] = True
    response = mj.post("/mj/submit/imagine", {"prompt": "fine by us"})
    assert response.status_code == 200 and response.json()["code"] == 24
    assert response.json()["properties"]["bannedWord"] == "secretword"
    assert mj.used("alice") == 0 and mj.gateway.query("SELECT id FROM tasks") == []


def test_failure_refunds_once_and_the_quota_comes_back(gateway_factory: Callable[..., Gateway],
                                                       fresh_upstream: FakeServer) -> None:
    mj = Mj(gateway_factory(_config(fresh_upstream)), fresh_upstream)
    fresh_upstream.knobs["hold"] = True  # the first must not fail (and refund) before the second is refused
    task_id = mj.submit("please FAIL", TIGHT)
    refused = mj.post("/mj/submit/imagine", {"prompt": "a second one"}, TIGHT)
    assert refused.status_code == 429 and refused.json()["code"] == 4  # the quota is held by the first
    fresh_upstream.knobs["hold"] = False
    task = mj.until(task_id, "FAILURE", TIGHT)
    assert task["failReason"] and task["progress"] == ""
    assert wait_until(lambda: mj.used("tight") == 0, what="the refund")
    # The refund reached this process's memory too: the key can afford one imagine again.
    second = mj.submit("a second one", TIGHT)
    mj.until(second, "SUCCESS", TIGHT)
    assert wait_until(lambda: mj.used("tight") == IMAGINE, what="the second charge")
    assert mj.ledger("tight") == IMAGINE
    rows = mj.gateway.query("SELECT request_id, cost_micros FROM usage_logs WHERE request_id LIKE :p ORDER BY id",
                            p=f"task-{task_id}%")
    assert [(r.request_id, r.cost_micros) for r in rows] == [(f"task-{task_id}", IMAGINE),
                                                              (f"task-{task_id}-refund", -IMAGINE)]


def test_two_gateways_on_one_database_settle_each_task_once(
    gateway_factory: Callable[..., Gateway], fresh_upstream: FakeServer, tmp_path: Path
) -> None:
    first = gateway_factory(_config(fresh_upstream, poll_interval_s=0.05))
    config = {**_config(fresh_upstream, poll_interval_s=0.05), "database_url": first.database_url}
    second = start_gateway(config, tmp_path)
    try:
        gateways = [Mj(first, fresh_upstream), Mj(second, fresh_upstream)]
        ids = [gateways[i % 2].submit(f"race {i} FAIL" if i % 2 else f"race {i}") for i in range(20)]
        for task_id in ids:
            wait_until(lambda: gateways[0].fetch(task_id)["status"] in ("SUCCESS", "FAILURE"), 20, "the end")
        rows = first.query("SELECT status, settlement FROM tasks")
        assert sorted((r.status, r.settlement) for r in rows) == sorted(
            [("SUCCESS", "kept")] * 10 + [("FAILURE", "refunded")] * 10)
        refunds = first.query("SELECT COUNT(*) AS n FROM usage_logs WHERE endpoint = 'task.refund'")[0].n
        assert refunds == 10
        mj = gateways[0]
        assert wait_until(lambda: mj.used("alice") == 10 * IMAGINE, what="the net spend")
        assert mj.ledger("alice") == 10 * IMAGINE
        # Each upstream task reached its end in exactly as many polls as the fake needs: no double polling.
        polls = fresh_upstream.knobs["polls"]
        assert all(count <= 3 for count in polls.values()), polls
    finally:
        second.stop()


def test_restart_mid_task_resumes(gateway_factory: Callable[..., Gateway], fresh_upstream: FakeServer,
                                  tmp_path: Path) -> None:
    config = _config(fresh_upstream)
    first = gateway_factory(config)
    fresh_upstream.knobs["hold"] = True
    task_id = Mj(first, fresh_upstream).submit("survive a restart")
    wait_until(lambda: fresh_upstream.knobs.get("polls"), what="a first poll")
    first.stop()
    assert first.query("SELECT lease_owner FROM tasks")[0].lease_owner is None  # handed back on shutdown
    fresh_upstream.knobs["hold"] = False
    second = start_gateway({**config, "database_url": first.database_url}, tmp_path)
    try:
        task = Mj(second, fresh_upstream).until(task_id, "SUCCESS")
        assert task["imageUrl"]
    finally:
        second.stop()


def test_cancel_and_timeout_refund(gateway_factory: Callable[..., Gateway], fresh_upstream: FakeServer) -> None:
    mj = Mj(gateway_factory(_config(fresh_upstream, timeout_s=1.0)), fresh_upstream)
    fresh_upstream.knobs["hold"] = True
    cancelled = mj.submit("cancel me")
    response = mj.post(f"/mj/task/{cancelled}/cancel", {})
    assert response.json()["code"] == 1
    assert mj.fetch(cancelled)["status"] == "CANCEL"
    again = mj.post(f"/mj/task/{cancelled}/cancel", {})
    assert again.status_code == 400 and again.json()["code"] == 4
    stuck = mj.submit("never finishes")
    task = mj.until(stuck, "FAILURE")
    assert "timed out" in task["failReason"]
    assert wait_until(lambda: mj.used("alice") == 0, what="both refunds")
    assert mj.ledger("alice") == 0
