"""The console's endpoints: password change, dashboard stats, task gallery lists, the Stability video link
and the system page; user isolation and admin-only access."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import openai
import pytest

from polyrelay.store.models import LATENCY_BUCKETS_MS
from tests.conftest import Gateway, wait_until
from tests.fakes import (
    bfl_upstream, kling_upstream, luma_upstream, midjourney_proxy, openai_upstream, stability_video_upstream,
    suno_upstream,
)
from tests.fakes.server import FakeServer
from tests.test_admin_api import ADMIN_KEY, HI, UPSTREAM_KEY, XHR, Setup
from tests.test_task_families import BFL_KEY, _video_form

REDIS_URL = os.environ.get("POLYRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# name: (type, keys, models); the fake of each is fakes[name]
CHANNELS = {
    "openai": ("openai", [UPSTREAM_KEY], ["gpt-4o-mini", "per-call"]),
    "mj": ("midjourney", [midjourney_proxy.SECRET], ["mj_*"]),
    "stability": ("stability", list(stability_video_upstream.KEYS), ["stable-video-diffusion"]),
    "suno": ("suno", [suno_upstream.SUNO_KEY], ["suno_*"]),
    "luma": ("luma", [luma_upstream.LUMA_KEY], ["luma_*"]),
    "kling": ("kling", [kling_upstream.CHANNEL_KEY], ["kling-*"]),
    "flux": ("flux", [BFL_KEY], ["flux-*"]),
}
PRICES = {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}, "per-call": {"per_request": 0.01},
          "mj_imagine": {"per_request": 0.1}, "stable-video-diffusion": {"per_request": 0.2},
          "suno_music": {"per_request": 0.1}, "luma_generation": {"per_request": 0.4},
          "kling-v1": {"per_second": 0.028}, "kling-v1-image": {"per_image": 0.01}, "flux-pro-1.1": {"per_image": 0.04}}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers = {"openai": FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start(),
               "mj": FakeServer(midjourney_proxy.create_app()).start(),
               "stability": FakeServer(stability_video_upstream.create_app()).start(),
               "suno": FakeServer(suno_upstream.create_app()).start(),
               "luma": FakeServer(luma_upstream.create_app()).start(),
               "kling": FakeServer(kling_upstream.create_app()).start(),
               "flux": FakeServer(bfl_upstream.create_app({BFL_KEY})).start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway], fakes: dict[str, FakeServer]) -> Setup:
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "redis_url": REDIS_URL,
        # Results on a channel's own host (here: BFL's samples, on loopback) are copied to /files/.
        "files": {"rehost": True}, "allow_private_image_hosts": True,
        "tasks": {"poll_interval_s": 0.05, "lease_s": 5},
        "channels": [{"name": name, "type": type_, "base_url": fakes[name].url, "keys": keys, "models": models}
                     for name, (type_, keys, models) in CHANNELS.items()],
        "prices": PRICES,
    })
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    return Setup(gateway, admin)


def _key_of(setup: Setup, user: dict[str, Any], name: str = "") -> str:
    created = setup.admin.post("/api/tokens", json={"name": name or f"{user['name']}-key", "user_id": user["id"]})
    assert created.status_code == 201, created.text
    return created.json()["key"]


def _invalid(response: httpx.Response, code: str = "invalid_query") -> bool:
    return response.status_code == 400 and response.json()["error"]["code"] == code


# ---- password ----------------------------------------------------------------------------------

def test_password_change_keeps_this_session_and_ends_the_others(setup: Setup) -> None:
    setup.user("vic")
    here, elsewhere = setup.login("vic", "vic-password"), setup.login("vic", "vic-password")
    change = {"current_password": "vic-password", "new_password": "correct horse"}

    assert here.post("/api/me/password", json=change).status_code == 403  # no X-Requested-With: CSRF
    wrong = here.post("/api/me/password", json={**change, "current_password": "nope"}, headers=XHR)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password"
    assert _invalid(here.post("/api/me/password", json={**change, "new_password": "short"}, headers=XHR),
                    "invalid_field")
    assert _invalid(here.post("/api/me/password", json={"new_password": "long enough"}, headers=XHR), "invalid_field")
    no_user = setup.admin.post("/api/me/password", json=change)
    assert no_user.status_code == 404 and no_user.json()["error"]["code"] == "no_user"
    assert elsewhere.get("/api/me").status_code == 200  # nothing changed so far

    assert here.post("/api/me/password", json=change, headers=XHR).status_code == 204
    assert here.get("/api/me").json()["name"] == "vic"
    assert elsewhere.get("/api/me").status_code == 401
    login = setup.gateway.url + "/api/auth/login"
    assert httpx.post(login, json={"name": "vic", "password": "vic-password"}).status_code == 401
    assert httpx.post(login, json={"name": "vic", "password": "correct horse"}).status_code == 200


# ---- stats -------------------------------------------------------------------------------------

def test_stats_per_day_and_model_for_the_user_and_for_admins(setup: Setup, fakes: dict[str, FakeServer]) -> None:
    sam, uma = setup.user("sam", balance=1_000_000), setup.user("uma", balance=1_000_000)
    sdk = openai.OpenAI(base_url=setup.gateway.v1, api_key=_key_of(setup, sam), max_retries=0)
    for _ in range(3):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    fakes["openai"].knobs["fail_with"] = 400
    try:
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    finally:
        fakes["openai"].knobs.pop("fail_with")
    assert setup.chat(_key_of(setup, sam, "sam-other-key")).status_code == 200  # per-call

    as_sam, as_uma = setup.login("sam", "sam-password"), setup.login("uma", "uma-password")
    stats = wait_until(lambda: (s := as_sam.get("/api/me/stats").json())["totals"]["requests"] == 5 and s,
                       what="sam's five requests in the stats")
    today = datetime.now(timezone.utc).date()
    assert stats["days"] == [(today - timedelta(days=n)).isoformat() for n in range(13, -1, -1)]
    quiet = [0] * 13
    assert [(s["model"], s["requests"], s["errors"]) for s in stats["series"]] == [
        ("gpt-4o-mini", quiet + [4], quiet + [1]), ("per-call", quiet + [1], quiet + [0])]
    assert stats["series"][1]["cost_micros"] == quiet + [10_000]
    rows = setup.gateway.query("SELECT cost_micros, prompt_tokens, completion_tokens, latency_ms FROM usage_logs "
                               "WHERE user_id = :u", u=sam["id"])
    totals = stats["totals"]
    assert (totals["requests"], totals["errors"], totals["error_rate"]) == (5, 1, 0.2)
    assert totals["cost_micros"] == sum(r.cost_micros for r in rows) == sum(
        sum(s["cost_micros"]) for s in stats["series"])
    assert totals["prompt_tokens"] == sum(r.prompt_tokens for r in rows) >= 4 * openai_upstream.PROMPT_TOKENS
    assert totals["completion_tokens"] == sum(r.completion_tokens for r in rows) > 0
    # Estimated from the daily rollups: within the true median's latency bucket (docs/operations.md).
    median = sorted(r.latency_ms for r in rows)[2]
    bounds = (0, *LATENCY_BUCKETS_MS)
    bucket = bisect_left(LATENCY_BUCKETS_MS, median)
    assert bounds[bucket] <= totals["p50_latency_ms"] <= bounds[bucket + 1]

    # Admins see the same for one user, or everybody; nobody else sees Sam's numbers.
    assert setup.admin.get("/api/stats", params={"user_id": sam["id"]}).json() == stats
    assert setup.admin.get("/api/stats").json()["totals"]["requests"] >= 5
    assert as_sam.get("/api/me/stats", params={"days": 1, "user_id": uma["id"]}).json()["totals"] == totals
    empty = as_uma.get("/api/me/stats", params={"days": 3, "user_id": sam["id"]}).json()
    assert empty == {"days": stats["days"][-3:], "series": [], "totals": {
        "requests": 0, "errors": 0, "error_rate": 0.0, "cost_micros": 0, "prompt_tokens": 0, "completion_tokens": 0,
        "p50_latency_ms": None}}
    for days in ("0", "91", "two"):
        assert _invalid(as_sam.get("/api/me/stats", params={"days": days}))
        assert _invalid(setup.admin.get("/api/stats", params={"days": days}))
    assert _invalid(setup.admin.get("/api/stats", params={"user_id": "sam"}))


# ---- tasks -------------------------------------------------------------------------------------

def test_my_tasks_show_midjourney_media_and_buttons_to_their_owner_only(setup: Setup) -> None:
    tia, wes = setup.user("tia", balance=10_000_000), setup.user("wes", balance=10_000_000)
    key = _key_of(setup, tia)
    as_tia, as_wes = setup.login("tia", "tia-password"), setup.login("wes", "wes-password")

    def imagine(prompt: str) -> str:
        response = httpx.post(setup.gateway.url + "/mj/submit/imagine", json={"prompt": prompt},
                              headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and response.json()["code"] == 1, response.text
        return response.json()["result"]

    task_id = imagine("a red fox in the snow")
    done = wait_until(lambda: as_tia.get("/api/me/tasks", params={"status": "success"}).json()["data"],
                      what="the imagine to finish")
    task = done[0]
    assert (task["id"], task["family"], task["action"], task["status"], task["token_name"], task["prompt"]) == (
        task_id, "midjourney", "IMAGINE", "SUCCESS", "tia-key", "a red fox in the snow")
    assert task["cost_micros"] == 100_000 and task["data"]["id"] == task_id  # /v1/tasks' object underneath
    image = f"{setup.gateway.url}/mj/image/{task_id}"
    assert task["media"] == [{"kind": "image", "url": image, "thumbnail": None}] and task["data"]["imageUrl"] == image
    served = httpx.get(image)  # no key needed: what a browser's <img> does
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content.startswith(midjourney_proxy.PNG)
    labels = [b["label"] or b["emoji"] for b in task["buttons"]]
    assert labels == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    assert all(b["customId"].startswith("MJ::JOB::") and set(b) == {"customId", "label", "emoji"}
               for b in task["buttons"])

    # Another user sees none of it; admins see it for tia or for everybody.
    assert as_wes.get("/api/me/tasks").json() == {"data": [], "next_before": None}
    assert [t["id"] for t in setup.admin.get("/api/tasks", params={"user_id": tia["id"]}).json()["data"]] == [task_id]
    assert setup.admin.get("/api/tasks", params={"user_id": wes["id"]}).json()["data"] == []
    assert task_id in [t["id"] for t in setup.admin.get("/api/tasks").json()["data"]]

    # Paging by submit time, newest first, and the /v1/tasks filters.
    newer = [imagine("a blue heron"), imagine("a green frog")]
    first = as_tia.get("/api/me/tasks", params={"limit": 2}).json()
    assert [t["id"] for t in first["data"]] == newer[::-1]
    assert first["next_before"] == first["data"][-1]["submit_time"]
    rest = as_tia.get("/api/me/tasks", params={"limit": 2, "before": first["next_before"]}).json()
    assert [t["id"] for t in rest["data"]] == [task_id] and rest["next_before"] is None
    assert as_tia.get("/api/me/tasks", params={"family": "suno"}).json()["data"] == []
    assert as_tia.get("/api/me/tasks", params={"family": "midjourney", "status": "failure,cancel"}).json()["data"] == []
    for bad in ({"family": "nope"}, {"status": "DONE"}, {"limit": "0"}, {"limit": "101"}, {"before": "soon"}):
        assert _invalid(as_tia.get("/api/me/tasks", params=bad)), bad
        assert _invalid(setup.admin.get("/api/tasks", params=bad)), bad


def test_a_stability_video_plays_through_the_console_for_its_owner(setup: Setup) -> None:
    xia = setup.user("xia", balance=10_000_000)
    setup.user("yan")
    submitted = httpx.post(setup.gateway.url + "/v2beta/image-to-video",
                           headers={"Authorization": f"Bearer {_key_of(setup, xia)}"}, **_video_form())
    assert submitted.status_code == 200, submitted.text
    as_xia, as_yan = setup.login("xia", "xia-password"), setup.login("yan", "yan-password")
    task = wait_until(lambda: as_xia.get("/api/me/tasks", params={"family": "stability", "status": "SUCCESS"})
                      .json()["data"], what="the video job to finish")[0]
    link = f"/api/tasks/{submitted.json()['id']}/video"
    assert task["media"] == [{"kind": "video", "url": link, "thumbnail": None}]
    assert task["prompt"] == "" and task["buttons"] == []
    for client in (as_xia, setup.admin):
        video = client.get(link)
        assert video.status_code == 200 and video.content == stability_video_upstream.VIDEO
        assert video.headers["content-type"] == "video/mp4"
    assert as_yan.get(link).status_code == 404
    assert httpx.get(setup.gateway.url + link).status_code == 401


# What a gallery shows of each family: (submit path, body, the prompt shown, the media expected from the
# family's own task object, as (kind, url, thumbnail)).
GALLERY: dict[str, tuple[str, dict[str, Any], str, Callable[[dict[str, Any]], list[tuple[str, str, str | None]]]]] = {
    "suno": ("/suno/submit/music", {"gpt_description_prompt": "a song about rain", "mv": "chirp-v3-5"},
             "a song about rain", lambda data: [("audio", c["audio_url"], c["image_url"]) for c in data["data"]]),
    "luma": ("/luma/generations", {"user_prompt": "a cat surfing"}, "a cat surfing",
             lambda data: [("video", data["video"]["url"], data["thumbnail"]["url"])]),
    "kling": ("/kling/v1/videos/text2video", {"model_name": "kling-v1", "prompt": "a dragon"}, "a dragon",
              lambda data: [("video", v["url"], None) for v in data["task_result"]["videos"]]),
    "kling-images": ("/kling/v1/images/generations", {"prompt": "two foxes", "n": 2}, "two foxes",
                     lambda data: [("image", i["url"], None) for i in data["task_result"]["images"]]),
    "flux": ("/flux/v1/flux-pro-1.1", {"prompt": "a lighthouse"}, "a lighthouse",
             lambda data: [("image", data["result"]["sample"], None)]),
}


@pytest.mark.parametrize("case", list(GALLERY))
def test_every_task_family_shows_its_results_and_prompt(setup: Setup, case: str) -> None:
    path, body, prompt, expected = GALLERY[case]
    user = setup.user(f"gallery-{case}", balance=10_000_000)
    submitted = httpx.post(setup.gateway.url + path, json=body,
                           headers={"Authorization": f"Bearer {_key_of(setup, user)}"})
    assert submitted.status_code == 200, submitted.text
    as_user = setup.login(user["name"], f"{user['name']}-password")
    task = wait_until(lambda: as_user.get("/api/me/tasks", params={"status": "SUCCESS"}).json()["data"],
                      what=f"the {case} task to finish")[0]
    assert task["prompt"] == prompt and task["buttons"] == []
    media = [(m["kind"], m["url"], m["thumbnail"]) for m in task["media"]]
    assert media and media == expected(task["data"])
    rehosted = [url for _, url, _ in media if url.startswith(f"{setup.gateway.url}/files/")]
    assert len(rehosted) == (case == "flux")  # the other fakes' CDN hosts are not theirs: links kept
    assert all(httpx.get(url).content == bfl_upstream.SAMPLE_PNG for url in rehosted)


# ---- system and access -------------------------------------------------------------------------

def test_system_reports_the_process_and_what_it_depends_on(setup: Setup, backend: str) -> None:
    def finished() -> dict[str, Any] | None:
        system = setup.admin.get("/api/system").json()
        return system if system["tasks"]["last_round_at"] and system["tasks"]["due"] == 0 else None

    system = wait_until(finished, what="a poller round with no task due")
    assert system["version"] and system["uptime_s"] > 0
    assert system["database"]["dialect"] == backend and system["database"]["ok"] is True
    assert system["database"]["latency_ms"] > 0
    assert system["redis"]["configured"] is True and system["redis"]["ok"] is True
    assert system["redis"]["latency_ms"] > 0
    tasks = system["tasks"]
    assert tasks["poller_running"] is True and tasks["last_round_ms"] >= 0
    last_round = datetime.fromisoformat(tasks["last_round_at"])
    assert abs((datetime.now(timezone.utc) - last_round).total_seconds()) < 30
    in_db = {r.status: r.n for r in setup.gateway.query("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")}
    assert tasks["by_status"] == in_db
    assert isinstance(system["writer"]["queued"], int) and system["writer"]["queued"] >= 0
    assert system["callbacks"] == {"pending": 0}
    everyone = len(CHANNELS)
    assert system["channels"] == {"total": everyone, "enabled": everyone, "cooling_down": 0}
    stability = next(c["id"] for c in setup.admin.get("/api/channels").json()["data"] if c["name"] == "stability")
    assert setup.admin.post(f"/api/channels/{stability}/disable").status_code == 200
    try:
        assert setup.admin.get("/api/system").json()["channels"] == {
            "total": everyone, "enabled": everyone - 1, "cooling_down": 0}
    finally:
        setup.admin.post(f"/api/channels/{stability}/enable")


def test_console_admin_endpoints_refuse_users(setup: Setup) -> None:
    setup.user("zed")
    as_zed = setup.login("zed", "zed-password")
    for path in ("/api/stats", "/api/tasks", "/api/system"):
        response = as_zed.get(path)
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", path
        assert httpx.get(setup.gateway.url + path).status_code == 401
    schema = httpx.get(setup.gateway.url + "/openapi.json").json()["paths"]
    assert {"/api/me/password", "/api/me/stats", "/api/me/tasks", "/api/stats", "/api/tasks", "/api/system",
            "/api/tasks/{task_id}/video"} <= set(schema)
