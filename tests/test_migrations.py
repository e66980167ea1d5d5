"""The schema migrations: one linear chain whose head start-up knows about."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from polyrelay.store import models
from polyrelay.store.db import MIGRATIONS_DIR, SCHEMA_HEAD, alembic_config, create_db_engine, migrate, schema_revision


def test_the_chain_is_linear_and_its_head_is_the_one_start_up_skips_to(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    script = ScriptDirectory.from_config(alembic_config(engine))
    assert script.get_heads() == [SCHEMA_HEAD], f"update SCHEMA_HEAD in {MIGRATIONS_DIR.parent / 'db.py'}"
    engine.dispose()


def test_migrating_creates_every_table_and_is_idempotent(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert schema_revision(engine) is None
    migrate(engine)
    assert schema_revision(engine) == SCHEMA_HEAD
    assert set(models.Base.metadata.tables) <= set(inspect(engine).get_table_names())
    migrate(engine)  # a second start changes nothing
    assert schema_revision(engine) == SCHEMA_HEAD
    engine.dispose()
