"""Suno, Luma, Kling, Flux and Stability video on the task engine, end to end, plus ``/v1/tasks``.

One gateway per backend serves every family against shared wire-accurate fakes
(tests/fakes/*_upstream.py, whose jobs advance one step per poll and can fail).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from polyrelay.providers.kling import jwt_token
from tests.conftest import Gateway, wait_until
from tests.fakes import bfl_upstream, kling_upstream, luma_upstream, stability_video_upstream, suno_upstream
from tests.fakes.server import FakeServer
from tests.image_setup import png

ALICE = "sk-tasks-alice-0123456789abcdef"
BOB = "sk-tasks-bob-0123456789abcdef"
TIGHT = "sk-tasks-tight-0123456789abcdef"  # enough for one suno_music
BFL_KEY = "bfl-upstream-key"
PRICES = {"suno_music": 100_000, "suno_lyrics": 20_000, "suno_concat": 50_000, "luma_generation": 400_000,
          "luma_extend": 200_000, "flux-pro-1.1": 40_000, "stable-video-diffusion": 200_000}
KLING_V1_PER_S, KLING_PRO_PER_S, KLING_IMAGE = 28_000, 98_000, 10_000


def _config(fakes: dict[str, FakeServer]) -> dict[str, Any]:
    def channel(name: str, type_: str, keys: list[str], models: list[str]) -> dict[str, Any]:
        return {"name": name, "type": type_, "base_url": fakes[name].url, "keys": keys, "models": models}

    prices: dict[str, Any] = {name: {"per_request": micros / 1e6} for name, micros in PRICES.items()}
    prices["flux-pro-1.1"] = {"per_image": PRICES["flux-pro-1.1"] / 1e6}
    prices.update({"kling-v1": {"per_second": KLING_V1_PER_S / 1e6}, "kling-v1-pro": {"per_second": KLING_PRO_PER_S / 1e6},
                   "kling-v1-image": {"per_image": KLING_IMAGE / 1e6}})
    return {
        "tasks": {"poll_interval_s": 0.05, "notify_allow_private": True, "notify_backoff_s": 0.05, "lease_s": 5},
        "channels": [
            channel("suno", "suno", [suno_upstream.SUNO_KEY], ["suno_*"]),
            channel("luma", "luma", [luma_upstream.LUMA_KEY], ["luma_*"]),
            channel("kling", "kling", [kling_upstream.CHANNEL_KEY], ["kling-*"]),
            channel("flux", "flux", [BFL_KEY], ["flux-*"]),
            channel("stability", "stability", list(stability_video_upstream.KEYS), ["stable-video-diffusion"]),
        ],
        "tokens": [{"name": "alice", "key": ALICE, "quota_usd": 100}, {"name": "bob", "key": BOB, "quota_usd": 100},
                   {"name": "tight", "key": TIGHT, "quota_usd": 0.1}],
        "prices": prices,
    }


@dataclass
class Env:
    gateway: Gateway
    fakes: dict[str, FakeServer]
    hooks: list[dict[str, Any]]
    hook_url: str

    def post(self, path: str, body: Any = None, key: str = ALICE, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.gateway.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, **kwargs)

    def get(self, path: str, key: str = ALICE, **headers: str) -> httpx.Response:
        return httpx.get(self.gateway.url + path, headers={"Authorization": f"Bearer {key}", **headers})

    def task(self, task_id: str, key: str = ALICE) -> dict[str, Any]:
        response = self.get(f"/v1/tasks/{task_id}", key)
        assert response.status_code == 200, response.text
        return response.json()

    def until(self, task_id: str, status: str, key: str = ALICE) -> dict[str, Any]:
        return wait_until(lambda: (t := self.task(task_id, key))["status"] == status and t, 15, f"task {status}")

    def used(self, name: str = "alice") -> int:
        return self.gateway.query("SELECT used_micros FROM tokens WHERE name = :n", n=name)[0].used_micros

    def charges(self, task_id: str) -> list[int]:
        rows = self.gateway.query("SELECT cost_micros FROM usage_logs WHERE request_id LIKE :p ORDER BY id",
                                  p=f"task-{task_id}%")
        return [r.cost_micros for r in rows]

    def callbacks(self, id_field: str, task_id: str, status_field: str, final: str) -> list[str]:
        """The statuses a task's callbacks carried, once the final one arrived."""
        def seen() -> list[str]:
            return [h[status_field] for h in self.hooks if h.get(id_field) == task_id]
        return wait_until(lambda: (s := seen()) and s[-1] == final and s, what=f"the {final} callback")


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers = {"suno": FakeServer(suno_upstream.create_app()).start(),
               "luma": FakeServer(luma_upstream.create_app()).start(),
               "kling": FakeServer(kling_upstream.create_app()).start(),
               "flux": FakeServer(bfl_upstream.create_app({BFL_KEY})).start(),
               "stability": FakeServer(stability_video_upstream.create_app()).start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[FakeServer, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = FakeServer(app).start()
    yield server, received
    server.stop()


@pytest.fixture(scope="module")
def env(gateway_factory: Callable[..., Gateway], fakes: dict[str, FakeServer],
        receiver: tuple[FakeServer, list[dict[str, Any]]]) -> Env:
    server, received = receiver
    return Env(gateway_factory(_config(fakes)), fakes, received, server.url + "/hook")


def _video_form(seed: str = "7") -> dict[str, Any]:
    return {"files": {"image": ("frame.png", png(1024, 576), "image/png")},
            "data": {"seed": seed, "cfg_scale": "1.8", "motion_bucket_id": "127"}}


def _in_order(statuses: list[str], order: list[str]) -> bool:
    ranks = [order.index(s) for s in statuses]
    return ranks == sorted(ranks)


# ---- one flow per family ------------------------------------------------------------------------

def test_suno_music_lyrics_concat_and_envelope(env: Env) -> None:
    before = env.used()
    response = env.post("/suno/submit/music", {"prompt": "[Verse] hello", "mv": "chirp-v3-5", "tags": "pop",
                                               "title": "Hi", "notify_hook": env.hook_url})
    assert response.status_code == 200 and response.json()["code"] == "success", response.text
    music = response.json()["data"]
    sent = env.fakes["suno"].last("/suno/submit/music")
    assert sent.headers["Authorization"] == f"Bearer {suno_upstream.SUNO_KEY}" and b"notify_hook" not in sent.body
    dto = wait_until(lambda: (d := env.get(f"/suno/fetch/{music}").json()["data"])["status"] == "SUCCESS" and d,
                     what="music SUCCESS")
    assert dto["task_id"] == music and dto["action"] == "MUSIC" and dto["progress"] == "100%"
    assert [s["status"] for s in dto["data"]] == ["complete", "complete"] and dto["data"][0]["audio_url"]
    assert dto["submit_time"] <= dto["finish_time"] and dto["submit_time"] < 10**11  # Unix seconds
    order = ["SUBMITTED", "QUEUED", "IN_PROGRESS", "SUCCESS"]
    seen = env.callbacks("task_id", music, "status", "SUCCESS")
    assert "IN_PROGRESS" in seen and _in_order(seen, order), seen

    lyrics = env.post("/suno/submit/lyrics", {"prompt": "a song about rain"}).json()["data"]
    clip = dto["data"][0]["id"]
    concat = env.post("/suno/submit/concat", {"clip_id": clip, "is_infill": False, "task_id": music}).json()["data"]
    assert b'"task_id":"' + music.encode() not in env.fakes["suno"].last("/suno/submit/concat").body
    envelope = env.post("/suno/v1/music", {"custom_mode": True, "input": {"prompt": "x", "tags": "rock"}})
    assert envelope.json()["code"] == 200, envelope.text
    via_envelope = envelope.json()["data"]["task_id"]
    assert b'"mv":"chirp-v3-0"' in env.fakes["suno"].last("/suno/submit/music").body
    for task_id in (lyrics, concat, via_envelope):
        env.until(task_id, "SUCCESS")
    listed = env.post("/suno/fetch", {"ids": [lyrics, "nope", concat]}).json()["data"]
    assert [d["task_id"] for d in listed] == [lyrics, concat] and listed[0]["data"]["text"]
    too_many = env.post("/suno/fetch", {"ids": [lyrics] * 1001})
    assert too_many.status_code == 400 and "at most 1000" in too_many.text  # refused, never silently cut
    assert env.get(f"/suno/v1/music/{via_envelope}").json()["data"]["status"] == "SUCCESS"
    expected = 2 * PRICES["suno_music"] + PRICES["suno_lyrics"] + PRICES["suno_concat"]
    assert wait_until(lambda: env.used() == before + expected, what="suno charges")


def test_luma_generate_then_extend(env: Env) -> None:
    before = env.used()
    env.fakes["luma"].knobs["hold"] = True  # keep the job unfinished until the early extend was refused
    try:
        response = env.post("/luma/generations", {"user_prompt": "a cat surfing", "aspect_ratio": "16:9",
                                                  "expand_prompt": True, "notify_hook": env.hook_url})
        assert response.status_code == 200, response.text
        generation = response.json()
        assert generation["state"] == "pending" and generation["prompt"] == "a cat surfing"
        task_id = generation["id"]
        early = env.post(f"/luma/generations/{task_id}/extend", {"user_prompt": "too soon"})
        assert early.status_code == 400 and early.json()["detail"]["code"] == "invalid_state"  # relayed, not charged
    finally:
        env.fakes["luma"].knobs["hold"] = False
    done = wait_until(lambda: (g := env.get(f"/luma/generations/{task_id}").json())["state"] == "completed" and g,
                      what="completed")
    assert done["id"] == task_id and done["video"]["url"].endswith(".mp4") and done["thumbnail"]["url"]
    upstream_id = env.gateway.query("SELECT upstream_id FROM tasks WHERE id = :i", i=task_id)[0].upstream_id
    extended = env.post(f"/luma/v1/generations/{task_id}/extend", {"user_prompt": "and then a wave"})
    assert extended.status_code == 200, extended.text
    # The poller may query the fake meanwhile, so look for the extend call by its path.
    assert env.fakes["luma"].last(f"/luma/generations/{upstream_id}/extend").method == "POST"
    extension = wait_until(
        lambda: (g := env.get(f"/luma/generations/{extended.json()['id']}").json())["state"] == "completed" and g,
        what="the extension")
    assert extension["video"]["download_url"]
    assert "processing" in env.callbacks("id", task_id, "state", "completed")
    assert wait_until(lambda: env.used() == before + PRICES["luma_generation"] + PRICES["luma_extend"],
                      what="luma charges")


def test_kling_videos_and_images_with_jwt(env: Env) -> None:
    before = env.used()
    response = env.post("/kling/v1/videos/text2video", {"model_name": "kling-v1", "prompt": "a dragon", "mode": "pro",
                                                        "duration": "10", "callback_url": env.hook_url})
    body = response.json()
    assert response.status_code == 200 and body["code"] == 0, response.text
    video = body["data"]["task_id"]
    assert body["data"]["task_status"] == "submitted"
    assert kling_upstream.valid_token(env.fakes["kling"].last("/v1/videos/text2video").headers["Authorization"])
    done = wait_until(lambda: (d := env.get(f"/kling/v1/videos/text2video/{video}").json()["data"])["task_status"]
                      == "succeed" and d, what="video succeed")
    assert done["task_id"] == video and done["task_result"]["videos"][0]["url"].endswith(".mp4")
    wrong_path = env.get(f"/kling/v1/videos/image2video/{video}")
    assert wrong_path.status_code == 404 and wrong_path.json()["code"] == 1203
    image = env.post("/kling/v1/images/generations", {"prompt": "a fox", "n": 2}).json()["data"]["task_id"]
    i2v = env.post("/kling/v1/videos/image2video", {"image": "https://example.com/a.png"}).json()["data"]["task_id"]
    images = wait_until(lambda: (d := env.get(f"/kling/v1/images/generations/{image}").json()["data"])["task_status"]
                        == "succeed" and d, what="images succeed")
    assert len(images["task_result"]["images"]) == 2
    env.until(i2v, "SUCCESS")
    assert "processing" in env.callbacks("task_id", video, "task_status", "succeed")
    expected = 10 * KLING_PRO_PER_S + 2 * KLING_IMAGE + 5 * KLING_V1_PER_S
    assert wait_until(lambda: env.used() == before + expected, what="kling charges")
    missing = env.post("/kling/v1/videos/text2video", {"prompt": ""})
    assert missing.status_code == 400 and missing.json()["code"] == 1200


def test_kling_jwt_claims() -> None:
    token = jwt_token(kling_upstream.CHANNEL_KEY)
    assert kling_upstream.valid_token(f"Bearer {token}")
    assert not kling_upstream.valid_token(f"Bearer {jwt_token('kling-access|wrong-secret')}")
    assert not kling_upstream.valid_token(f"Bearer {jwt_token(kling_upstream.CHANNEL_KEY, now=1_000_000)}")  # expired


def test_flux_native_shares_the_bfl_adaptor(env: Env) -> None:
    before = env.used()
    response = env.post("/flux/v1/flux-pro-1.1", {"prompt": "a lighthouse", "width": 1024, "height": 768,
                                                  "webhook_url": env.hook_url})
    assert response.status_code == 200, response.text
    task_id, polling_url = response.json()["id"], response.json()["polling_url"]
    assert polling_url == f"{env.gateway.url}/flux/v1/get_result?id={task_id}"
    sent = env.fakes["flux"].last("/v1/flux-pro-1.1")
    assert sent.headers["x-key"] == BFL_KEY and b"webhook_url" not in sent.body
    result = wait_until(lambda: (r := env.get(f"/flux/v1/get_result?id={task_id}").json())["status"] == "Ready" and r,
                        what="Ready")
    assert result["id"] == task_id and result["result"]["sample"].endswith(".png")
    unknown = env.get("/flux/v1/get_result?id=nope")
    assert unknown.status_code == 404 and unknown.json()["status"] == "Task not found"
    assert wait_until(lambda: env.used() == before + PRICES["flux-pro-1.1"], what="flux charge")
    refused = env.post("/flux/v1/flux-pro-1.1", {"width": 1024})  # BFL's 422 is relayed as it came
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_stability_video_polls_and_streams_with_the_submitting_key(env: Env) -> None:
    before = env.used()
    fake = env.fakes["stability"]
    fake.knobs["hold"] = True
    try:
        ids = []
        for _ in range(2):  # the channel's two keys take turns; each result is readable only with its own key
            response = httpx.post(env.gateway.url + "/v2beta/image-to-video",
                                  headers={"Authorization": f"Bearer {ALICE}"}, **_video_form())
            assert response.status_code == 200, response.text
            ids.append(response.json()["id"])
        assert {r.headers["Authorization"] for r in fake.requests if r.method == "POST"} >= {
            f"Bearer {k}" for k in stability_video_upstream.KEYS}
        pending = env.get(f"/v2beta/image-to-video/result/{ids[0]}")
        assert pending.status_code == 202 and pending.json() == {"id": ids[0], "status": "in-progress"}
    finally:
        fake.knobs["hold"] = False
    for task_id in ids:
        env.until(task_id, "SUCCESS")
    video = env.get(f"/v2beta/image-to-video/result/{ids[0]}", accept="video/*")
    assert video.status_code == 200 and video.content == stability_video_upstream.VIDEO
    assert video.headers["content-type"] == "video/mp4" and video.headers["finish-reason"] == "SUCCESS"
    as_json = env.get(f"/v2beta/image-to-video/result/{ids[1]}", accept="application/json")
    assert as_json.status_code == 200 and as_json.json()["finish_reason"] == "SUCCESS"
    assert wait_until(lambda: env.used() == before + 2 * PRICES["stable-video-diffusion"], what="video charges")
    no_image = httpx.post(env.gateway.url + "/v2beta/image-to-video", headers={"Authorization": f"Bearer {ALICE}"},
                          data={"seed": "1"}, files={"other": ("x.txt", b"x", "text/plain")})
    assert no_image.status_code == 400 and no_image.json()["errors"]


# ---- failure and refund, for every family -------------------------------------------------------

def _submit_failing(env: Env, family: str, key: str = ALICE) -> tuple[str, int]:
    """A job the fake will fail; (polyrelay id, its price)."""
    if family == "suno":
        return env.post("/suno/submit/music", {"prompt": "FAIL"}, key).json()["data"], PRICES["suno_music"]
    if family == "luma":
        return env.post("/luma/generations", {"user_prompt": "FAIL"}, key).json()["id"], PRICES["luma_generation"]
    if family == "kling":
        body = env.post("/kling/v1/videos/text2video", {"prompt": "FAIL"}, key).json()
        return body["data"]["task_id"], 5 * KLING_V1_PER_S
    if family == "flux":
        return env.post("/flux/v1/flux-pro-1.1", {"prompt": "fail-me"}, key).json()["id"], PRICES["flux-pro-1.1"]
    response = httpx.post(env.gateway.url + "/v2beta/image-to-video", headers={"Authorization": f"Bearer {key}"},
                          **_video_form(seed="13"))
    return response.json()["id"], PRICES["stable-video-diffusion"]


def _native_failure(env: Env, family: str, task_id: str) -> None:
    """The failure as the family's own client sees it."""
    if family == "suno":
        assert env.get(f"/suno/fetch/{task_id}").json()["data"]["fail_reason"]
    elif family == "luma":
        assert env.get(f"/luma/generations/{task_id}").json()["state"] == "failed"
    elif family == "kling":
        data = env.get(f"/kling/v1/videos/text2video/{task_id}").json()["data"]
        assert data["task_status"] == "failed" and data["task_status_msg"]
    elif family == "flux":
        assert env.get(f"/flux/v1/get_result?id={task_id}").json()["status"] == "Error"
    else:
        failed = env.get(f"/v2beta/image-to-video/result/{task_id}")
        assert failed.status_code == 400 and failed.json()["errors"] == ["the image could not be animated"]


@pytest.mark.parametrize("family", ["suno", "luma", "kling", "flux", "stability"])
def test_failure_refunds_exactly_once(env: Env, family: str) -> None:
    before = env.used()
    task_id, price = _submit_failing(env, family)
    task = env.until(task_id, "FAILURE")
    assert task["family"] == family and task["fail_reason"]
    _native_failure(env, family, task_id)
    assert wait_until(lambda: env.used() == before, what="the refund")
    assert env.charges(task_id) == [price, -price]
    assert env.task(task_id)["settlement"] == "refunded"


def test_quota_is_held_by_a_task_and_returns_on_refund(env: Env) -> None:
    env.fakes["suno"].knobs["hold"] = True  # the task must not fail (and refund) before the second submit
    try:
        task_id = env.post("/suno/submit/music", {"prompt": "FAIL"}, TIGHT).json()["data"]
        refused = env.post("/suno/submit/music", {"prompt": "another"}, TIGHT)
        assert refused.status_code == 429 and refused.json()["code"] == "insufficient_quota"
    finally:
        env.fakes["suno"].knobs["hold"] = False
    env.until(task_id, "FAILURE", TIGHT)
    assert wait_until(lambda: env.used("tight") == 0, what="the refund")
    again = env.post("/suno/submit/music", {"prompt": "another"}, TIGHT)  # the refund reached memory too
    assert again.status_code == 200, again.text


# ---- ownership and the polyrelay-format query ---------------------------------------------------

def test_ownership_isolation(env: Env) -> None:
    suno = env.post("/suno/submit/lyrics", {"prompt": "mine"}).json()["data"]
    luma = env.post("/luma/generations", {"user_prompt": "mine"}).json()["id"]
    kling = env.post("/kling/v1/videos/text2video", {"prompt": "mine"}).json()["data"]["task_id"]
    flux = env.post("/flux/v1/flux-pro-1.1", {"prompt": "mine"}).json()["id"]
    video = httpx.post(env.gateway.url + "/v2beta/image-to-video", headers={"Authorization": f"Bearer {ALICE}"},
                       **_video_form()).json()["id"]
    checks = [
        (env.get(f"/suno/fetch/{suno}", BOB), lambda b: b["code"] == "task_not_found"),
        (env.get(f"/luma/generations/{luma}", BOB), lambda b: b["detail"]["code"] == "task_not_found"),
        (env.post(f"/luma/generations/{luma}/extend", {"user_prompt": "x"}, BOB), lambda b: "detail" in b),
        (env.get(f"/kling/v1/videos/text2video/{kling}", BOB), lambda b: b["code"] == 1203),
        (env.get(f"/flux/v1/get_result?id={flux}", BOB), lambda b: b["status"] == "Task not found"),
        (env.get(f"/v2beta/image-to-video/result/{video}", BOB), lambda b: b["errors"]),
        (env.post("/suno/submit/music", {"prompt": "x", "continue_clip_id": "c", "task_id": suno}, BOB),
         lambda b: b["code"] == "task_not_found"),
    ] + [(env.get(f"/v1/tasks/{i}", BOB), lambda b: b["error"]["code"] == "task_not_found")
         for i in (suno, luma, kling, flux, video)]
    for response, shape in checks:
        assert response.status_code == 404 and shape(response.json()), (response.request.url, response.text)
    assert env.post("/suno/fetch", {"ids": [suno]}, BOB).json()["data"] == []
    assert not {suno, luma, kling, flux, video} & {t["id"] for t in env.get("/v1/tasks?limit=100", BOB).json()["data"]}
    assert env.used("bob") == 0


def test_v1_tasks_query(env: Env) -> None:
    task_id = env.post("/suno/submit/lyrics", {"prompt": "query me"}).json()["data"]
    task = env.until(task_id, "SUCCESS")
    assert task["object"] == "task" and task["family"] == "suno" and task["model"] == "suno_lyrics"
    assert task["data"]["task_id"] == task_id and task["data"]["status"] == "SUCCESS"  # the family's own object
    assert task["cost_micros"] == PRICES["suno_lyrics"] and task["settlement"] == "kept"
    listed = env.get("/v1/tasks?family=suno&status=success,failure&limit=100").json()
    assert task_id in {t["id"] for t in listed["data"]}
    assert {t["family"] for t in listed["data"]} == {"suno"}
    assert {t["status"] for t in listed["data"]} <= {"SUCCESS", "FAILURE"}
    page = env.get("/v1/tasks?limit=1").json()
    assert len(page["data"]) == 1 and page["has_more"] is True
    older = env.get(f"/v1/tasks?limit=1&before={page['data'][0]['submit_time']}").json()["data"]
    assert older and older[0]["submit_time"] <= page["data"][0]["submit_time"] and older[0]["id"] != page["data"][0]["id"]
    assert env.get("/v1/tasks?family=nope").status_code == 400
    bad = env.get("/v1/tasks?status=DONE")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
    assert httpx.get(env.gateway.url + "/v1/tasks").status_code == 401
