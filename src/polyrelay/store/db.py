"""Engine creation and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from polyrelay.store import models

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """Accept the URLs operators write (``postgresql://``) and pick the driver we ship (psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the gateway read while the batching writer commits; NORMAL is durable across
    # process crashes (not power loss), which is the trade the usage log documents.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # deferred: only migrations need Alembic, not worker processes

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


# The newest migration's revision id. A start-up on an up-to-date database compares it
# with the stored one and skips loading Alembic (~0.2 s of the time to /healthz);
# tests/test_migrations.py fails if a new migration is added without updating it.
SCHEMA_HEAD = "0009"


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database Alembic never touched."""
    if not inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call on every start."""
    if schema_revision(engine) == SCHEMA_HEAD:
        return
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def bump_records_version(session: Session) -> None:
    """Tell every gateway process to reload its snapshot (within the caller's transaction)."""
    row = session.get(models.Meta, "records_version", with_for_update=True)
    if row is None:
        session.add(models.Meta(key="records_version", value="1"))
    else:
        row.value = str(int(row.value) + 1)
