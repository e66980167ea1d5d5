"""Upstream keys encrypted at rest: the row holds ciphertext, the gateway still relays with the key,
a wrong key is refused at start, `polyrelay secret rotate` moves to a new key, and the migration
encrypts a database written by the previous schema."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
import yaml
from alembic import command

from polyrelay.store import crypto
from polyrelay.store.crypto import NEW_SECRET_KEY_ENV, SECRET_KEY_ENV
from polyrelay.store.db import alembic_config, create_db_engine
from tests.conftest import Gateway, free_port, start_gateway
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-kept-secret-0123456789"
ADDED_KEY = "sk-upstream-added-by-admin-0123456789"
CALLER = "sk-caller-at-rest-0123456789abcdef"
ADMIN = "admin-at-rest-0123456789abcdef"
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY, ADDED_KEY})).start()
    yield server
    server.stop()


def config(upstream: FakeServer, with_channel: bool = True, **extra: Any) -> dict[str, Any]:
    channels = [{"name": "main", "type": "openai", "base_url": upstream.url, "keys": [UPSTREAM_KEY],
                 "models": ["gpt-4o-mini"]}]
    return {"channels": channels if with_channel else [], "admin_key": ADMIN,
            "tokens": [{"name": "caller", "key": CALLER}],
            "prices": {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}, **extra}


def relays(gateway: Gateway, upstream: FakeServer) -> bool:
    """One chat call through the gateway, which must reach the upstream with the decrypted key."""
    client = openai.OpenAI(api_key=CALLER, base_url=gateway.v1, max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    return upstream.last("/v1/chat/completions").headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


def stored_keys(gateway_or_engine: Gateway | sa.Engine, name: str = "main") -> str:
    """The ``channels.keys`` column as the database holds it, read with SQL rather than the model."""
    engine = gateway_or_engine.db if isinstance(gateway_or_engine, Gateway) else gateway_or_engine
    with engine.connect() as connection:
        value = connection.execute(sa.text("SELECT keys FROM channels WHERE name = :n"), {"n": name}).scalar_one()
    return str(value)


def polyrelay(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyrelay", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, cwd=cwd)


def serve_refused(config_path: Path, env: dict[str, str], cwd: Path) -> str:
    """Start ``polyrelay serve`` expecting it to refuse: exit code 1 and one clear message, no traceback."""
    result = polyrelay("serve", "--config", str(config_path), "--port", str(free_port()), env=env, cwd=cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


_started: list[Gateway] = []  # gateways started outside gateway_factory: stopped after each test


@pytest.fixture(autouse=True)
def _stop_started_gateways() -> Iterator[None]:
    yield
    while _started:
        _started.pop().stop()


def started(config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None) -> Gateway:
    gateway = start_gateway(config, workdir, env)
    _started.append(gateway)
    return gateway


def restart(gateway: Gateway, workdir: Path, env: dict[str, str] | None = None) -> Gateway:
    gateway.stop()
    return started(yaml.safe_load(gateway.config_path.read_text()), workdir, env)


def test_the_row_holds_ciphertext_while_relaying_and_the_admin_api_work(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer
) -> None:
    gateway = gateway_factory(config(upstream))
    assert UPSTREAM_KEY not in stored_keys(gateway)
    assert "gAAAAA" in stored_keys(gateway)  # a Fernet token
    assert relays(gateway, upstream)

    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=20)
    created = admin.post("/api/channels", json={"name": "added", "type": "openai", "base_url": upstream.url,
                                                 "keys": [ADDED_KEY], "models": ["other-model"]})
    assert created.status_code in (200, 201), created.text
    assert ADDED_KEY not in stored_keys(gateway, "added")
    listed = admin.get("/api/channels")
    assert listed.status_code == 200
    assert {c["name"] for c in listed.json()["data"]} == {"main", "added"}
    assert UPSTREAM_KEY not in listed.text and ADDED_KEY not in listed.text  # hints only, as before
    assert UPSTREAM_KEY not in gateway.logs() and ADDED_KEY not in gateway.logs()


def test_a_restart_with_the_same_key_relays_and_another_key_is_refused_naming_the_variable(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer, tmp_path: Path
) -> None:
    first = gateway_factory(config(upstream))
    second = restart(first, tmp_path)
    assert relays(second, upstream)
    second.stop()

    refusal = serve_refused(second.config_path, {SECRET_KEY_ENV: crypto.generate_secret_key()}, tmp_path)
    assert SECRET_KEY_ENV in refusal and "'main'" in refusal and "does not decrypt" in refusal
    malformed = serve_refused(second.config_path, {SECRET_KEY_ENV: "not-a-key"}, tmp_path)
    assert f"{SECRET_KEY_ENV} is not a valid secret key" in malformed


def test_secret_rotate_re_encrypts_every_channel_and_only_the_new_key_serves_afterwards(
    gateway_factory: Callable[..., Gateway], upstream: FakeServer, tmp_path: Path
) -> None:
    gateway = gateway_factory(config(upstream))
    gateway.stop()
    before = stored_keys(gateway)
    path = str(gateway.config_path)

    missing = polyrelay("secret", "rotate", "--config", path, env={NEW_SECRET_KEY_ENV: ""}, cwd=tmp_path)
    assert missing.returncode == 1 and NEW_SECRET_KEY_ENV in missing.stderr
    new_key = polyrelay("secret", "generate", env={}, cwd=tmp_path).stdout.strip()
    wrong_current = polyrelay("secret", "rotate", "--config", path, cwd=tmp_path,
                              env={SECRET_KEY_ENV: crypto.generate_secret_key(), NEW_SECRET_KEY_ENV: new_key})
    assert wrong_current.returncode == 1 and "'main'" in wrong_current.stderr
    assert stored_keys(gateway) == before  # nothing was re-encrypted

    rotated = polyrelay("secret", "rotate", "--config", path, env={NEW_SECRET_KEY_ENV: new_key}, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "1 channel(s)" in rotated.stdout and SECRET_KEY_ENV in rotated.stdout
    assert stored_keys(gateway) != before and UPSTREAM_KEY not in stored_keys(gateway)
    assert new_key not in rotated.stdout + rotated.stderr

    assert "does not decrypt" in serve_refused(gateway.config_path, {}, tmp_path)  # the old key no longer opens it
    assert relays(restart(gateway, tmp_path, {SECRET_KEY_ENV: new_key}), upstream)


def test_sqlite_without_the_variable_keeps_its_key_in_a_private_file_next_to_the_database(
    upstream: FakeServer, tmp_path: Path
) -> None:
    unset = {SECRET_KEY_ENV: ""}  # empty counts as unset: the way `make run` starts
    database = tmp_path / "data" / "polyrelay.db"
    gateway = started(config(upstream, database_url=f"sqlite:///{database}"), tmp_path, unset)
    key_file = database.with_name("polyrelay.db.key")
    assert key_file.stat().st_mode & 0o777 == 0o600
    warning = gateway.logs()
    assert str(key_file) in warning and SECRET_KEY_ENV in warning
    assert key_file.read_text().strip() not in warning
    assert UPSTREAM_KEY not in stored_keys(gateway)
    assert relays(gateway, upstream)

    again = restart(gateway, tmp_path, unset)
    assert relays(again, upstream)
    assert str(key_file) not in again.logs()  # the warning comes once, when the file is made
    again.stop()

    new_key = crypto.generate_secret_key()
    rotated = polyrelay("secret", "rotate", "--config", str(again.config_path), cwd=tmp_path,
                        env={**unset, NEW_SECRET_KEY_ENV: new_key})
    assert rotated.returncode == 0, rotated.stderr
    assert key_file.read_text().strip() == new_key and key_file.stat().st_mode & 0o777 == 0o600
    assert relays(restart(again, tmp_path, unset), upstream)


def test_postgresql_without_the_variable_refuses_to_start(upstream: FakeServer, tmp_path: Path) -> None:
    # Refused before any connection: this database need not exist.
    url = "postgresql://postgres@127.0.0.1:5432/polyrelay_never_created"
    config_path = tmp_path / "polyrelay.yaml"
    config_path.write_text(yaml.safe_dump(config(upstream, database_url=url)))
    refusal = serve_refused(config_path, {SECRET_KEY_ENV: ""}, tmp_path)
    assert f"{SECRET_KEY_ENV} is not set" in refusal and "polyrelay secret generate" in refusal


def test_the_migration_encrypts_plaintext_channels_and_the_step_back_decrypts_them(
    database_factory: Callable[[], str], upstream: FakeServer, tmp_path: Path
) -> None:
    url = database_factory()
    engine = create_db_engine(url)
    migrations = alembic_config(engine)
    command.upgrade(migrations, "0006")  # the schema before encryption, with a channel in plaintext
    channels = sa.table("channels", *(sa.column(name) for name in (
        "name", "type", "base_url", "priority", "weight", "enabled", "disabled_reason", "failure_count",
        "last_error", "timeout_s", "connect_timeout_s", "test_result", "created_at", "updated_at")),
        *(sa.column(name, sa.JSON) for name in ("keys", "models", "model_mapping", "options")))
    with engine.begin() as connection:
        connection.execute(sa.insert(channels).values(
            name="main", type="openai", base_url=upstream.url, keys=[UPSTREAM_KEY], models=["gpt-4o-mini"],
            model_mapping={}, options={}, priority=0, weight=1, enabled=True, disabled_reason="", failure_count=0,
            last_error="", timeout_s=30.0, connect_timeout_s=5.0, test_result="",
            created_at=sa.func.current_timestamp(), updated_at=sa.func.current_timestamp()))
    assert UPSTREAM_KEY in stored_keys(engine)

    gateway = started(config(upstream, with_channel=False, database_url=url), tmp_path)  # migrates at start
    assert UPSTREAM_KEY not in stored_keys(engine)
    assert relays(gateway, upstream)  # through the channel only the migrated row describes
    gateway.stop()

    crypto.install(crypto.load_secret_key(url, create=False))  # the key the gateway used
    command.downgrade(migrations, "0008")  # the step back over 0009, which encrypted the keys
    assert UPSTREAM_KEY in stored_keys(engine)
    engine.dispose()
