"""The ASGI application: wires the store, the relay pipeline and the API families together."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import aiohttp
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from polyrelay import __version__
from polyrelay.api import anthropic as anthropic_api
from polyrelay.api import gemini as gemini_api
from polyrelay.api import ideogram as ideogram_api
from polyrelay.api import midjourney as midjourney_api
from polyrelay.api import openai as openai_api
from polyrelay.api import recraft as recraft_api
from polyrelay.api import stability as stability_api
from polyrelay.config import Settings, load_settings
from polyrelay.errors import RelayError
from polyrelay.relay.fetch import FetchPolicy
from polyrelay.relay.pipeline import Relay
from polyrelay.relay.routing import Health, HealthPolicy
from polyrelay.store import models
from polyrelay.store.db import create_db_engine, migrate
from polyrelay.store.seed import seed_from_settings
from polyrelay.store.snapshot import Snapshot, load_snapshot
from polyrelay.store.writer import BatchWriter
from polyrelay.tasks.engine import TaskEngine
from polyrelay.tasks.poller import Poller
from polyrelay.tasks.registry import task_adaptors

log = logging.getLogger("polyrelay")

CONFIG_ENV = "POLYRELAY_CONFIG_FILE"


def prepare_database(settings: Settings) -> list[tuple[str, str]]:
    """Migrate the schema and load the config file's records; once per start, before serving."""
    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
        return seed_from_settings(engine, settings)
    finally:
        engine.dispose()


def _read_snapshot(engine: Engine, previous: Snapshot | None) -> Snapshot:
    with Session(engine) as session:
        return load_snapshot(session, previous)


def _records_version(engine: Engine) -> int:
    with Session(engine) as session:
        row = session.get(models.Meta, "records_version")
        return int(row.value) if row else 0


async def _refresh_snapshots(relay: Relay, engine: Engine, executor: ThreadPoolExecutor, every_s: float) -> None:
    """Reload the snapshot whenever another process (or the admin API) bumped the version."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every_s)
        try:
            version = await loop.run_in_executor(executor, _records_version, engine)
            if version != relay.snapshot.version:
                relay.snapshot = await loop.run_in_executor(executor, _read_snapshot, engine, relay.snapshot)
        except Exception:
            log.exception("snapshot refresh failed; serving the previous one")


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyrelay-db")
        engine = create_db_engine(settings.database_url)
        snapshot = await loop.run_in_executor(executor, _read_snapshot, engine, None)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies must never leak between callers
        )
        writer = BatchWriter(engine, settings.log_flush_interval_ms / 1000, executor)
        writer.start()
        health = Health(
            HealthPolicy(
                cooldown_after_failures=settings.cooldown_after_failures,
                cooldown_s=settings.cooldown_s,
                disable_after_failures=settings.disable_after_failures,
                key_rest_s=settings.key_rest_s,
            ),
            writer,
        )
        app.state.relay = relay = Relay(
            snapshot, session, writer, health, settings.output_estimate_tokens,
            fetch_policy=FetchPolicy(allow_private=settings.allow_private_image_hosts),
        )
        refresher = asyncio.create_task(
            _refresh_snapshots(relay, engine, executor, settings.snapshot_refresh_s), name="polyrelay-snapshot"
        )
        app.state.tasks = tasks = TaskEngine(engine, executor, relay, session, settings.tasks, task_adaptors())
        poller = Poller(tasks)
        poller.start()
        try:
            yield
        finally:
            await poller.stop()  # before the writer and the session: it uses both
            refresher.cancel()
            await writer.close()
            await session.close()
            executor.shutdown(wait=True)
            engine.dispose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    app = Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"]), *ideogram_api.routes(), *recraft_api.routes(),
                *stability_api.routes(), *midjourney_api.routes(),  # before OpenAI's catch-all /v1/{rest:path}
                *anthropic_api.routes(), *gemini_api.routes(),  # /v1/messages: before the catch-all too
                *openai_api.routes()],
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
    app.state.settings = settings
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    return await openai_api.not_found(request)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return openai_api.error_response(
        RelayError(405, f"Method {request.method} is not allowed on {request.url.path}.", code="method_not_allowed")
    )


def app_from_env() -> Starlette:
    """Factory for worker processes: the parent passes the config path through the environment."""
    return create_app(load_settings(os.environ.get(CONFIG_ENV) or None))
