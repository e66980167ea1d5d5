"""Shared test fixtures: real polyrelay processes on loopback, on SQLite and on PostgreSQL.

Every test that takes ``gateway_factory`` runs once per database backend
(``POLYRELAY_TEST_BACKENDS``, default ``sqlite,postgresql``). A gateway is the real
``polyrelay serve`` command in a subprocess, talking to fake upstreams over HTTP.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from sqlalchemy import Engine, create_engine, make_url, text

from polyrelay.store.crypto import SECRET_KEY_ENV, generate_secret_key
from polyrelay.store.db import create_db_engine, migrate, normalize_url

# PostgreSQL gateways refuse to start without the secret key that encrypts upstream keys
# (docs/configuration.md): one for the session, in this process's environment, so every
# gateway, CLI call and in-process migration here has it. tests/test_secrets_at_rest.py
# starts SQLite gateways with it empty, the way `make run` starts: on a key file.
os.environ.setdefault(SECRET_KEY_ENV, generate_secret_key())

T = TypeVar("T")
BACKENDS = [b for b in os.environ.get("POLYRELAY_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
POSTGRES_ADMIN_URL = os.environ.get("POLYRELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def empty_postgres_database(prefix: str = "polyrelay_test") -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the block, whatever the session's backend (for tests of
    several nodes migrating one); dropped after it, whatever connections are still open."""
    made = Databases("postgresql", None, prefix)
    try:
        yield made.empty()
    finally:
        made.drop_all()


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


def start_gateway(config: dict[str, Any], workdir: Path, extra_env: dict[str, str] | None = None,
                  port: int | None = None) -> Gateway:
    """``port``: one the caller reserved (with ``free_port``), when the config must name it (``public_url``)."""
    port = port or free_port()
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


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which pyproject.toml's addopts turns on
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole groups to a worker: a module's tests on one backend, so a module-scoped gateway starts once per
    backend, as in a run without workers. (xdist's own ``loadgroup`` marks do not work with pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleAndBackend(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module, _, test = nodeid.partition("::")
            params = test[test.find("[") + 1:-1].split("-") if test.endswith("]") else []
            backend = next((name for name in BACKENDS if name in params), None)
            return f"{module}[{backend}]" if backend else module

    return ModuleAndBackend(config, log)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Databases:
    """The session's databases of one backend: empty ones, and copies of one migrated template."""

    def __init__(self, backend: str, tmp_path_factory: pytest.TempPathFactory | None,
                 prefix: str = "polyrelay_test") -> None:
        self.backend = backend
        self._tmp = tmp_path_factory  # where SQLite files go; PostgreSQL needs none
        self._prefix = prefix
        self._admin = (create_engine(normalize_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
                       if backend == "postgresql" else None)
        self._created: list[str] = []
        self._template: str | None = None

    def empty(self) -> str:
        return self._new()

    def migrated(self) -> str:
        """A fresh database already at the newest schema revision: a gateway starting on it skips its
        migrations, which are the same for every test (tests of migrations themselves use ``empty``)."""
        if self._template is None:
            template = self._new()
            engine = create_db_engine(template)
            try:
                migrate(engine)
            finally:
                engine.dispose()  # PostgreSQL copies a template only while no one is connected to it
            self._template = template
        return self._new(self._template)

    def _new(self, template: str | None = None) -> str:
        if self._admin is None:
            assert self._tmp is not None, "SQLite databases are files: give Databases a tmp_path_factory"
            path = self._tmp.mktemp("db") / "polyrelay.db"
            if template is not None:
                with closing(sqlite3.connect(make_url(template).database)) as source, closing(sqlite3.connect(path)) as copy:
                    source.backup(copy)
            return f"sqlite:///{path}"
        name = f"{self._prefix}_{uuid.uuid4().hex[:12]}"
        copy_of = f' TEMPLATE "{make_url(template).database}"' if template is not None else ""
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{copy_of}'))
        self._created.append(name)
        return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        if self._admin is None:
            return
        with self._admin.connect() as connection:
            for name in reversed(self._created):  # copies before their template
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def databases(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    made = Databases(backend, tmp_path_factory)
    yield made
    made.drop_all()


@pytest.fixture(scope="session")
def database_factory(databases: Databases) -> Callable[[], str]:
    """Hands out fresh, empty databases of the session's backend; they are dropped at the end."""
    return databases.empty


@pytest.fixture(scope="module")
def gateway_factory(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """``gateway_factory(config)`` starts polyrelay with ``config`` on a fresh database (at the newest
    schema revision) unless ``config`` names one. The gateways stop when the module's tests are done:
    an idle gateway still polls its database and would slow every module after it."""
    started: list[Gateway] = []

    def start(config: dict[str, Any], extra_env: dict[str, str] | None = None) -> Gateway:
        if "database_url" not in config:
            config = {"database_url": databases.migrated(), **config}
        gateway = start_gateway(config, tmp_path_factory.mktemp("gateway"), extra_env)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:  # all at once: each one's shutdown waits for its last usage flush
        if gateway.process.poll() is None:
            gateway.process.terminate()
    for gateway in started:
        gateway.stop()
