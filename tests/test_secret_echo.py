"""No upstream secret reaches a caller, a usage row, a task or a log, for any family (issue 14).

Every fake upstream here can echo the credential it received, as careless real ones do:
exact, lower-cased, upper-cased and as ``Bearer <key>`` (Kling: the JWT minted from the key,
and the access key inside it), in its own error format and with a status that is not a
failover status, so the echo reaches the caller through the family's relayed refusal; and
asynchronous tasks can fail with a reason that echoes it. After each family's calls, the
channel keys (in any case) and every JWT sent must appear nowhere a person can read: the
caller's response bodies and headers, every column of ``usage_logs`` and ``tasks``,
``GET /api/me/logs`` and ``/api/me/tasks`` of the caller's user, and the gateway's log file.
One gateway per backend serves every family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import (
    anthropic_upstream, bfl_upstream, gemini_upstream, ideogram_upstream, kling_upstream, luma_upstream,
    midjourney_proxy, openai_upstream, recraft_upstream, stability_upstream, stability_video_upstream,
    suno_upstream,
)
from tests.fakes.server import FakeServer
from tests.image_setup import png

CALLER = "sk-echo-caller-0123456789abcdef"
USER, PASSWORD = "echo-user", "echo-user-password"
ECHO = "invalid api key"  # the start of every echoing refusal (tests.fakes.echo)
# Channel keys of the fakes that take any key they are given: long, so a leak cannot hide in a hint.
KEYS = {name: f"sk-UPSTREAM-{name}-0123456789abcdef" for name in
        ("openai", "anthropic", "gemini", "ideogram", "stability", "recraft", "bfl")}
KEYS.update(suno=suno_upstream.SUNO_KEY, luma=luma_upstream.LUMA_KEY, midjourney=midjourney_proxy.SECRET,
            kling=kling_upstream.CHANNEL_KEY, video=stability_video_upstream.KEYS[0])
_APPS: dict[str, Callable[[], Any]] = {
    "openai": lambda: openai_upstream.create_app({KEYS["openai"]}),
    "anthropic": lambda: anthropic_upstream.create_app({KEYS["anthropic"]}),
    "gemini": lambda: gemini_upstream.create_app({KEYS["gemini"]}),
    "ideogram": lambda: ideogram_upstream.create_app({KEYS["ideogram"]}),
    "stability": lambda: stability_upstream.create_app({KEYS["stability"]}),
    "recraft": lambda: recraft_upstream.create_app({KEYS["recraft"]}),
    "bfl": lambda: bfl_upstream.create_app({KEYS["bfl"]}),
    "suno": suno_upstream.create_app,
    "luma": luma_upstream.create_app,
    "midjourney": midjourney_proxy.create_app,
    "kling": kling_upstream.create_app,
    "video": stability_video_upstream.create_app,
}
_CHANNELS = {  # fake -> (channel type, models)
    "openai": ("openai", ["gpt-4o-mini"]), "anthropic": ("anthropic", ["claude-3-5-haiku"]),
    "gemini": ("gemini", ["gemini-1.5-flash"]), "ideogram": ("ideogram", ["ideogram-*"]),
    "stability": ("stability", ["stable-image-*", "stable-diffusion-*", "sd3*"]), "recraft": ("recraft", ["recraftv3"]),
    "bfl": ("flux", ["flux-*"]), "suno": ("suno", ["suno_*"]), "luma": ("luma", ["luma_*"]),
    "midjourney": ("midjourney", ["mj_*"]), "kling": ("kling", ["kling-*"]),
    "video": ("stability", ["stable-video-diffusion"]),
}


def _config(fakes: dict[str, FakeServer]) -> dict[str, Any]:
    return {
        "tasks": {"poll_interval_s": 0.05, "lease_s": 5},
        "allow_private_image_hosts": True,  # Luma's file_upload may name the loopback fake
        "channels": [{"name": name, "type": type_, "base_url": fakes[name].url, "keys": [KEYS[name]], "models": models,
                      **({"options": {"poll_interval_s": 0.01, "poll_timeout_s": 10}} if name == "bfl" else {})}
                     for name, (type_, models) in _CHANNELS.items()],
        "users": [{"name": USER, "password": PASSWORD, "unlimited": True}],
        "tokens": [{"name": "echo-key", "key": CALLER, "user": USER}],
        "prices": {"default": {"per_request": 0.001}},
    }


@dataclass
class Env:
    gateway: Gateway
    fakes: dict[str, FakeServer]
    me: httpx.Client  # the caller's user, logged in to the console's REST API

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.gateway.url + path, json=body, headers={"Authorization": f"Bearer {CALLER}"},
                          timeout=30, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.gateway.url + path, headers={"Authorization": f"Bearer {CALLER}"}, timeout=30)

    def secrets(self) -> list[str]:
        """Every channel key, both halves of Kling's, and every JWT the Kling fake was sent."""
        jwts = [r.headers.get("Authorization", "").removeprefix("Bearer ") for r in self.fakes["kling"].requests]
        return [*KEYS.values(), kling_upstream.ACCESS_KEY, kling_upstream.SECRET_KEY, *filter(None, jwts)]

    def refusal_row(self, model: str) -> Any:
        """The usage row of the latest refused call for ``model``, once the batching writer flushed it."""
        rows = wait_until(lambda: self.gateway.query(
            "SELECT * FROM usage_logs WHERE model = :m AND status_code >= 400 ORDER BY id DESC", m=model),
            what=f"the usage row of a refused {model} call")
        return rows[0]

    def failed_task(self, task_id: str) -> dict[str, Any]:
        """polyrelay's task object once the poller saw the upstream fail it."""
        def failed() -> dict[str, Any] | None:
            task = self.get(f"/v1/tasks/{task_id}").json()
            return task if task["status"] == "FAILURE" else None
        return wait_until(failed, 15, f"task {task_id} to fail")

    def table(self, name: str) -> str:
        """Every column of every row of ``name``, in full (a Row's repr cuts long values short)."""
        return "\n".join(" | ".join(map(str, row)) for row in self.gateway.query(f"SELECT * FROM {name}"))

    def assert_nowhere(self, *responses: httpx.Response) -> None:
        """No secret, in any case, in what the caller got nor anywhere the gateway stores or logs."""
        places = {f"the answer to {r.request.method} {r.request.url.path}": f"{r.headers}\n{r.text}" for r in responses}
        places["usage_logs"] = self.table("usage_logs")
        places["tasks"] = self.table("tasks")
        places["/api/me/logs"] = self.me.get("/api/me/logs", params={"limit": 500}).text
        places["/api/me/tasks"] = self.me.get("/api/me/tasks").text
        places["the gateway's log"] = self.gateway.logs()
        for place, text in places.items():
            for secret in self.secrets():
                assert secret.lower() not in text.lower(), f"{secret!r} leaked into {place}:\n{text[:3000]}"


@pytest.fixture(scope="module")
def env(gateway_factory: Callable[..., Gateway]) -> Iterator[Env]:
    fakes = {name: FakeServer(app()).start() for name, app in _APPS.items()}
    try:
        gateway = gateway_factory(_config(fakes))
        with httpx.Client(base_url=gateway.url, timeout=20) as me:
            assert me.post("/api/auth/login", json={"name": USER, "password": PASSWORD}).status_code == 200
            yield Env(gateway, fakes, me)
    finally:
        for fake in fakes.values():
            fake.stop()


@contextmanager
def knob(fake: FakeServer, name: str, value: Any = True) -> Iterator[None]:
    fake.knobs[name] = value
    try:
        yield
    finally:
        fake.knobs.pop(name, None)


def _relayed(response: httpx.Response, status: int) -> httpx.Response:
    """``response`` is the upstream's echoing refusal, relayed with ``status`` (scrubbed, not swallowed)."""
    assert response.status_code == status, response.text
    assert ECHO in response.text.lower(), response.text
    return response


# ---- synchronous families ------------------------------------------------------------------------

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def test_openai_chat_refusals_json_and_streamed(env: Env) -> None:
    with knob(env.fakes["openai"], "echo", 400):
        answer = _relayed(env.post("/v1/chat/completions", CHAT), 400)
        streamed = _relayed(env.post("/v1/chat/completions", {**CHAT, "stream": True}), 400)
    assert answer.json()["error"]["code"] == "invalid_api_key"
    assert "sk-UPS...cdef" in answer.json()["error"]["message"]  # the hint says which key, the key stays ours
    env.refusal_row("gpt-4o-mini")
    env.assert_nowhere(answer, streamed)


def test_an_error_event_inside_an_openai_stream(env: Env) -> None:
    with knob(env.fakes["openai"], "echo_in_stream"):
        streamed = env.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert '"error"' in streamed.text and ECHO in streamed.text.lower(), streamed.text
    env.gateway.usage_row(streamed.headers["x-request-id"])
    env.assert_nowhere(streamed)


def test_an_openai_refusal_answered_with_http_200(env: Env) -> None:
    key = KEYS["openai"]
    refusal = {"error": {"message": f"invalid api key {key.lower()} (Bearer {key.upper()})", "type": "auth_error"}}
    with knob(env.fakes["openai"], "reply_with", ("application/json", orjson.dumps(refusal))):
        answer = _relayed(env.post("/v1/chat/completions", CHAT), 200)
    env.gateway.usage_row(answer.headers["x-request-id"])
    env.assert_nowhere(answer)


def test_anthropic_messages_refusal(env: Env) -> None:
    body = {"model": "claude-3-5-haiku", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    with knob(env.fakes["anthropic"], "echo", 400):
        answer = _relayed(env.post("/v1/messages", body), 400)
        streamed = _relayed(env.post("/v1/messages", {**body, "stream": True}), 400)
    assert answer.json()["type"] == "error"
    env.refusal_row("claude-3-5-haiku")
    env.assert_nowhere(answer, streamed)


def test_gemini_native_refusal(env: Env) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    with knob(env.fakes["gemini"], "echo", 400):
        answer = _relayed(env.post("/v1beta/models/gemini-1.5-flash:generateContent", body), 400)
        streamed = _relayed(env.post("/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse", body), 400)
    assert answer.json()["error"]["code"] == 400
    env.refusal_row("gemini-1.5-flash")
    env.assert_nowhere(answer, streamed)


@pytest.mark.parametrize(("fake", "model", "path", "request_kwargs"), [
    ("ideogram", "ideogram-V_2", "/ideogram/v1/generate", {"json": {"image_request": {"prompt": "a fox"}}}),
    ("stability", "stable-image-core", "/v2beta/stable-image/generate/core", {"files": {"prompt": (None, "a fox")}}),
    ("stability", "stable-diffusion-v1-6", "/v1/generation/stable-diffusion-v1-6/text-to-image",
     {"json": {"text_prompts": [{"text": "a fox"}]}}),
    ("recraft", "recraftv3", "/recraft/v1/images/generations", {"json": {"prompt": "a fox"}}),
    ("recraft", "recraftv3", "/v1/images/generations", {"json": {"model": "recraftv3", "prompt": "a fox"}}),
    ("bfl", "flux-pro-1.1", "/v1/images/generations", {"json": {"model": "flux-pro-1.1", "prompt": "a fox"}}),
    ("stability", "sd3-large", "/v1/images/generations", {"json": {"model": "sd3-large", "prompt": "a fox"}}),
], ids=["ideogram", "stability-v2beta", "stability-v1", "recraft", "recraft-alias", "flux-alias", "stability-alias"])
def test_image_refusals(env: Env, fake: str, model: str, path: str, request_kwargs: dict[str, Any]) -> None:
    with knob(env.fakes[fake], "echo", 422):
        answer = httpx.post(env.gateway.url + path, headers={"Authorization": f"Bearer {CALLER}"}, timeout=30,
                            **request_kwargs)
    _relayed(answer, 422)
    env.refusal_row(model)
    env.assert_nowhere(answer)


# ---- task families: refused submits and failed tasks ---------------------------------------------

def test_midjourney_code_4_and_a_failed_tasks_reason(env: Env) -> None:
    mj = env.fakes["midjourney"]
    with knob(mj, "echo", 200):
        refused = env.post("/mj/submit/imagine", {"prompt": "a cat"})
    assert refused.status_code == 200 and refused.json()["code"] == 4, refused.text
    assert ECHO in refused.json()["description"].lower()
    env.refusal_row("mj_imagine")
    with knob(mj, "echo_fail"):
        submitted = env.post("/mj/submit/imagine", {"prompt": "a dog"})
    task_id = submitted.json()["result"]
    task = env.failed_task(task_id)
    assert ECHO in task["fail_reason"].lower() and ECHO in task["data"]["failReason"].lower()
    fetched = env.get(f"/mj/task/{task_id}/fetch")
    assert fetched.json()["status"] == "FAILURE"
    env.assert_nowhere(refused, submitted, fetched, env.get(f"/v1/tasks/{task_id}"))


def test_suno_refusal_and_a_failed_tasks_reason(env: Env) -> None:
    suno = env.fakes["suno"]
    with knob(suno, "echo", 400):
        refused = _relayed(env.post("/suno/submit/music", {"gpt_description_prompt": "a song"}), 400)
    env.refusal_row("suno_music")
    with knob(suno, "echo_fail"):
        submitted = env.post("/suno/submit/music", {"gpt_description_prompt": "another song"})
    task_id = submitted.json()["data"]
    assert ECHO in env.failed_task(task_id)["fail_reason"].lower()
    fetched = env.post("/suno/fetch", {"ids": [task_id]})
    assert fetched.json()["data"][0]["status"] == "FAILURE"
    env.assert_nowhere(refused, submitted, fetched, env.get(f"/v1/tasks/{task_id}"))


def test_luma_generation_and_file_upload_refusals_and_a_failed_tasks_reason(env: Env) -> None:
    luma = env.fakes["luma"]
    with knob(luma, "echo", 400):
        refused = _relayed(env.post("/luma/generations", {"user_prompt": "a wave"}), 400)
        upload = _relayed(env.post("/luma/generations/file_upload", {"url": f"{luma.url}/cdn/cat.png"}), 400)
    env.refusal_row("luma_generation")
    env.refusal_row("luma_file_upload")
    with knob(luma, "echo_fail"):
        submitted = env.post("/luma/generations", {"user_prompt": "a wave"})
    task_id = submitted.json()["id"]
    assert ECHO in env.failed_task(task_id)["fail_reason"].lower()
    fetched = env.get(f"/luma/generations/{task_id}")
    assert fetched.json()["state"] == "failed" and ECHO in fetched.json()["failure_reason"].lower()
    env.assert_nowhere(refused, upload, submitted, fetched, env.get(f"/v1/tasks/{task_id}"))


def test_kling_and_video_generations_refusals_and_a_failed_tasks_reason(env: Env) -> None:
    kling = env.fakes["kling"]
    with knob(kling, "echo", 400):
        refused = _relayed(env.post("/kling/v1/videos/text2video", {"model_name": "kling-v1", "prompt": "a dragon"}), 400)
        video = _relayed(env.post("/v1/video/generations", {"model": "kling-v1", "prompt": "a dragon"}), 400)
    assert video.json()["error"]["message"]  # OpenAI's shape on /v1
    env.refusal_row("kling-v1")
    with knob(kling, "echo_fail"):
        submitted = env.post("/kling/v1/videos/text2video", {"model_name": "kling-v1", "prompt": "a phoenix"})
    task_id = submitted.json()["data"]["task_id"]
    assert ECHO in env.failed_task(task_id)["fail_reason"].lower()
    fetched = env.get(f"/kling/v1/videos/text2video/{task_id}")
    assert fetched.json()["data"]["task_status"] == "failed"
    assert sum(r.headers.get("Authorization", "").startswith("Bearer eyJ") for r in kling.requests) >= 3
    env.assert_nowhere(refused, video, submitted, fetched, env.get(f"/v1/tasks/{task_id}"),
                       env.get(f"/v1/video/generations/{task_id}"))


def test_stability_image_to_video_refusal_and_a_failed_jobs_error(env: Env) -> None:
    form = {"files": {"image": ("frame.png", png(1024, 576), "image/png")}, "data": {"seed": "7"}}
    video = env.fakes["video"]
    with knob(video, "echo", 400):
        refused = _relayed(httpx.post(env.gateway.url + "/v2beta/image-to-video",
                                      headers={"Authorization": f"Bearer {CALLER}"}, timeout=30, **form), 400)
    env.refusal_row("stable-video-diffusion")
    with knob(video, "echo_fail"):
        submitted = httpx.post(env.gateway.url + "/v2beta/image-to-video", headers={"Authorization": f"Bearer {CALLER}"},
                               timeout=30, **form)
    task_id = submitted.json()["id"]
    env.failed_task(task_id)
    result = _relayed(env.get(f"/v2beta/image-to-video/result/{task_id}"), 400)
    env.assert_nowhere(refused, submitted, result, env.get(f"/v1/tasks/{task_id}"))


def test_flux_refusal_and_a_failed_tasks_details(env: Env) -> None:
    bfl = env.fakes["bfl"]
    with knob(bfl, "echo", 422):
        refused = _relayed(env.post("/flux/v1/flux-pro-1.1", {"prompt": "a fox"}), 422)
    env.refusal_row("flux-pro-1.1")
    with knob(bfl, "echo_fail"):
        submitted = env.post("/flux/v1/flux-pro-1.1", {"prompt": "a fox"})
    task_id = submitted.json()["id"]
    env.failed_task(task_id)
    stored = env.gateway.query("SELECT result FROM tasks WHERE id = :id", id=task_id)[0].result
    assert ECHO in str(stored).lower()  # the upstream's details are kept, scrubbed
    env.assert_nowhere(refused, submitted, env.get(f"/flux/v1/get_result?id={task_id}"),
                       env.get(f"/v1/tasks/{task_id}"))
