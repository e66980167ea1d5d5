#!/usr/bin/env python3
"""Task-engine benchmark: gateway CPU per Midjourney submit and per task status update.

    .venv/bin/python bench/tasks.py [-n 3000] [-c 32] [--poll-interval 5]
                                    [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Starts the wire-accurate fake midjourney-proxy (tests/fakes/midjourney_proxy.py, in its own
process, plus a counter of status polls) and one ``polyrelay serve`` (SQLite in a temp dir, or a
fresh database created on the PostgreSQL server of ``--database-url`` and dropped after). Then
(1) submits N ``/mj/submit/imagine`` at concurrency c with httpx, (2) lets the poller drive every
task to SUCCESS (the fake needs three polls per task), and prints the gateway's CPU (utime+stime
of its process tree, from /proc) and the wall time of each phase. A status update is one task
polled and written; polls that fall inside the submit phase are counted and reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run  # noqa: E402
from run import CLK_TCK, HOST, PY, ROOT, cpu_seconds, free_port, start_gateway, stop  # noqa: E402

TOKEN_KEY = "sk-pr-bench-tasks-0123456789abcdefghijklmnopqrstuvwxyz"
PRICE_USD = 0.01

FAKE = """\
import sys
from aiohttp import web
from tests.fakes import midjourney_proxy
from tests.fakes.server import KNOBS

app = midjourney_proxy.create_app()
app[KNOBS] = {}

async def stats(request):
    polls = request.app[KNOBS].get("polls", {})
    return web.json_response({"polls": sum(polls.values())})

app.router.add_get("/_bench/stats", stats)
print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def start_fake(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PY, "-c", FAKE, str(port)], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("fake midjourney-proxy did not start")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{HOST}:{port}/_bench/stats", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("fake midjourney-proxy does not answer")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of ``pid`` (to see whether the event loop or the DB thread spends it)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        name = "event-loop" if int(tid) == pid else f"thread-{tid}"
        fields = raw.rsplit(b")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> str:
    return ", ".join(f"{name} {after[name] - before.get(name, 0):.2f}" for name in sorted(after)
                     if after[name] - before.get(name, 0) >= 0.01)


def upstream_polls(port: int) -> int:
    return int(httpx.get(f"http://{HOST}:{port}/_bench/stats", timeout=10).json()["polls"])


def write_config(tmp: Path, database_url: str, upstream_port: int, poll_interval: float, extra: dict) -> Path:
    config = {
        "database_url": database_url,
        "log_level": "warning",
        "tasks": {"poll_interval_s": poll_interval, **extra},
        "channels": [{"name": "mj", "type": "midjourney", "base_url": f"http://{HOST}:{upstream_port}",
                      "keys": ["mj-upstream-secret"], "models": ["mj_*"]}],
        "tokens": [{"name": "bench", "key": TOKEN_KEY, "quota_usd": 1_000_000}],
        "prices": {"mj_imagine": {"per_request": PRICE_USD}},
    }
    path = tmp / "polyrelay.yaml"
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


async def submit_all(port: int, n: int, concurrency: int) -> list[str]:
    ids: list[str] = []
    failures: list[str] = []
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits, timeout=60,
                                 headers={"Authorization": f"Bearer {TOKEN_KEY}"}) as client:

        async def worker() -> None:
            for i in queue:
                try:
                    response = await client.post("/mj/submit/imagine", json={"prompt": f"bench task {i}"})
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A keep-alive connection the server closed as it was reused: once more on a new one.
                    response = await client.post("/mj/submit/imagine", json={"prompt": f"bench task {i}"})
                body = response.json()
                if response.status_code == 200 and body.get("code") == 1:
                    ids.append(body["result"])
                else:
                    failures.append(f"{response.status_code} {response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        raise RuntimeError(f"{len(failures)} submits failed, e.g. {failures[0]}")
    return ids


def fresh_postgres(admin_url: str) -> tuple[str, str]:
    from polyrelay.store.db import normalize_url

    name = f"polyrelay_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def drop_postgres(admin_url: str, name: str) -> None:
    from polyrelay.store.db import normalize_url

    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--tasks", type=int, default=3000, help="tasks to submit [3000]")
    parser.add_argument("-c", "--concurrency", type=int, default=32, help="concurrent submits [32]")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="tasks.poll_interval_s [5]")
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL server's URL: a fresh database is created there (and dropped after); "
                             "default SQLite in a temp dir")
    parser.add_argument("--tasks-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="another tasks: setting, e.g. claim_batch=500 (value parsed as JSON)")
    parser.add_argument("--profile", choices=["submit", "poll"], default=None,
                        help="record a py-spy profile (raw collapsed stacks) of that phase into bench/results/")
    parser.add_argument("--src", type=Path, default=None,
                        help="run the gateway from this copy of src/ (PYTHONPATH), e.g. a frozen baseline")
    parser.add_argument("--timeout", type=float, default=600.0, help="most seconds to wait for SUCCESS [600]")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    if args.src is not None:
        run.SRC = args.src.resolve()
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.tasks_setting)}
    tmp = Path(tempfile.mkdtemp(prefix="polyrelay-bench-tasks-"))
    env: dict[str, str] = {}
    pg_name = ""
    if args.database_url:
        from polyrelay.store.crypto import SECRET_KEY_ENV, generate_secret_key

        database_url, pg_name = fresh_postgres(args.database_url)
        env[SECRET_KEY_ENV] = os.environ.get(SECRET_KEY_ENV) or generate_secret_key()
    else:
        database_url = f"sqlite:///{tmp / 'bench.db'}"
    up_port, gw_port = free_port(), free_port()
    fake = gateway = None
    results: dict = {"src": run.src_fingerprint(), "tasks": args.tasks, "concurrency": args.concurrency,
                     "poll_interval_s": args.poll_interval, "database": "postgresql" if pg_name else "sqlite",
                     "tasks_settings": extra}
    try:
        fake = start_fake(up_port)
        config = write_config(tmp, database_url, up_port, args.poll_interval, extra)
        gateway = start_gateway("uvicorn", config, gw_port, [], env, tmp / "gateway.log")
        pid = gateway.proc.pid
        db = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))

        def spy(phase: str, seconds: float) -> subprocess.Popen[bytes] | None:
            if args.profile != phase:
                return None
            out = ROOT / "bench" / "results" / f"tasks-{phase}-{results['database']}.txt"
            out.parent.mkdir(exist_ok=True)
            print(f"profiling the {phase} phase into {out}")
            return subprocess.Popen([str(Path(PY).parent / "py-spy"), "record", "--pid", str(pid), "--nonblocking",
                                     "--threads", "--gil", "-r", "250", "-d", str(int(seconds)), "--format", "raw",
                                     "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        # Warm-up: one task, so imports and first-use costs stay out of the measurement.
        asyncio.run(submit_all(gw_port, 1, 1))
        polls0 = upstream_polls(up_port)

        profiler = spy("submit", 15)
        threads0 = thread_cpu(pid)
        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        ids = asyncio.run(submit_all(gw_port, args.tasks, args.concurrency))
        cpu1, wall1 = cpu_seconds(pid), time.perf_counter()
        threads1 = thread_cpu(pid)
        polls1 = upstream_polls(up_port)
        print(f"submit: {wall1 - wall0:.2f} s wall ({len(ids) / (wall1 - wall0):.0f}/s), gateway CPU {cpu1 - cpu0:.2f} s "
              f"= {(cpu1 - cpu0) * 1000 / len(ids):.3f} ms/submit"
              + (f"  ({polls1 - polls0} status updates fell inside this phase)" if polls1 > polls0 else "")
              + f"\n  CPU s by thread: {_delta(threads1, threads0)}", flush=True)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes what it has so far
            profiler.wait()

        profiler = spy("poll", 4 * args.poll_interval + 10)
        with db.connect() as connection:
            def done() -> int:
                return int(connection.execute(text("SELECT COUNT(*) FROM tasks WHERE status = 'SUCCESS'")).scalar_one())

            total = int(connection.execute(text("SELECT COUNT(*) FROM tasks")).scalar_one())
            while (finished := done()) < total:
                if time.perf_counter() - wall1 > args.timeout:
                    raise RuntimeError(f"only {finished} of {total} tasks reached SUCCESS")
                connection.commit()
                time.sleep(0.2)
            rows = connection.execute(text("SELECT settlement, COUNT(*) FROM tasks GROUP BY settlement")).all()
        cpu2, wall2 = cpu_seconds(pid), time.perf_counter()
        threads2 = thread_cpu(pid)
        polls2 = upstream_polls(up_port)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes what it has so far
            profiler.wait()
        db.dispose()

        assert dict(rows) == {"kept": total}, rows
        submit_cpu, poll_cpu = cpu1 - cpu0, cpu2 - cpu1
        during_submit, during_poll = polls1 - polls0, polls2 - polls1
        results.update({
            "submits": len(ids),
            "submit_wall_s": wall1 - wall0,
            "submit_rps": len(ids) / (wall1 - wall0),
            "submit_cpu_s": submit_cpu,
            "cpu_ms_per_submit": submit_cpu * 1000 / len(ids),
            "status_updates_during_submit": during_submit,
            "poll_wall_s": wall2 - wall1,
            "poll_cpu_s": poll_cpu,
            "status_updates": during_poll,
            "cpu_ms_per_status_update": poll_cpu * 1000 / max(during_poll, 1),
            # The poller runs during the submit phase too: its share, at the poll phase's cost per update, taken out.
            "cpu_ms_per_submit_net": (submit_cpu - during_submit * poll_cpu / max(during_poll, 1)) * 1000 / len(ids),
            "submit_cpu_by_thread": _delta(threads1, threads0),
            "poll_cpu_by_thread": _delta(threads2, threads1),
        })
    finally:
        stop(gateway.proc if gateway else None)
        stop(fake)
        if pg_name:
            drop_postgres(args.database_url, pg_name)

    r = results
    print(f"\nsrc {r['src']}  {r['database']}  N={r['tasks']} c={r['concurrency']} poll_interval_s={r['poll_interval_s']}"
          f"  {r['tasks_settings'] or ''}")
    print(f"poll:   {r['poll_wall_s']:.2f} s wall to all SUCCESS, {r['status_updates']} status updates, gateway CPU "
          f"{r['poll_cpu_s']:.2f} s = {r['cpu_ms_per_status_update']:.3f} ms/update")
    print(f"  CPU s by thread: {r['poll_cpu_by_thread']}")
    print(f"=> {r['cpu_ms_per_submit_net']:.3f} ms CPU per submit (net of the {r['status_updates_during_submit']} updates "
          f"in the submit phase), {r['cpu_ms_per_status_update']:.3f} ms CPU per status update")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
