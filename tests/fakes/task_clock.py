"""The shared life of a fake upstream job: it advances one step per status poll.

Poll 1 -> "queued"; polls 2..steps-1 -> "running"; poll ``steps`` -> "done". A job
created with ``fail=True`` ends "failed" on its second poll. Knobs on the fake's
``FakeServer.knobs``: ``steps`` (default 3) and ``hold`` (polls report without advancing).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
    job = Job(job_id, kind, body, fail="FAIL" in text, key=key)
    app[JOBS][job_id] = job
    return job


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
