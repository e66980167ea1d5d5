"""Engine creation and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from polyrelay.store import changes  # also registers the change-log table

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


def ping(engine: Engine) -> None:
    """Raise unless the database answers a trivial query (health and readiness probes)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # deferred: only migrations need Alembic, not worker processes

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


# The newest migration's revision id. A start-up on an up-to-date database compares it
# with the stored one and skips loading Alembic (~0.2 s of the time to /healthz);
# tests/test_migrations.py fails if a new migration is added without updating it.
SCHEMA_HEAD = "0019"  # 0019 two-factor sign-in


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database Alembic never touched."""
    if not inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


# Any fixed number: every polyrelay process of one database agrees on it, nothing else uses it.
_STARTUP_LOCK_KEY = 0x706F6C7972656C61  # "polyrela"


@contextmanager
def startup_lock(engine: Engine) -> Iterator[None]:
    """One process at a time migrates and seeds a PostgreSQL database, so N nodes can start at
    once on an empty one. The advisory lock lives on one connection held for the duration (and
    goes with it if the process dies). SQLite needs none: one file, one process starts it."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _STARTUP_LOCK_KEY})
        connection.commit()  # hold the session-level lock, not an open transaction
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _STARTUP_LOCK_KEY})
            connection.commit()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call on every start, from many nodes at once."""
    if schema_revision(engine) == SCHEMA_HEAD:
        return
    with startup_lock(engine):
        if schema_revision(engine) == SCHEMA_HEAD:  # another node did it while we waited
            return
        from alembic import command

        command.upgrade(alembic_config(engine), "head")


def bump_records_version(session: Session, *names: changes.Change) -> None:
    """Tell every gateway process which records changed (within the caller's transaction).

    Name them with ``changes.user(id)``, ``changes.token(id)``, ``changes.CHANNELS``, ``PRICES``,
    ``GROUPS`` (or ``changes.of_row(row)``); naming nothing makes every process reload everything.
    """
    changes.record(session, names)
