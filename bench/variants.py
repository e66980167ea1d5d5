"""Scratch launcher: `polyrelay serve` with candidate optimisations applied as runtime patches.

Used by `bench/run.py --patches a,b,...` to measure a proposed src/ change before anyone
makes it. Nothing under src/ is modified; each patch imitates the change it names.

    python bench/variants.py --patches lazy_bpe,raw_writer --config FILE --port N

Patches:
  lazy_bpe        import bpe_openai on first use, not at start (billing/tokenizer.py)
  raw_writer      usage-log rows inserted with one DBAPI executemany of tuples instead of
                  the SQLAlchemy ORM bulk insert (store/writer.py BatchWriter._write)
  no_cookies      aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) (app.py lifespan)
  direct_asgi     POST /v1/* endpoints dispatched by one dict lookup, skipping Starlette's
                  ServerErrorMiddleware, ExceptionMiddleware and Router (app.py)
  no_proxy_headers  uvicorn proxy_headers=False (cli.py serve)
  skip_migrate    no Alembic upgrade when the schema is already at head (app.py prepare_database)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

ALL = ["lazy_bpe", "raw_writer", "no_cookies", "direct_asgi", "no_proxy_headers", "skip_migrate"]


def patch_lazy_bpe() -> None:
    stub = types.ModuleType("bpe_openai")

    def __getattr__(name: str):  # noqa: N807
        del sys.modules["bpe_openai"]
        real = importlib.import_module("bpe_openai")
        sys.modules["polyrelay.billing.tokenizer"].bpe_openai = real
        return getattr(real, name)

    stub.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["bpe_openai"] = stub


def patch_raw_writer() -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from polyrelay.store import models, writer

    table = models.UsageLog.__table__
    columns = [c.name for c in table.columns if c.name != "id"]
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    original = writer.BatchWriter._write

    def _write(self, batch) -> None:  # type: ignore[no-untyped-def]
        if not batch.logs:
            return original(self, batch)
        rows = [
            tuple(
                (row["created_at"].strftime("%Y-%m-%d %H:%M:%S.%f") if c == "created_at" else row.get(c))
                for c in columns
            )
            for row in batch.logs
        ]
        with Session(self._engine) as session, session.begin():
            session.connection().exec_driver_sql(sql, rows)
            for token_id, micros in batch.spend.items():
                session.execute(
                    update(models.Token)
                    .where(models.Token.id == token_id)
                    .values(used_micros=models.Token.used_micros + micros)
                )
            for token_id, when in batch.last_used.items():
                session.execute(update(models.Token).where(models.Token.id == token_id).values(last_used_at=when))
        if batch.channels:
            batch.logs, batch.spend, batch.last_used = [], {}, {}
            original(self, batch)

    writer.BatchWriter._write = _write


def patch_no_cookies() -> None:
    import aiohttp

    from polyrelay import app

    class Session(aiohttp.ClientSession):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            kwargs.setdefault("cookie_jar", aiohttp.DummyCookieJar())
            super().__init__(*args, **kwargs)

    app.aiohttp = types.SimpleNamespace(**{**vars(aiohttp), "ClientSession": Session})  # type: ignore[attr-defined]


def direct_asgi(app):  # type: ignore[no-untyped-def]
    from starlette.requests import Request
    from starlette.routing import Route

    hot = {
        r.path: r.endpoint
        for r in app.routes
        if isinstance(r, Route) and "{" not in r.path and r.methods and "POST" in r.methods
    }

    async def asgi(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = hot.get(scope["path"])
            if endpoint is not None:
                scope["app"] = app
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


def patch_skip_migrate() -> None:
    from sqlalchemy import inspect, text

    from polyrelay.store import db

    original = db.migrate

    def migrate(engine) -> None:  # type: ignore[no-untyped-def]
        if inspect(engine).has_table("alembic_version"):
            with engine.connect() as conn:
                if conn.execute(text("SELECT version_num FROM alembic_version")).scalar() is not None:
                    return  # (a real change would compare with the script head)
        original(engine)

    db.migrate = migrate
    import polyrelay.app

    polyrelay.app.migrate = migrate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patches", default="")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    patches = [p for p in args.patches.split(",") if p]
    unknown = set(patches) - set(ALL)
    if unknown:
        sys.exit(f"unknown patches: {unknown}; known: {ALL}")

    if "lazy_bpe" in patches:
        patch_lazy_bpe()
    import uvicorn

    from polyrelay.app import create_app, prepare_database
    from polyrelay.config import load_settings

    if "raw_writer" in patches:
        patch_raw_writer()
    if "no_cookies" in patches:
        patch_no_cookies()
    if "skip_migrate" in patches:
        patch_skip_migrate()
        from polyrelay import app as app_module

        prepare_database = app_module.prepare_database
    settings = load_settings(args.config, port=args.port)
    prepare_database(settings)
    app = create_app(settings)
    if "direct_asgi" in patches:
        app = direct_asgi(app)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        proxy_headers="no_proxy_headers" not in patches,
    )


if __name__ == "__main__":
    main()
