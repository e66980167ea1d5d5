"""A polyrelay cluster on loopback for tests/test_cluster.py: N ``polyrelay serve`` nodes on one
PostgreSQL database, a private Redis and one S3 store, behind Debian's HAProxy (round-robin).

Every piece is a real process the harness starts and stops itself, on free ports: the shared Redis
on 6379 is never touched, so the test may stop its own. Waits poll an observable state (a port
answering, HAProxy's view of its servers), never a fixed delay.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import Gateway, free_port, wait_until
from tests.s3server import S3Server

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 90.0  # three interpreters importing and migrating at once on a shared 2-core machine


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in ``timeout``."""
    if process.poll() is None:
        process.terminate()
        wait_or_kill(process, timeout)


def wait_or_kill(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait for a process told to stop; SIGKILL it after ``timeout`` (a second SIGTERM would cut its stop short)."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class RedisServer:
    """A private ``redis-server`` on a fixed free port, so it can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until(self._ping, timeout=15, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None


@dataclass
class Balancer:
    """HAProxy in front of the nodes, round-robin.

    Two backends over the same nodes: ``ready`` checks ``/readyz``, ``live`` checks ``/healthz``.
    Traffic goes to the ready nodes; only when none is ready (a shared dependency such as Redis
    is down for all of them, and they still serve) does it go to every live node, so an outage that
    degrades all nodes alike does not empty the balancer.
    """

    workdir: Path
    ports: Sequence[int]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "haproxy.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "haproxy.log"

    def config(self) -> str:
        servers = "\n".join(f"    server node{i + 1} 127.0.0.1:{port} check" for i, port in enumerate(self.ports))
        return f"""global
    stats socket {self.socket_path} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    # Only a connection that never reached a node is retried elsewhere: a replayed POST could be served twice.
    retries 2
    option redispatch
    default-server inter 200ms fall 2 rise 1

frontend relay
    bind 127.0.0.1:{self.port}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    use_backend live if {{ nbsrv(ready) eq 0 }}
    default_backend ready

backend ready
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}

backend live
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""

    def start(self) -> None:
        config_path = self.workdir / "haproxy.cfg"
        config_path.write_text(self.config())
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(config_path)], capture_output=True, text=True)
        assert check.returncode == 0, f"haproxy rejected its configuration:\n{check.stdout}{check.stderr}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(config_path)], stdout=log,
                                            stderr=subprocess.STDOUT)
        wait_until(self.socket_path.exists, timeout=15, what="haproxy's stats socket")

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's view: backend -> server name -> status (UP, DOWN, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        view: dict[str, dict[str, str]] = {}
        for line in lines[1:]:
            if line:
                row = dict(zip(header, line.split(",")))
                if row["svname"] not in ("FRONTEND", "BACKEND"):
                    view.setdefault(row["pxname"], {})[row["svname"]] = row["status"]
        return view

    def rotation(self) -> set[str]:
        """The servers new requests go to (see the class docstring)."""
        view = self.servers()
        ready = {name for name, status in view.get("ready", {}).items() if status.startswith("UP")}
        return ready or {name for name, status in view.get("live", {}).items() if status.startswith("UP")}

    def wait_rotation(self, names: set[str], timeout: float = 30.0) -> None:
        wait_until(lambda: self.rotation() == names, timeout, f"haproxy to route to exactly {sorted(names)}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None


@dataclass
class Node:
    """One ``polyrelay serve`` process on a port of its own, which survives restarts."""

    name: str
    port: int
    config_path: Path
    workdir: Path
    env: dict[str, str]
    database_url: str
    gateway: Gateway | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.gateway is not None
        return self.gateway.process.pid

    def spawn(self) -> None:
        """Start the process without waiting for it (so several can start at the same instant)."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "polyrelay", "serve", "--config", str(self.config_path), "--port",
                 str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
            )
        self.gateway = Gateway(self.url, self.database_url, self.config_path, process, self.log_path)

    def healthy(self) -> bool:
        """True once /healthz answers 200; raises if the process died (so a wait ends at once)."""
        assert self.gateway is not None
        if self.gateway.process.poll() is not None:
            raise NodeExited(self.name, self.gateway.process.returncode, tail(self.log_path))
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def alive(self) -> bool:
        return self.gateway is not None and self.gateway.process.poll() is None

    def kill9(self) -> None:
        assert self.gateway is not None
        os.kill(self.gateway.process.pid, signal.SIGKILL)
        self.gateway.process.wait(10)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()  # SIGTERM, SIGKILL after 20 s

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.url}) ---\n{tail(self.log_path, lines)}"


class NodeExited(AssertionError):
    def __init__(self, name: str, code: int | None, log_tail: str) -> None:
        super().__init__(f"{name} exited with {code}:\n{log_tail}")
        self.name = name


@dataclass
class Cluster:
    nodes: list[Node]
    balancer: Balancer
    redis: RedisServer
    s3: S3Server | None
    database_url: str
    config: dict[str, Any]
    cold_start_failures: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.balancer.url

    @property
    def db(self) -> Gateway:
        """Any node's database handle (they share one database)."""
        gateway = self.nodes[0].gateway
        assert gateway is not None
        return gateway

    def query(self, sql: str, **params: Any) -> list[Any]:
        return self.db.query(sql, **params)

    def logs(self, lines: int = 30) -> str:
        """The tails of every log, for assertion messages."""
        parts = [node.tail(lines) for node in self.nodes]
        parts.append(f"--- haproxy ---\n{tail(self.balancer.log_path, lines)}")
        return "\n".join(parts)

    def start_nodes(self, nodes: Sequence[Node]) -> list[str]:
        """Spawn ``nodes`` at once and wait until each is healthy; the failures, as messages."""
        for node in nodes:
            node.spawn()
        failures = []
        for node in nodes:
            try:
                wait_until(node.healthy, timeout=START_TIMEOUT_S, what=f"{node.name} /healthz")
            except AssertionError as error:
                failures.append(str(error))
        return failures

    def restart(self, node: Node) -> None:
        node.stop()
        failures = self.start_nodes([node])
        assert not failures, "\n".join(failures)
        self.balancer.wait_rotation({n.name for n in self.nodes if n.alive()})

    def stop(self) -> None:
        self.balancer.stop()
        running = [node.gateway.process for node in self.nodes if node.gateway and node.gateway.process.poll() is None]
        for process in running:  # all at once: each hands its task leases back as it stops
            process.terminate()
        for process in running:
            wait_or_kill(process)
        for node in self.nodes:
            node.stop()  # the process has exited: this closes its database handle
        self.redis.stop()
        if self.s3 is not None:
            self.s3.stop()


def start_cluster(config: dict[str, Any], workdir: Path, size: int = 3, s3: S3Server | None = None) -> Cluster:
    """Start a balancer and ``size`` nodes, all at the same instant on ``config['database_url']``.

    ``config`` gets the cluster's own settings (Redis, balancer URL, trusted proxy). Nodes that
    crash in the concurrent cold start are recorded in ``cold_start_failures`` and started again
    one at a time, so the other tests still get a cluster to test.
    """
    redis = RedisServer(workdir)
    redis.start()
    ports = [free_port() for _ in range(size)]
    balancer = Balancer(workdir, ports)
    config = {**config, "redis_url": redis.url, "trusted_proxies": ["127.0.0.1"]}
    config["files"] = {**config.get("files", {}), "public_base_url": balancer.url}
    config_path = workdir / "polyrelay.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, **(s3.env if s3 is not None else {})}
    nodes = []
    for i, port in enumerate(ports):
        node_dir = workdir / f"node{i + 1}"  # a working directory each: nothing shared through a local disk
        node_dir.mkdir()
        nodes.append(Node(f"node{i + 1}", port, config_path, node_dir, env, config["database_url"]))
    cluster = Cluster(nodes, balancer, redis, s3, config["database_url"], config)
    try:
        balancer.start()
        cluster.cold_start_failures = cluster.start_nodes(nodes)
        for node in nodes:
            if not node.alive():
                failures = cluster.start_nodes([node])
                assert not failures, "\n".join(failures)
        balancer.wait_rotation({node.name for node in nodes})
    except BaseException:
        cluster.stop()
        raise
    return cluster

