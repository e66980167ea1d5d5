"""The schema migrations: one linear chain whose head start-up knows about."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

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


def test_token_names_become_unique_per_user_and_the_step_back_works(database_factory: Callable[[], str]) -> None:
    engine = create_db_engine(database_factory())
    config = alembic_config(engine)
    command.upgrade(config, "0005")
    with engine.begin() as connection:  # rows written before the change survive it
        for user_id, name in ((1, "ann"), (2, "ben")):
            connection.execute(text("INSERT INTO users (id, name, role, \"group\", balance_micros, unlimited, enabled, "
                                    "created_at, updated_at) VALUES (:id, :name, 'user', 'default', 0, false, true, "
                                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": user_id, "name": name})
        connection.execute(text("INSERT INTO tokens (name, key_hash, key_hint, used_micros, enabled, created_at, "
                                "user_id) VALUES ('laptop', 'h1', 'x', 0, true, CURRENT_TIMESTAMP, 1)"))
    migrate(engine)

    def add_token(user_id: int, key_hash: str) -> None:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO tokens (name, key_hash, key_hint, used_micros, enabled, created_at, "
                                    "user_id) VALUES ('laptop', :h, 'x', 0, true, CURRENT_TIMESTAMP, :u)"),
                               {"h": key_hash, "u": user_id})

    add_token(2, "h2")  # another user may use the same name
    with pytest.raises(IntegrityError):
        add_token(1, "h3")  # the same user may not
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM tokens WHERE key_hash = 'h2'"))
    command.downgrade(config, "0005")
    with pytest.raises(IntegrityError):
        add_token(2, "h4")  # back to one name across all users
    engine.dispose()
