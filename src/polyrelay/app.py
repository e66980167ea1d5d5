"""The ASGI application: wires the store, the relay pipeline and the API families together."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from polyrelay import __version__
from polyrelay import console
from polyrelay.api import admin as admin_api
from polyrelay.api import anthropic as anthropic_api
from polyrelay.api import dialect
from polyrelay.api import gemini as gemini_api
from polyrelay.api import ideogram as ideogram_api
from polyrelay.api import midjourney as midjourney_api
from polyrelay.api import files as files_api
from polyrelay.api import flux as flux_api
from polyrelay.api import kling as kling_api
from polyrelay.api import luma as luma_api
from polyrelay.api import metrics as metrics_api
from polyrelay.api import models as models_api
from polyrelay.api import stability_video as stability_video_api
from polyrelay.api import suno as suno_api
from polyrelay.api import tasks as tasks_api
from polyrelay.api import video as video_api
from polyrelay.api import openai as openai_api
from polyrelay.api import recraft as recraft_api
from polyrelay.api import responses as responses_api
from polyrelay.api import stability as stability_api
from polyrelay.alerts.outbox import Outbox
from polyrelay.alerts.watch import Watch
from polyrelay.api.readiness import Readiness
from polyrelay.background import stop_task
from polyrelay.cluster import cluster_id
from polyrelay.config import Settings, load_settings
from polyrelay.errors import RelayError
from polyrelay.fetch import FetchPolicy
from polyrelay.proxies import TrustedProxies
from polyrelay.billing.budget import Budgets
from polyrelay.billing.payments.registry import providers as payment_providers
from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.relay.pipeline import Relay
from polyrelay.relay.balance import Schedule as BalanceSchedule
from polyrelay.relay.healing import Healer
from polyrelay.relay.routing import Health, HealthPolicy
from polyrelay.relay.upstream import UpstreamClient
from polyrelay.store import crypto
from polyrelay.store.retention import Retention
from polyrelay.store.db import create_db_engine, migrate
from polyrelay.store.feed import Feed, read_snapshot
from polyrelay.store.files import FileStore
from polyrelay.seed import seed_from_settings
from polyrelay.store.writer import BatchWriter
from polyrelay.telemetry import exposition, logs, tracing
from polyrelay.tasks.engine import TaskEngine
from polyrelay.tasks.poller import Poller
from polyrelay.providers.registry import TASK_ADAPTORS

log = logging.getLogger("polyrelay")

CONFIG_ENV = "POLYRELAY_CONFIG_FILE"


def open_database(database_url: str) -> Engine:
    """What every command needs first: the secret key loaded (an SQLite database's key file is made
    on first use), the schema migrated, and the key checked against the channels already stored."""
    key = crypto.load_secret_key(database_url, create=True)
    crypto.install(key)
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        crypto.check_channels(engine, key)
    except BaseException:
        engine.dispose()
        raise
    return engine


def prepare_database(settings: Settings) -> list[tuple[str, str]]:
    """Migrate the schema and load the config file's records; once per start, before serving."""
    engine = open_database(settings.database_url)
    try:
        return seed_from_settings(engine, settings)
    finally:
        engine.dispose()


def create_app(settings: Settings) -> ASGIApp:
    crypto.install(crypto.load_secret_key(settings.database_url, create=False))  # a worker's parent made the file

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        await app.state.files.start()  # a missing bucket or refused store credentials stop the start here
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyrelay-db")
        engine = create_db_engine(settings.database_url)
        snapshot = await loop.run_in_executor(executor, read_snapshot, engine)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies must never leak between callers
        )
        writer = BatchWriter(engine, settings.log_flush_interval_ms / 1000, executor)
        writer.start()
        budgets = Budgets(engine, executor, settings.budget)
        budgets.start()
        app.state.db, app.state.db_executor = engine, executor  # for the admin API
        # Built before serving: importing the stripe package takes about a second, which would stall requests.
        app.state.payment_providers = payment_providers(settings.payments, session)
        # Reports (logs, stats, CSV) can scan many rows: never on the writer's thread, or usage flushes wait.
        app.state.report_executor = reports = ThreadPoolExecutor(max_workers=2, thread_name_prefix="polyrelay-report")
        limiter = RateLimiter(settings.redis_url, namespace=app.state.cluster_id)
        await limiter.start()
        health = Health(
            HealthPolicy(
                cooldown_after_failures=settings.cooldown_after_failures,
                cooldown_s=settings.cooldown_s,
                disable_after_failures=settings.disable_after_failures,
                key_rest_s=settings.key_rest_s,
            ),
            writer,
        )
        upstream = UpstreamClient()
        app.state.relay = relay = Relay(
            snapshot, session, upstream, writer, health, settings.output_estimate_tokens,
            fetch_policy=FetchPolicy(allow_private=settings.allow_private_image_hosts), limiter=limiter,
            files=app.state.files if settings.files.rehost else None, budgets=budgets,
        )
        # Other processes' admin writes, record by record (LISTEN/NOTIFY on PostgreSQL, polled as well).
        app.state.feed = feed = Feed(relay, engine, executor, settings.snapshot_refresh_s)
        feed.start()
        app.state.healer = healer = Healer(relay, engine, executor, session, writer, feed.catch_up, settings.probes)
        healer.start()
        app.state.tasks = tasks = TaskEngine(engine, executor, relay, session, settings.tasks, TASK_ADAPTORS)
        poller = Poller(tasks)
        poller.start()
        retention = Retention(engine, settings.usage_logs)  # old raw usage rows; the rollups stay
        retention.start()
        app.state.http = session  # for admin actions that call upstreams (channel balances)
        balances = BalanceSchedule(engine, executor, session, budgets.node, settings.channel_balance).start()
        watch = None
        if settings.alerts.enabled:
            watch = Watch(settings.alerts, Outbox(settings.alerts, session, settings.mail_server), engine, reports,
                          lambda: relay.snapshot, writer, budgets.node)
            watch.start()
        app.state.metrics = metrics = _metrics_sources(relay, budgets, writer, engine, reports)
        metrics_sync = exposition.keep_synced(metrics)
        # For /api/system.
        app.state.poller, app.state.writer, app.state.limiter = poller, writer, limiter
        app.state.started_at = time.monotonic()
        # What start-up built (modules, routes, the snapshot) lives as long as the process: frozen, out of
        # the collector's sight, a full collection walks only what requests made and no longer stalls the
        # loop for tens of milliseconds. Requests make few reference cycles, so young collections can be rarer.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        try:
            yield
        finally:
            await poller.stop()  # before the writer and the session: it uses both
            await exposition.stop_syncing(metrics_sync)
            await retention.stop()
            await stop_task(balances)
            if watch is not None:
                await watch.stop()
            await healer.stop()
            await feed.stop()
            await writer.close()
            await budgets.close()  # after the last flush: committed charges have left the leases
            await limiter.close()
            await session.close()
            await upstream.close()
            executor.shutdown(wait=True)
            reports.shutdown(wait=True)
            engine.dispose()
            tracing.stop()  # last: the spans of requests settled during shutdown are exported too

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    app = Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"]), Route("/readyz", Readiness().respond, methods=["GET"]),
                Route("/metrics", metrics_api.endpoint(settings.admin_key, settings.metrics.allow_unauthenticated_from,
                                                      lambda: getattr(app.state, "metrics", None)), methods=["GET"]),
                *ideogram_api.routes(), *recraft_api.routes(),
                *stability_api.routes(), *midjourney_api.routes(),  # before OpenAI's catch-all /v1/{rest:path}
                *suno_api.routes(), *luma_api.routes(), *kling_api.routes(), *flux_api.routes(),
                *stability_video_api.routes(), *tasks_api.routes(), *video_api.routes(),  # /v1/...: before the catch-all
                *models_api.routes(), *anthropic_api.routes(), *gemini_api.routes(),  # before the catch-all too
                *files_api.routes(), *admin_api.routes(), *console.routes(), *responses_api.routes(),
                *openai_api.routes(),
                # OpenAI answers any method on an unknown or known /v1 path with 404 "Invalid URL"; so do we, in
                # the shape of the SDK that asked (``api.dialect``).
                Route("/v1/{rest:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])],
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
    app.state.settings = settings
    app.state.cluster_id = cluster_id(settings)  # the Redis namespace of limits and sign-in failures
    app.state.files = _file_store(settings)
    edge: ASGIApp = _ExactPostPaths(app)
    tracer = tracing.start(settings.tracing)
    if tracer is not None:
        edge = tracer.accept_callers(edge)
    return TrustedProxies(edge, settings.trusted_proxies) if settings.trusted_proxies else edge


class _ExactPostPaths:
    """Send POSTs to fixed paths straight to their endpoint, ahead of Starlette's router.

    The router and its middleware stack cost about 0.1 ms of CPU per request, a third of
    the relay's whole budget. Only paths that no earlier route would claim are taken
    here, so routing is the same as the router's; everything else goes through Starlette.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state
        self._endpoints: dict[str, Any] = {}
        for index, route in enumerate(app.routes):
            if not isinstance(route, Route) or route.param_convertors or "POST" not in (route.methods or ()):
                continue
            probe = {"type": "http", "path": route.path, "method": "POST", "root_path": ""}
            earlier = app.routes[:index]
            if route.path not in self._endpoints and not any(r.matches(probe)[0] != Match.NONE for r in earlier):
                self._endpoints[route.path] = route.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._endpoints.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self.app
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _not_found(request: Request, exc: Exception | None = None) -> Response:
    return dialect.error_response(request, RelayError(404, f"Invalid URL ({request.method} {request.url.path}).",
                                                      code="unknown_url"))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return dialect.error_response(request, RelayError(
        405, f"Method {request.method} is not allowed on {request.url.path}.", code="method_not_allowed"))


def _metrics_sources(relay: Relay, budgets: Budgets, writer: BatchWriter, engine: Engine,
                     reports: ThreadPoolExecutor) -> exposition.Sources:
    """What ``/metrics`` reads when scraped: the snapshot, the leases, the writer, the task table."""

    def channels() -> list[tuple[str, bool]]:
        now = time.monotonic()
        return [(channel.name, channel.cooldown_until > now) for channel in relay.snapshot.channels]

    return exposition.Sources(
        channels, lambda: sum(t.reserved_micros for t in relay.snapshot.tokens_by_hash.values()),
        budgets.leased_micros, writer.queued, engine, reports,
    )


def _file_store(settings: Settings) -> FileStore:
    """The re-hosted files' store; its URLs use ``files.public_base_url`` (the same on every node) or,
    on one node, its listening address."""
    base = settings.files.public_base_url
    if not base:
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(settings.host, settings.host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        base = f"http://{host}:{settings.port}"
    return FileStore(settings.files, base, allow_private=settings.allow_private_image_hosts)


def app_from_env() -> ASGIApp:
    """Factory for worker processes: the parent passes the config path through the environment."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    logs.configure(settings.log_level, settings.log_format)  # a spawned worker starts with no logging set up
    return create_app(settings)
