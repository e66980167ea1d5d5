"""Shared test fixtures: real polyrelay processes on loopback, on SQLite and on PostgreSQL.

Every test that takes ``gateway_factory`` runs once per database backend
(``POLYRELAY_TEST_BACKENDS``, default ``sqlite,postgresql``). A gateway is the real
``polyrelay serve`` command in a subprocess, talking to fake upstreams over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from sqlalchemy import Engine, create_engine, text

from polyrelay.store.crypto import SECRET_KEY_ENV, generate_secret_key
from polyrelay.store.db import normalize_url

# PostgreSQL gateways refuse to start without the secret key that encrypts upstream keys
# (docs/configuration.md): one for the session, in this process's environment, so every
# gateway, CLI call and in-process migration here has it. tests/test_secrets_at_rest.py
# starts SQLite gateways with it empty, the way `make run` starts: on a key file.
os.environ.setdefault(SECRET_KEY_ENV, generate_secret_key())

T = TypeVar("T")
BACKENDS = [b for b in os.environ.get("POLYRELAY_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
POSTGRES_ADMIN_URL = os.environ.get("POLYRELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; for effects only visible from outside
    (a database row written by the batching writer, a process exiting)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Gateway:
    """A running ``polyrelay serve`` process."""

    url: str
    database_url: str
    config_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    @property
    def db(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(normalize_url(self.database_url))
        return self._engine

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.db.connect() as connection:
            return list(connection.execute(text(sql), params))

    def usage_row(self, request_id: str) -> Any:
        """The usage-log row of one request, once the batching writer has flushed it."""
        rows = wait_until(
            lambda: self.query("SELECT * FROM usage_logs WHERE request_id = :rid", rid=request_id),
            what=f"the usage-log row of {request_id}",
        )
        return rows[0]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def start_gateway(config: dict[str, Any], workdir: Path, extra_env: dict[str, str] | None = None) -> Gateway:
    port = free_port()
    config_path = workdir / f"polyrelay-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"polyrelay-{port}.log"
    env = {**os.environ, **(extra_env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "polyrelay", "serve", "--config", str(config_path), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", config["database_url"], config_path, process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"polyrelay exited with {process.returncode}:\n{gateway.logs()}")
        try:
            return httpx.get(gateway.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=30, what="polyrelay /healthz")
    except BaseException:
        gateway.stop()  # a gateway that never got ready must not outlive the test
        raise
    return gateway


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_factory(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """Hands out fresh, empty databases of the session's backend; drops them at the end."""
    created: list[str] = []
    admin = create_engine(normalize_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT") if backend == "postgresql" else None

    def new_database() -> str:
        if admin is None:
            return f"sqlite:///{tmp_path_factory.mktemp('db') / 'polyrelay.db'}"
        name = f"polyrelay_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield new_database
    if admin is not None:
        with admin.connect() as connection:
            for name in created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def gateway_factory(
    database_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Gateway]]:
    """``gateway_factory(config)`` starts polyrelay with ``config`` on a fresh database."""
    started: list[Gateway] = []

    def start(config: dict[str, Any], extra_env: dict[str, str] | None = None) -> Gateway:
        config = {"database_url": database_factory(), **config}
        gateway = start_gateway(config, tmp_path_factory.mktemp("gateway"), extra_env)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
