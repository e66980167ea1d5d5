"""The rest of the Midjourney surface: video, legacy change routes, paged query and queue, image forwarding,
prompt flags, refused submits (usage log, channel health, failover) and callbacks that survive a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conftest import Gateway, free_port, start_gateway, wait_until
from tests.fakes import midjourney_proxy
from tests.fakes.server import FakeServer
from tests.test_midjourney import ALICE, BOB, IMAGINE, Mj, _config
from tests.test_midjourney import fresh_upstream, upstream  # noqa: F401  (shared fixtures: the fake proxy)


@pytest.fixture(scope="module")
def mj(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Mj:
    config = _config(upstream)
    config["prices"]["mj_video"] = {"per_request": 0.8}
    return Mj(gateway_factory(config), upstream)


def _sent(server: FakeServer, path: str) -> dict[str, Any]:
    return orjson.loads(server.last(path).body)


def _done(mj: Mj, prompt: str, key: str = ALICE) -> dict[str, Any]:
    return mj.until(mj.submit(prompt, key), "SUCCESS", key)


# ---- legacy change routes --------------------------------------------------------------------------

def test_change_and_simple_change_use_the_parents_buttons(mj: Mj) -> None:
    parent = _done(mj, "a lighthouse at dusk")
    upstream_parent = mj.gateway.query("SELECT upstream_id FROM tasks WHERE id = :i", i=parent["id"])[0].upstream_id

    response = mj.post("/mj/submit/change", {"taskId": parent["id"], "action": "UPSCALE", "index": 2, "state": "s1"})
    assert response.status_code == 200 and response.json()["code"] == 1, response.text
    sent = _sent(mj.upstream, "/mj/submit/action")
    assert sent["taskId"] == upstream_parent and "::upsample::2::" in sent["customId"] and sent["state"] == "s1"
    upscale = mj.until(response.json()["result"], "SUCCESS")
    assert upscale["action"] == "UPSCALE" and upscale["state"] == "s1"

    for content, fragment, action in ((f"{parent['id']} V3", "::variation::3::", "VARIATION"),
                                      (f"{parent['id']} u1", "::upsample::1::", "UPSCALE"),
                                      (f"{parent['id']} R", "::reroll::0::", "REROLL")):
        response = mj.post("/mj-relax/mj/submit/simple-change", {"content": content})
        assert response.json()["code"] == 1, response.text
        assert fragment in _sent(mj.upstream, "/mj/submit/action")["customId"]
        child = mj.fetch(response.json()["result"])
        assert child["mode"] == "relax" and child["customId"]
        assert mj.gateway.query("SELECT action, parent_id FROM tasks WHERE id = :i", i=child["id"])[0] == (
            action, parent["id"])

    for body in ({"taskId": parent["id"], "action": "UPSCALE", "index": 5},
                 {"taskId": parent["id"], "action": "ZOOM", "index": 1},
                 {"action": "UPSCALE", "index": 1},
                 {"taskId": parent["id"], "action": "VARIATION", "index": True}):
        response = mj.post("/mj/submit/change", body)
        assert response.status_code == 400 and response.json()["code"] == 4, (body, response.text)
    assert mj.post("/mj/submit/simple-change", {"content": "nonsense"}).json()["code"] == 4
    assert mj.post("/mj/submit/simple-change", {"content": f"{parent['id']} U2"}, BOB).json()["code"] == 3


def test_change_without_buttons_uses_the_open_source_change_route(mj: Mj) -> None:
    mj.upstream.knobs["no_buttons"] = True
    try:
        parent = _done(mj, "a plain open-source proxy")
    finally:
        mj.upstream.knobs["no_buttons"] = False
    assert parent["buttons"] == []
    upstream_parent = mj.gateway.query("SELECT upstream_id FROM tasks WHERE id = :i", i=parent["id"])[0].upstream_id
    response = mj.post("/mj/submit/simple-change", {"content": f"{parent['id']} V2"})
    assert response.json()["code"] == 1, response.text
    assert _sent(mj.upstream, "/mj/submit/change") == {"taskId": upstream_parent, "action": "VARIATION", "index": 2}
    assert mj.until(response.json()["result"], "SUCCESS")["action"] == "VARIATION"
    pending = mj.submit("not done yet")
    response = mj.post("/mj/submit/change", {"taskId": pending, "action": "UPSCALE", "index": 1})
    assert response.json()["code"] == 4  # the parent must have succeeded, as midjourney-proxy requires


# ---- video -----------------------------------------------------------------------------------------

def test_video_and_extend(mj: Mj) -> None:
    before = mj.used("alice")
    response = mj.post("/mj/submit/video", {"prompt": "waves", "motion": "high", "image": "data:image/png;base64,AA=="})
    assert response.json()["code"] == 1, response.text
    first = mj.until(response.json()["result"], "SUCCESS")
    assert first["action"] == "VIDEO" and len(first["videoUrls"]) == 4
    upstream_first = mj.gateway.query("SELECT upstream_id FROM tasks WHERE id = :i", i=first["id"])[0].upstream_id

    response = mj.post("/mj-fast/mj/submit/video", {"action": "extend", "index": 1, "task_id": first["id"],
                                                    "motion": "low", "prompt": "more waves"})
    assert response.json()["code"] == 1, response.text
    sent = _sent(mj.upstream, "/mj/submit/video")
    assert sent["taskId"] == upstream_first and "task_id" not in sent and sent["index"] == 1
    extended = mj.until(response.json()["result"], "SUCCESS")
    assert extended["action"] == "VIDEO"
    assert wait_until(lambda: mj.used("alice") == before + 2 * 800_000, what="two video charges")

    for body in ({"prompt": "waves", "motion": "fast"},
                 {"prompt": "waves"},
                 {"motion": "low"},
                 {"action": "extend", "index": 1, "motion": "low"},
                 {"action": "extend", "index": 4, "taskId": first["id"], "motion": "low"}):
        response = mj.post("/mj/submit/video", body)
        assert response.status_code == 400 and response.json()["code"] == 4, (body, response.text)
    response = mj.post("/mj/submit/video", {"action": "extend", "index": 0, "taskId": first["id"]}, BOB)
    assert response.status_code == 404 and response.json()["code"] == 3


# ---- query and queue -------------------------------------------------------------------------------

def test_paged_query_and_queue(mj: Mj, gateway_factory: Callable[..., Gateway]) -> None:
    carol = "sk-mj-carol-0123456789abcdef"
    config = _config(mj.upstream)
    config["tokens"].append({"name": "carol", "key": carol, "quota_usd": 10})
    own = Mj(gateway_factory(config), mj.upstream)
    ids = [own.submit(f"query fox {i}", carol) for i in range(3)]
    for task_id in ids:
        own.until(task_id, "SUCCESS", carol)
    failed = own.submit("query fox FAIL", carol)
    own.until(failed, "FAILURE", carol)

    page = own.post("/mj/task/query", {"pageNumber": 0, "pageSize": 2}, carol).json()
    assert [t["id"] for t in page["content"]] == [failed, ids[2]]  # "id,desc" by default: newest first
    assert (page["totalElements"], page["totalPages"], page["number"], page["size"], page["numberOfElements"]) == (
        4, 2, 0, 2, 2)
    assert page["first"] is True and page["last"] is False and page["empty"] is False
    assert page["pageable"]["pageNumber"] == 0 and page["pageable"]["offset"] == 0 and page["sort"]["sorted"]
    second = own.post("/mj-turbo/mj/task/query", {"pageNumber": 1, "pageSize": 2}, carol).json()
    assert [t["id"] for t in second["content"]] == [ids[1], ids[0]] and second["last"] is True
    beyond = own.post("/mj/task/query", {"pageNumber": 5, "pageSize": 2}, carol).json()
    assert beyond["content"] == [] and beyond["empty"] is True and beyond["totalElements"] == 4

    def ids_of(body: dict[str, Any]) -> list[str]:
        return [t["id"] for t in own.post("/mj/task/query", body, carol).json()["content"]]

    assert ids_of({"sort": "submitTime,asc"}) == ids + [failed]
    assert ids_of({"status": "FAILURE"}) == [failed]
    assert ids_of({"statusSet": ["SUCCESS"], "sort": "id,asc"}) == ids
    assert ids_of({"prompt": "FOX 1"}) == [ids[1]]
    assert ids_of({"ids": [ids[0], failed, "nope"]}) == [failed, ids[0]]
    assert ids_of({"action": "imagine", "description": "/imagine"}) == [failed] + ids[::-1]
    assert own.post("/mj/task/query", {"pageSize": 1000}, carol).json()["code"] == 4
    assert own.post("/mj/task/query", {}, ALICE).json()["totalElements"] == 0  # only the caller's own tasks
    assert own.post("/mj/task/list-by-condition", {}, carol).json() == []  # no ids: [], as midjourney-proxy

    own.upstream.knobs["hold"] = True
    try:
        queued = [own.submit(f"queued {i}", carol) for i in range(2)]
        assert [t["id"] for t in own.get("/mj/task/queue", carol).json()] == queued
        assert own.get("/mj-relax/mj/task/queue", ALICE).json() == []
    finally:
        for task_id in queued:
            own.post(f"/mj/task/{task_id}/cancel", {}, carol)
        own.upstream.knobs["hold"] = False
    assert own.get("/mj/task/queue", carol).json() == []


# ---- images and prompt flags -----------------------------------------------------------------------

def test_images_are_forwarded_and_cached(gateway_factory: Callable[..., Gateway], fresh_upstream: FakeServer,
                                         tmp_path: Path) -> None:
    cache = tmp_path / "mj-cache"
    image_size = len(midjourney_proxy.PNG) + 40
    config = _config(fresh_upstream)
    config["midjourney"].update(public_base_url="https://relay.example.com/", strip_speed_flags=True,
                                image_cache_dir=str(cache), image_cache_max_bytes=int(image_size * 1.5))
    mj = Mj(gateway_factory(config), fresh_upstream)

    task_id = mj.submit("a cat --relax --ar 1:1 --TURBO --fast")
    assert _sent(fresh_upstream, "/mj/submit/imagine")["prompt"] == "a cat --ar 1:1"
    task = mj.until(task_id, "SUCCESS")
    assert task["imageUrl"] == f"https://relay.example.com/mj/image/{task_id}"
    upstream_url = mj.gateway.query("SELECT result FROM tasks WHERE id = :i", i=task_id)[0].result
    assert "relay.example.com" not in str(upstream_url)

    # No key needed (links go into <img> tags); the first request downloads, the second is served from disk.
    for _ in range(2):
        response = httpx.get(f"{mj.gateway.url}/mj/image/{task_id}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(midjourney_proxy.PNG) and response.content.endswith(b".png")
    assert fresh_upstream.knobs["image_gets"] == [f"{mj_upstream_id(mj, task_id)}.png"]
    blobs = list((cache / "blobs").glob("*/*"))
    assert len(blobs) == 1 and blobs[0].read_bytes() == response.content
    assert httpx.get(f"{mj.gateway.url}/mj-fast/mj/image/{task_id}").status_code == 200

    # A second image pushes the cache over its bound: the older one is evicted, and downloaded again on demand.
    other = mj.until(mj.submit("a dog"), "SUCCESS")
    assert httpx.get(f"{mj.gateway.url}/mj/image/{other['id']}").status_code == 200
    assert len(list((cache / "blobs").glob("*/*"))) == 1
    assert httpx.get(f"{mj.gateway.url}/mj/image/{task_id}").status_code == 200
    assert len(fresh_upstream.knobs["image_gets"]) == 3

    assert httpx.get(f"{mj.gateway.url}/mj/image/123").json()["code"] == 3
    fresh_upstream.knobs["hold"] = True
    waiting = mj.submit("not yet")
    response = httpx.get(f"{mj.gateway.url}/mj/image/{waiting}")
    assert response.status_code == 404 and response.json()["code"] == 3
    fresh_upstream.knobs["hold"] = False

    # The image host must be public unless it is the channel's own host: "localhost" is neither.
    fresh_upstream.knobs["image_host"] = "localhost"
    elsewhere = mj.until(mj.submit("a private image"), "SUCCESS")
    response = httpx.get(f"{mj.gateway.url}/mj/image/{elsewhere['id']}")
    assert response.status_code == 502 and response.json()["code"] == 9


def mj_upstream_id(mj: Mj, task_id: str) -> str:
    return mj.gateway.query("SELECT upstream_id FROM tasks WHERE id = :i", i=task_id)[0].upstream_id


def test_forwarding_off_keeps_upstream_urls(gateway_factory: Callable[..., Gateway],
                                            fresh_upstream: FakeServer) -> None:
    config = _config(fresh_upstream)
    config["midjourney"]["forward_images"] = False
    mj = Mj(gateway_factory(config), fresh_upstream)
    task = mj.until(mj.submit("a cat --relax"), "SUCCESS")
    assert task["imageUrl"] == f"{fresh_upstream.url}/attachments/{mj_upstream_id(mj, task['id'])}.png"
    assert _sent(fresh_upstream, "/mj/submit/imagine")["prompt"] == "a cat --relax"  # stripping is off by default


# ---- refused submits: usage log, channel health, failover ------------------------------------------

def test_refusals_are_logged_feed_health_and_fail_over(gateway_factory: Callable[..., Gateway],
                                                       fresh_upstream: FakeServer) -> None:
    full = FakeServer(midjourney_proxy.create_app()).start()
    try:
        full.knobs["queue_full"] = True
        config = _config(fresh_upstream)
        config.update(cooldown_after_failures=2, cooldown_s=600)
        config["channels"] = [
            {"name": "dead", "type": "midjourney", "base_url": f"http://127.0.0.1:{free_port()}",
             "keys": [midjourney_proxy.SECRET], "models": ["mj_*"], "priority": 10},
            {"name": "full", "type": "midjourney", "base_url": full.url, "keys": [midjourney_proxy.SECRET],
             "models": ["mj_*"], "priority": 5},
            {**config["channels"][0], "priority": 0},
        ]
        mj = Mj(gateway_factory(config), fresh_upstream)

        first = mj.submit("fail over twice")
        log = mj.gateway.query("SELECT channel_name, attempts FROM usage_logs WHERE request_id = :r",
                               r=f"task-{first}")[0]
        assert (log.channel_name, log.attempts) == ("mj", 3)
        mj.submit("and again")

        def health() -> dict[str, Any]:
            return {r.name: (r.failure_count, r.cooldown_until is not None)
                    for r in mj.gateway.query("SELECT name, failure_count, cooldown_until FROM channels")}

        assert wait_until(lambda: health() == {"dead": (2, True), "full": (2, True), "mj": (0, False)},
                          what="two failures each, then a cooldown")
        third = mj.submit("cooling channels go last")
        assert mj.gateway.query("SELECT attempts FROM usage_logs WHERE request_id = :r",
                                r=f"task-{third}")[0].attempts == 1

        fresh_upstream.knobs["ban"] = True
        response = mj.post("/mj/submit/imagine", {"prompt": "refused upstream"})
        assert response.json()["code"] == 24
        fresh_upstream.knobs["ban"] = False
        fresh_upstream.knobs["submit_status"] = 503
        response = mj.post("/mj/submit/imagine", {"prompt": "nobody takes it"})
        assert response.status_code == 200 and response.json()["code"] == 23  # the last word came from "full"
        rows = wait_until(lambda: len(found := mj.gateway.query(
            "SELECT status_code, cost_micros, error, attempts FROM usage_logs "
            "WHERE request_id LIKE 'task-%' AND status_code >= 400 ORDER BY id")) == 2 and found,
            what="two refusal rows")
        assert [(r.status_code, r.cost_micros) for r in rows] == [(400, 0), (400, 0)]
        assert "code 24" in rows[0].error and "code 23" in rows[1].error and rows[1].attempts == 3
        assert mj.used("alice") == 3 * IMAGINE and mj.ledger("alice") == 3 * IMAGINE
        assert len(mj.gateway.query("SELECT id FROM tasks")) == 3
    finally:
        full.stop()


# ---- callbacks survive a restart -------------------------------------------------------------------

def test_callbacks_survive_a_restart(gateway_factory: Callable[..., Gateway], fresh_upstream: FakeServer,
                                     tmp_path: Path) -> None:
    received: list[tuple[int, dict[str, Any]]] = []
    answer = {"status": 503}

    async def hook(request: web.Request) -> web.Response:
        received.append((answer["status"], await request.json()))
        return web.Response(status=answer["status"])

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = FakeServer(app).start()
    try:
        config = _config(fresh_upstream, notify_attempts=1000, notify_backoff_s=0.02)
        first = gateway_factory(config)
        task_id = Mj(first, fresh_upstream).submit("call me back", notifyHook=receiver.url + "/hook")
        Mj(first, fresh_upstream).until(task_id, "SUCCESS")
        wait_until(lambda: any(body["status"] == "SUCCESS" for _, body in received), what="a refused SUCCESS callback")
        assert first.query("SELECT notify_due_at FROM tasks")[0].notify_due_at is not None
        first.stop()
        assert first.query("SELECT notify_due_at FROM tasks")[0].notify_due_at == 1  # handed back on shutdown

        answer["status"] = 200
        second = start_gateway({**config, "database_url": first.database_url}, tmp_path)
        try:
            delivered = wait_until(lambda: [b for s, b in received if s == 200], what="the callback after restart")
            assert delivered[0]["id"] == task_id and delivered[0]["status"] == "SUCCESS"
            assert delivered[0]["imageUrl"].endswith(f"/mj/image/{task_id}")
            wait_until(lambda: second.query("SELECT notify_due_at FROM tasks")[0].notify_due_at is None,
                       what="the mark cleared")
            assert len([s for s, _ in received if s == 200]) == 1
        finally:
            second.stop()
    finally:
        receiver.stop()
