"""How fast one admin change reaches every node, and what applying it costs each node.

A PostgreSQL database with ``--users`` users and as many tokens, ``--nodes`` ``polyrelay serve``
processes on it. One token is disabled through node 0's admin API; each node is then polled
(``GET /v1/models`` with that token, which authenticates from the snapshot) until it refuses it.
CPU per node is read from ``/proc/<pid>/stat`` over the same window twice, without the change
and with it, so the background work (writer, leases, polls) and the probing cancel out.
For comparison, the same is measured for a change that names nothing (every node reloads
everything, which is what every change cost before the change log).

    .venv/bin/python bench/propagation.py [--users 100000] [--nodes 3] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.orm import Session

from polyrelay.keys import hash_key
from polyrelay.store import crypto, models
from polyrelay.store.db import bump_records_version, create_db_engine, migrate, normalize_url

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
TICK_S = os.sysconf("SC_CLK_TCK")
PROBE_LIMIT_S = 300.0  # a full reload of 100k records on a busy shared machine


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime + stime


def populate(url: str, users: int) -> tuple[str, int]:
    """``users`` users with one token each; returns the key and id of a token in the middle."""
    engine = create_db_engine(url)
    migrate(engine)
    batch = 10_000
    with Session(engine) as session, session.begin():
        for start in range(0, users, batch):
            rows = [{"name": f"user-{i}", "balance_micros": 1_000_000, "unlimited": False}
                    for i in range(start, min(users, start + batch))]
            session.execute(insert(models.User), rows)
        ids = list(session.scalars(select(models.User.id).order_by(models.User.id)))
        for start in range(0, len(ids), batch):
            rows = [{"name": f"key-{i}", "key_hash": hash_key(f"sk-bench-{i}"), "key_hint": "sk-...", "user_id": i,
                     "used_micros": 0} for i in ids[start:start + batch]]
            session.execute(insert(models.Token), rows)
        bump_records_version(session)
        key = f"sk-bench-{ids[len(ids) // 2]}"
        token_id = session.scalar(select(models.Token.id).where(models.Token.key_hash == hash_key(key)))
    engine.dispose()
    return key, int(token_id)


def start_nodes(url: str, nodes: int, workdir: Path) -> list[tuple[subprocess.Popen[bytes], str]]:
    config = workdir / "polyrelay.yaml"
    config.write_text(yaml.safe_dump({"database_url": url, "admin_key": ADMIN_KEY, "log_level": "warning"}))
    started = []
    for i in range(nodes):
        port = free_port()
        log = (workdir / f"node{i}.log").open("wb")
        process = subprocess.Popen([sys.executable, "-m", "polyrelay", "serve", "--config", str(config),
                                    "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        started.append((process, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 600
    for process, base in started:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"a node exited; see {workdir}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("nodes did not come up")
            time.sleep(0.2)
    return started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Probe(threading.Thread):
    """Polls one node with a warm connection; ``at`` becomes the seconds from ``mark()`` until it answered ``want``."""

    def __init__(self, base: str, key: str, want: int) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"})
        self.want, self.started, self.at = want, 0.0, None
        self.armed = threading.Event()
        self.done = threading.Event()

    def mark(self) -> None:
        self.started = time.monotonic()
        self.armed.set()

    def run(self) -> None:
        while not self.done.is_set():
            status = self.client.get("/v1/models").status_code
            if self.armed.is_set() and status == self.want:
                self.at = time.monotonic() - self.started
                self.done.set()
            time.sleep(0.005)
        self.client.close()


def arrival(nodes: list[tuple[subprocess.Popen[bytes], str]], key: str, want: int,
            change: Callable[[], None]) -> list[float | None]:
    """Seconds from making ``change`` until each node answers ``want`` (probes warm before it)."""
    probes = [Probe(base, key, want) for _, base in nodes]
    for probe in probes:
        probe.start()
    time.sleep(0.5)  # connections open, threads polling
    for probe in probes:
        probe.mark()
    started = time.monotonic()
    change()
    print(f"\n(the write itself, committed and answered: {(time.monotonic() - started) * 1000:.0f} ms)", end="")
    deadline = time.monotonic() + PROBE_LIMIT_S
    for probe in probes:
        probe.done.wait(max(0.0, deadline - time.monotonic()))
        probe.done.set()
    return [probe.at for probe in probes]


def cpu_over(nodes: list[tuple[subprocess.Popen[bytes], str]], seconds: float) -> list[float]:
    """CPU-seconds per second each node spends idle (nothing talks to the nodes)."""
    before = [cpu_s(p.pid) for p, _ in nodes]
    time.sleep(seconds)
    return [(cpu_s(p.pid) - b) / seconds for (p, _), b in zip(nodes, before)]


def cpu_until(nodes: list[tuple[subprocess.Popen[bytes], str]], key: str, change: Callable[[], None],
              idle_rate: list[float]) -> list[float]:
    """CPU-seconds each node spends on ``change`` beyond idling: from making it until every node refuses
    ``key`` (checked twice a second) and 2 s more."""
    before = [cpu_s(p.pid) for p, _ in nodes]
    started = time.monotonic()
    change()
    deadline = started + PROBE_LIMIT_S
    while serves(nodes, key) != [401] * len(nodes):
        if time.monotonic() > deadline:
            raise SystemExit("the change did not reach every node")
        time.sleep(0.5)
    time.sleep(2.0)
    length = time.monotonic() - started
    return [cpu_s(p.pid) - b - rate * length for (p, _), b, rate in zip(nodes, before, idle_rate)]


def serves(nodes: list[tuple[subprocess.Popen[bytes], str]], key: str) -> list[int]:
    return [httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=60).status_code
            for _, base in nodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("POLYRELAY_TEST_POSTGRES_URL",
                                                         "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--window", type=float, default=10.0, help="seconds of idling that measure the baseline")
    args = parser.parse_args()

    os.environ.setdefault(crypto.SECRET_KEY_ENV, crypto.generate_secret_key())
    crypto.install(crypto.load_secret_key(args.url, create=False))
    admin = create_engine(normalize_url(args.url), isolation_level="AUTOCOMMIT")
    name = f"polyrelay_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.url.rsplit("/", 1)[0] + "/" + name
    nodes: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        t = time.monotonic()
        key, token_id = populate(url, args.users)
        print(f"database: {args.users} users and tokens in {time.monotonic() - t:.1f}s")
        with tempfile.TemporaryDirectory(prefix="polyrelay-propagation-") as tmp:
            t = time.monotonic()
            nodes = start_nodes(url, args.nodes, Path(tmp))
            print(f"{args.nodes} nodes healthy in {time.monotonic() - t:.1f}s")
            admin_api = httpx.Client(base_url=nodes[0][1], timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

            answered_ms: list[float] = []

            def set_enabled(enabled: bool) -> None:
                t = time.monotonic()
                response = admin_api.patch(f"/api/tokens/{token_id}", json={"enabled": enabled})
                response.raise_for_status()
                answered_ms.append((time.monotonic() - t) * 1000)

            def reload_everything() -> None:
                engine = create_db_engine(url)
                with Session(engine) as session, session.begin():
                    session.execute(text("UPDATE tokens SET admin_enabled = NOT admin_enabled WHERE id = :i"),
                                    {"i": token_id})
                    bump_records_version(session)  # names nothing: the pre-change-log behaviour
                engine.dispose()

            steps: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
                ("one token disabled through node 0's admin API (reloaded by record)",
                 lambda: set_enabled(False), lambda: set_enabled(True)),
                ("the same change naming nothing (a full reload: what every change cost before)",
                 reload_everything, reload_everything),
            ]
            for what, change, undo in steps:
                assert serves(nodes, key) == [200] * len(nodes)
                spent = cpu_until(nodes, key, change, cpu_over(nodes, args.window))
                undo()
                wait_serving(nodes, key)
                arrived = arrival(nodes, key, 401, change)
                report(what, arrived, spent)
                undo()
                wait_serving(nodes, key)
            print(f"\nadmin PATCH answered in {min(answered_ms):.0f}-{max(answered_ms):.0f} ms")
            admin_api.close()
    finally:
        for process, _ in nodes:
            process.terminate()
        for process, _ in nodes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_serving(nodes: list[tuple[subprocess.Popen[bytes], str]], key: str) -> None:
    deadline = time.monotonic() + PROBE_LIMIT_S
    while serves(nodes, key) != [200] * len(nodes):
        if time.monotonic() > deadline:
            raise SystemExit("the undo did not reach every node")
        time.sleep(0.1)


def report(what: str, arrived: list[float | None], spent: list[float]) -> None:
    print(f"\n{what}:")
    for i, (at, cpu) in enumerate(zip(arrived, spent)):
        when = f"{at * 1000:7.0f} ms" if at is not None else "   never"
        print(f"  node {i}: refuses the token after {when}; applying it cost {cpu:+.3f} CPU-s (over idle)")
    if None not in arrived:
        print(f"  every node: {max(a for a in arrived if a is not None) * 1000:.0f} ms "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
