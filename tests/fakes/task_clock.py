"""The shared life of a fake upstream job: it advances one step per status poll.

Poll 1 -> "queued"; polls 2..steps-1 -> "running"; poll ``steps`` -> "done". A job
created with ``fail=True`` ends "failed" on its second poll. Knobs on the fake's
``FakeServer.knobs``: ``steps`` (default 3), ``hold`` (polls report without advancing) and
``echo_fail`` (jobs created while it is set fail, and ``reason`` gives them a failure reason that
repeats the credential their poll was sent: ``tests.fakes.echo``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.echo import echoed
from tests.fakes.server import KNOBS

JOBS = web.AppKey("jobs", dict)
_ids = itertools.count(1)


@dataclass
class Job:
    id: str
    kind: str
    body: dict[str, Any]
    fail: bool = False
    key: str = ""
    polls: int = 0
    state: str = "queued"
    extra: dict[str, Any] = field(default_factory=dict)

    def advance(self, knobs: dict[str, Any]) -> str:
        if knobs.get("hold") or self.state in ("done", "failed"):
            return self.state
        self.polls += 1
        steps = knobs.get("steps", 3)
        if self.polls >= 2 and self.fail:
            self.state = "failed"
        elif self.polls >= steps:
            self.state = "done"
        elif self.polls >= 2:
            self.state = "running"
        return self.state


def new_job(app: web.Application, kind: str, body: dict[str, Any], prefix: str = "job", key: str = "") -> Job:
    job_id = f"{prefix}-{next(_ids)}"
    text = " ".join(str(body.get(name) or "") for name in ("prompt", "user_prompt", "gpt_description_prompt"))
    echo = bool(app[KNOBS].get("echo_fail"))
    job = Job(job_id, kind, body, fail="FAIL" in text or echo, key=key, extra={"echo": echo})
    app[JOBS][job_id] = job
    return job


def reason(request: web.Request, job: Job, usual: str) -> str:
    """A failed job's reason: ``usual``, or for an ``echo_fail`` job one repeating this request's credential."""
    return echoed(request) if job.extra.get("echo") else usual


def poll(request: web.Request, job_id: str) -> Job | None:
    job = request.app[JOBS].get(job_id)
    if job is not None:
        job.advance(request.app[KNOBS])
    return job


def base_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[JOBS] = {}
    app[KNOBS] = {}
    return app
