"""Luma's download URL, file upload and batch query, and new-api's ``/v1/video/generations``, end to end.

One gateway per backend, with result re-hosting on, against the fake Luma-API proxy and
the fake Kling API (tests/fakes/), whose jobs advance one step per poll.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import kling_upstream, luma_upstream
from tests.fakes.server import FakeServer
from tests.test_task_families import ALICE, BOB, Env  # Env's requests use ALICE's key unless told
ADMIN_KEY = "admin-key-video-0123456789"
LUMA_GENERATION, LUMA_UPLOAD = 400_000, 5_000
KLING_V1_PER_S, KLING_PRO_PER_S = 28_000, 98_000


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers = {"luma": FakeServer(luma_upstream.create_app()).start(),
               "kling": FakeServer(kling_upstream.create_app()).start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def env(gateway_factory: Callable[..., Gateway], fakes: dict[str, FakeServer],
        tmp_path_factory: pytest.TempPathFactory) -> Env:
    def channel(name: str, type_: str, base: str, keys: list[str], models: list[str]) -> dict[str, Any]:
        return {"name": name, "type": type_, "base_url": fakes[base].url, "keys": keys, "models": models}

    config = {
        "admin_key": ADMIN_KEY,
        "allow_private_image_hosts": True,  # the fakes, CDN included, are on loopback
        "files": {"rehost": True, "dir": str(tmp_path_factory.mktemp("files"))},
        "tasks": {"poll_interval_s": 0.05, "lease_s": 5},
        "channels": [channel("luma", "luma", "luma", [luma_upstream.LUMA_KEY], ["luma_*"]),
                     channel("kling", "kling", "kling", [kling_upstream.CHANNEL_KEY], ["kling-*"]),
                     channel("suno", "suno", "luma", ["unused"], ["suno_*"])],  # never called: not a video channel
        "tokens": [{"name": "alice", "key": ALICE, "quota_usd": 100}, {"name": "bob", "key": BOB, "quota_usd": 100}],
        "prices": {"luma_generation": {"per_request": LUMA_GENERATION / 1e6}, "luma_extend": {"per_request": 0.2},
                   "suno_music": {"per_request": 0.1}, "kling-v1": {"per_second": KLING_V1_PER_S / 1e6},
                   "kling-v1-pro": {"per_second": KLING_PRO_PER_S / 1e6}},
    }
    return Env(gateway_factory(config), fakes, [], "")


def _luma(env: Env, prompt: str = "a cat surfing", key: str = ALICE) -> str:
    response = env.post("/luma/generations", {"user_prompt": prompt}, key)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _completed(env: Env, task_id: str) -> dict[str, Any]:
    return wait_until(lambda: (g := env.get(f"/luma/generations/{task_id}").json())["state"] == "completed" and g,
                      what="completed")


def _upstream_id(env: Env, task_id: str) -> str:
    return env.gateway.query("SELECT upstream_id FROM tasks WHERE id = :i", i=task_id)[0].upstream_id


def _video(env: Env, body: dict[str, Any], key: str = ALICE) -> httpx.Response:
    return env.post("/v1/video/generations", body, key)


def _video_task(env: Env, task_id: str, status: str) -> dict[str, Any]:
    def fetched() -> dict[str, Any] | None:
        response = env.get(f"/v1/video/generations/{task_id}")
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        return data if data["status"] == status else None
    return wait_until(fetched, 15, f"video task {status}")


# ---- Luma: download URL --------------------------------------------------------------------------

def test_download_video_url_is_the_rehosted_copy(env: Env) -> None:
    fake = env.fakes["luma"]
    fake.knobs["cdn"] = fake.url + "/cdn"  # results on the channel's own host: re-hosted when done
    try:
        task_id = _luma(env)
        done = _completed(env, task_id)
    finally:
        fake.knobs.pop("cdn")
    files = f"{env.gateway.url}/files/"
    assert done["video"]["download_url"].startswith(files)
    asked = sum(r.path.endswith("/download_video_url") for r in fake.requests)
    for prefix in ("/luma", "/luma/v1"):
        answer = env.get(f"{prefix}/generations/{task_id}/download_video_url")
        assert answer.status_code == 200 and answer.json() == {"url": done["video"]["download_url"]}, answer.text
    assert sum(r.path.endswith("/download_video_url") for r in fake.requests) == asked  # served from the store
    assert httpx.get(done["video"]["download_url"]).content == luma_upstream.VIDEO


def test_download_video_url_asks_the_upstream_once_completed(env: Env) -> None:
    fake = env.fakes["luma"]
    fake.knobs["hold"] = True  # stays pending while the early request is refused
    try:
        task_id = _luma(env)
        early = env.get(f"/luma/generations/{task_id}/download_video_url")
        assert early.status_code == 400 and early.json()["detail"]["code"] == "invalid_state"
    finally:
        fake.knobs["hold"] = False
    _completed(env, task_id)  # its CDN is not the channel's host: nothing re-hosted
    upstream_id = _upstream_id(env, task_id)
    answer = env.get(f"/luma/generations/{task_id}/download_video_url")
    assert answer.status_code == 200 and answer.json() == {"url": f"{luma_upstream.CDN}/{upstream_id}-raw.mp4"}
    asked = fake.last(f"/luma/generations/{upstream_id}/download_video_url")
    assert asked.method == "GET" and asked.headers["Authorization"] == f"Bearer {luma_upstream.LUMA_KEY}"
    for response in (env.get(f"/luma/generations/{task_id}/download_video_url", BOB),
                     env.get("/luma/generations/nope/download_video_url")):
        assert response.status_code == 404 and response.json()["detail"]["code"] == "task_not_found"


# ---- Luma: file upload ---------------------------------------------------------------------------

def _upload(env: Env, url: Any, key: str = ALICE) -> httpx.Response:
    return env.post("/luma/generations/file_upload", {"url": url}, key)


def _upload_costs(env: Env) -> list[int]:
    rows = env.gateway.query("SELECT cost_micros FROM usage_logs WHERE model = 'luma_file_upload' ORDER BY id")
    return [r.cost_micros for r in rows]


def test_file_upload_is_relayed_and_billed_only_when_priced(env: Env) -> None:
    before = env.used()
    free = _upload(env, "https://example.com/cat.png")
    assert free.status_code == 200, free.text
    assert free.json()["public_url"].endswith(".jpg") and free.json()["id"].startswith("upload-")
    sent = env.fakes["luma"].last("/luma/generations/file_upload")
    assert sent.headers["Authorization"] == f"Bearer {luma_upstream.LUMA_KEY}"
    assert sent.body == b'{"url":"https://example.com/cat.png"}'
    assert wait_until(lambda: _upload_costs(env) == [0], what="the free upload's usage row")

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = env.gateway.url + "/api/prices/luma_file_upload"
    assert httpx.put(url, json={"per_request_micros": LUMA_UPLOAD}, headers=admin).status_code == 200
    try:
        assert env.post("/luma/v1/generations/file_upload", {"url": "http://example.com/dog.png"}).status_code == 200
        refused = _upload(env, "https://example.com/FAIL.png")  # relayed as the proxy said it, and free
        assert refused.status_code == 400 and refused.json() == {"detail": "could not read the image at "
                                                                           "'https://example.com/FAIL.png'"}
        assert wait_until(lambda: _upload_costs(env) == [0, LUMA_UPLOAD, 0], what="the priced uploads' rows")
        assert wait_until(lambda: env.used() == before + LUMA_UPLOAD, what="one upload charged")
    finally:
        httpx.delete(url, headers=admin)
    posted = sum(r.method == "POST" for r in env.fakes["luma"].requests)
    for bad in ("ftp://example.com/cat.png", "cat.png", None, 7):
        response = _upload(env, bad)
        assert response.status_code == 400 and response.json()["detail"]["reason"].startswith("url must be")
    assert sum(r.method == "POST" for r in env.fakes["luma"].requests) == posted  # refused before any upstream


# ---- Luma: batch query ---------------------------------------------------------------------------

def test_luma_tasks_batch_answers_own_tasks_only(env: Env) -> None:
    first, second, bobs = _luma(env, "one"), _luma(env, "two"), _luma(env, "bob's", BOB)
    answer = env.post("/luma/tasks", {"ids": [second, "nope", bobs, first]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["code"] == "success" and [t["task_id"] for t in body["data"]] == [second, first]
    dto = body["data"][1]
    assert dto["action"] == "GENERATE" and dto["data"]["id"] == first and dto["data"]["prompt"] == "one"
    assert dto["status"] in ("SUBMITTED", "IN_PROGRESS", "SUCCESS") and isinstance(dto["submit_time"], int)
    assert env.post("/luma/tasks", {"ids": [first]}, BOB).json()["data"] == []
    for bad in ({"ids": first}, {"ids": [first] * 1001}, {}):
        refused = env.post("/luma/tasks", bad)
        assert refused.status_code == 400 and "ids" in refused.json()["detail"]["reason"]


# ---- new-api's /v1/video/generations -------------------------------------------------------------

def test_video_generations_route_kling_models_to_kling(env: Env) -> None:
    before = env.used()
    response = _video(env, {"model": "kling-v1", "prompt": "a dragon", "duration": 5, "size": "1280x720",
                            "metadata": {"negative_prompt": "blur", "cfg_scale": 0.3}})
    assert response.status_code == 200, response.text
    created = response.json()
    task_id = created["id"]
    assert created["task_id"] == task_id and created["object"] == "video" and created["model"] == "kling-v1"
    assert created["status"] == "queued" and created["progress"] == 0 and created["created_at"] < 10**11
    sent = json.loads(env.fakes["kling"].last("/v1/videos/text2video").body)
    assert sent == {"model_name": "kling-v1", "prompt": "a dragon", "duration": "5", "aspect_ratio": "16:9",
                    "negative_prompt": "blur", "cfg_scale": 0.3}
    done = _video_task(env, task_id, "SUCCESS")
    assert done["task_id"] == task_id and done["platform"] == "kling" and done["progress"] == "100%"
    assert done["result_url"] == done["data"]["task_result"]["videos"][0]["url"] and done["result_url"].endswith(".mp4")
    native = env.get(f"/kling/v1/videos/text2video/{task_id}").json()["data"]  # the same task, Kling's own view
    assert native["task_status"] == "succeed"

    animated = _video(env, {"model": "kling-v1", "image": "https://example.com/a.png", "seconds": "10",
                            "mode": "pro"})
    assert animated.status_code == 200, animated.text
    assert env.fakes["kling"].last("/v1/videos/image2video").method == "POST"
    _video_task(env, animated.json()["id"], "SUCCESS")
    expected = 5 * KLING_V1_PER_S + 10 * KLING_PRO_PER_S
    assert wait_until(lambda: env.used() == before + expected, what="kling charges")


def test_video_generations_route_luma_models_to_luma(env: Env) -> None:
    before = env.used()
    response = _video(env, {"model": "luma_generation", "prompt": "a wave", "image": "https://example.com/a.png",
                            "metadata": {"loop": True, "aspect_ratio": "9:16"}})
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    sent = json.loads(env.fakes["luma"].last("/luma/generations").body)
    assert sent == {"user_prompt": "a wave", "image_url": "https://example.com/a.png", "loop": True,
                    "aspect_ratio": "9:16"}
    done = _video_task(env, task_id, "SUCCESS")
    assert done["platform"] == "luma" and done["result_url"] == done["data"]["video"]["url"]
    assert env.get(f"/luma/generations/{task_id}").json()["state"] == "completed"
    assert wait_until(lambda: env.used() == before + LUMA_GENERATION, what="luma charge")


def test_video_generation_failure_refunds_exactly_once(env: Env) -> None:
    before = env.used()
    task_id = _video(env, {"model": "kling-v1", "prompt": "FAIL"}).json()["id"]
    failed = _video_task(env, task_id, "FAILURE")
    assert failed["fail_reason"] and failed["data"]["task_status"] == "failed"
    assert wait_until(lambda: env.used() == before, what="the refund")
    assert env.charges(task_id) == [5 * KLING_V1_PER_S, -5 * KLING_V1_PER_S]


def test_video_generation_errors_and_ownership(env: Env) -> None:
    bob_before = env.used("bob")
    cases = [
        ({"prompt": "x"}, 400, "model"),
        ({"model": "kling-v1"}, 400, "prompt"),
        ({"model": "kling-v1", "prompt": "x", "metadata": "loop"}, 400, "metadata"),
        ({"model": "kling-v1", "prompt": "x", "duration": 7}, 400, "duration"),
        ({"model": "suno_music", "prompt": "x"}, 404, "model"),  # served, but not by a video channel
        ({"model": "nobody-serves-this", "prompt": "x"}, 404, "model"),
    ]
    for body, status, param in cases:
        response = _video(env, body)
        assert response.status_code == status and response.json()["error"]["param"] == param, (body, response.text)
    assert httpx.post(env.gateway.url + "/v1/video/generations", json={"model": "kling-v1"}).status_code == 401
    mine = _video(env, {"model": "kling-v1", "prompt": "mine"}).json()["id"]
    luma = _luma(env)  # any own video task is readable here, whatever route made it
    assert env.get(f"/v1/video/generations/{luma}").json()["data"]["platform"] == "luma"
    for task_id, key in ((mine, BOB), ("nope", ALICE)):
        response = env.get(f"/v1/video/generations/{task_id}", key)
        assert response.status_code == 404 and response.json()["error"]["code"] == "task_not_found"
    assert env.used("bob") == bob_before


def test_task_charges_apply_the_users_group_multiplier(env: Env) -> None:
    admin = httpx.Client(base_url=env.gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
    assert admin.post("/api/groups", json={"name": "half-price", "ratio": 0.5}).status_code == 201
    carol = admin.post("/api/users", json={"name": "carol", "group": "half-price", "balance_micros": 10_000_000})
    assert carol.status_code == 201, carol.text
    key = admin.post("/api/tokens", json={"name": "carol-key", "user_id": carol.json()["id"]}).json()["key"]
    task_id = _video(env, {"model": "kling-v1", "prompt": "a fox", "duration": 5}, key).json()["id"]
    assert env.charges(task_id) == [5 * KLING_V1_PER_S // 2]
    luma_id = env.post("/luma/generations", {"user_prompt": "a dune"}, key).json()["id"]
    assert env.charges(luma_id) == [LUMA_GENERATION // 2]
    balance = wait_until(lambda: (b := admin.get(f"/api/users/{carol.json()['id']}").json()["balance_micros"])
                         < 10_000_000 and b, what="carol's charges")
    assert balance == 10_000_000 - (5 * KLING_V1_PER_S + LUMA_GENERATION) // 2
