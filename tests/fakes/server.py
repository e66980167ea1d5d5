"""Run an aiohttp application on a loopback port in a background thread, for tests."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KNOBS = web.AppKey("knobs", dict)


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeServer:
    """A real HTTP server on 127.0.0.1; ``requests`` holds what it received, in order."""

    app: web.Application
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def start(self) -> "FakeServer":
        if KNOBS not in self.app:
            self.app[KNOBS] = {}
        self.app.middlewares.append(self._record)
        started = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self._runner = web.AppRunner(self.app, access_log=None)
            self.loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self._runner.cleanup())
            self.loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def knobs(self) -> dict[str, Any]:
        """The fake's behaviour switches (a dict its handlers read on every request)."""
        return self.app[KNOBS]

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, request.query_string, dict(request.headers), body)
        )
        return await handler(request)

    def last(self, path: str | None = None) -> Recorded:
        matching = [r for r in self.requests if path is None or r.path == path]
        assert matching, f"the fake upstream received no request{f' for {path}' if path else ''}"
        return matching[-1]
