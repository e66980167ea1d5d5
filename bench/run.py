#!/usr/bin/env python3
"""polyrelay benchmark: one command, loopback only, about 2 minutes.

    .venv/bin/python bench/run.py [--duration 5] [--server uvicorn|granian] [--json OUT]

Starts (1) bench/fake_upstream.py, (2) polyrelay as a subprocess with a generated
config (SQLite in a temp dir or a fresh PostgreSQL database, a token with a quota, a
price for the model), (3) bench/floor_relay.py, the simplest relay (the floor), and
(4) load generators in their own processes: `wrk` (throughput and latency, installed
with apt-get if missing) and bench/ttfb.py (streaming time-to-first-byte). For
concurrency 1, 16 and 64, non-streaming and streaming, it measures the upstream
directly, through the floor and through polyrelay in the same run, and prints the
comparison, polyrelay's ratios to the floor, the gateway's CPU time per request (from
/proc), RSS, and time to /healthz 200.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = ROOT / ".venv" / "bin"
PY = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
HOST = "127.0.0.1"
MODEL = "bench-model"
TOKEN_KEY = "sk-pr-bench-0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
PATH = "/v1/chat/completions"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello in one short sentence."}], "max_tokens": 64}

TARGETS = {  # issue 18: against the direct upstream, and as ratios to the floor relay in the same run
    "added_p50_ms_c1": 0.5,
    "added_p99_ms_c1": 2.0,
    "cpu_ms_per_req_c64": 0.24,
    "ttfb_added_ms": 0.3,
    "idle_rss_mb": 70,
    "ready_s": 1.0,
    "floor_rps_json_c64": 1.0,
    "floor_rps_stream_c16": 0.9,
    "floor_p99_json_c64": 1.5,
}


# ---------------------------------------------------------------- /proc helpers


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """pid and all its descendants (granian runs its worker in a child process)."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree (all threads), in seconds."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total / 2**20


SRC = ROOT / "src"


def src_fingerprint() -> str:
    """Hash of src/ (the tree changes between runs; numbers are only comparable for one hash)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(SRC.rglob("*.py")):
        digest.update(str(path.relative_to(SRC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def healthz_ok(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=0.5)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def wait_ready(port: int, proc: subprocess.Popen, started: float, timeout: float = 30.0) -> float:
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before /healthz answered")
        if healthz_ok(port):
            return time.perf_counter() - started
        time.sleep(0.005)
    raise RuntimeError("timed out waiting for /healthz")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- processes


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it with apt-get ...", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], env=env, capture_output=True).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], env=env, capture_output=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], env=env, check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("could not install wrk")
    return found


def start_upstream(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([PY, str(BENCH / "fake_upstream.py"), "--port", str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("fake upstream did not start")
    return proc


def start_floor(port: int, upstream_port: int) -> subprocess.Popen:
    proc = subprocess.Popen([PY, str(BENCH / "floor_relay.py"), "--port", str(port), "--upstream",
                             f"http://{HOST}:{upstream_port}", "--key", TOKEN_KEY], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("floor relay did not start")
    return proc


def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A new, empty database on the server of ``admin_url``, and how to drop it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"polyrelay_bench_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def write_config(tmp: Path, upstream_port: int, database_url: str, traces_port: int | None = None) -> Path:
    config = tmp / "polyrelay.yaml"
    # Every request traced and propagated (the dearest settings), exported to a sink that answers 200.
    tracing = (f"tracing: {{enabled: true, endpoint: 'http://{HOST}:{traces_port}/v1/traces', sample_ratio: 1.0}}\n"
               if traces_port is not None else "")
    config.write_text(tracing +
        f"""\
database_url: {database_url}
log_level: warning
channels:
  - name: fake-upstream
    type: openai
    base_url: http://{HOST}:{upstream_port}
    keys: [sk-upstream-bench-key]
    models: [{MODEL}]
tokens:
  - name: bench
    key: {TOKEN_KEY}
    quota_usd: 1000000
prices:
  {MODEL}: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}
"""
    )
    return config


@dataclass
class Gateway:
    proc: subprocess.Popen
    port: int
    ready_s: float
    extra: dict = field(default_factory=dict)


def start_gateway(server: str, config: Path, port: int, server_args: list[str], env_extra: dict, log: Path,
                  python_flags: list[str] | None = None) -> Gateway:
    env = {**os.environ, **env_extra}
    if SRC != ROOT / "src":  # a scratch copy of the package shadows the editable install
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    extra: dict = {}
    if server == "uvicorn":
        cmd = [PY, *(python_flags or []), "-m", "polyrelay", "serve", "--config", str(config), "--port", str(port)]
    elif server == "granian":
        # granian serves the app factory only: migrate and seed first, like `polyrelay serve` does.
        t = time.perf_counter()
        subprocess.run([str(VENV_BIN / "polyrelay"), "migrate", "--config", str(config)], check=True,
                       capture_output=True, env=env)
        extra["migrate_s"] = time.perf_counter() - t
        env["POLYRELAY_CONFIG_FILE"] = str(config)
        cmd = [str(VENV_BIN / "granian"), "--interface", "asgi", "--factory", "--host", HOST, "--port", str(port),
               "--loop", "uvloop", "--no-ws", "--log-level", "warning", "--no-access-log", *server_args,
               "polyrelay.app:app_from_env"]
    elif server == "custom":  # any command; {port} and {config} are substituted
        cmd = [a.format(port=port, config=config, python=PY) for a in server_args]
    else:
        raise ValueError(server)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=str(config.parent))
    ready = wait_ready(port, proc, started)
    return Gateway(proc, port, ready, extra)


# ---------------------------------------------------------------- wrk

LUA = """\
wrk.method = "POST"
wrk.path = "{path}"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def wrk_script(tmp: Path, name: str, body: bytes, key: str | None) -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    path = tmp / f"{name}.lua"
    path.write_text(LUA.format(path=PATH, body=body.decode(), auth=auth))
    return path


def run_wrk(wrk: str, port: int, script: Path, conns: int, seconds: float) -> dict:
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(script), f"http://{HOST}:{port}{PATH}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRKJSON "))
    r = json.loads(line[8:])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"]
    return r


def phase(wrk: str, port: int, script: Path, conns: int, seconds: float, warmup: float, watch: dict[str, int],
          profile_to: Path | None = None) -> dict:
    if warmup > 0:
        run_wrk(wrk, port, script, conns, warmup)
    spy = None
    if profile_to is not None:  # py-spy samples the gateway without stopping it (--nonblocking)
        spy = subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid", str(watch["gateway"]), "--nonblocking",
                                "--threads", "-r", "250", "-d", str(max(1, round(seconds))), "--format", "raw",
                                "-o", str(profile_to)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    result = run_wrk(wrk, port, script, conns, seconds)
    if spy is not None:
        spy.wait()
    for name, pid in watch.items():
        cpu = cpu_seconds(pid) - before[name]
        result[f"cpu_{name}_s"] = cpu
        result[f"cpu_{name}_ms_per_req"] = cpu * 1000 / max(result["requests"], 1)
    return result


# ---------------------------------------------------------------- importtime


def importtime_breakdown(config: Path, tmp: Path, env: dict[str, str], top: int = 12) -> dict:
    """Start the gateway under -X importtime and aggregate self-time by top-level package."""
    port = free_port()
    log = tmp / "importtime.log"
    if log.exists():
        log.unlink()
    gw = start_gateway("uvicorn", config, port, [], env, log, python_flags=["-X", "importtime"])
    stop(gw.proc)
    per_pkg: dict[str, int] = {}
    total = 0
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        self_us, name = int(parts[0]), parts[2]
        total += self_us
        pkg = name.strip().split(".")[0]
        per_pkg[pkg] = per_pkg.get(pkg, 0) + self_us
    ranked = sorted(per_pkg.items(), key=lambda kv: -kv[1])[:top]
    return {"ready_s_under_importtime": gw.ready_s, "imports_total_s": total / 1e6,
            "by_package_s": {k: v / 1e6 for k, v in ranked}}


# ---------------------------------------------------------------- report


def fmt_table(rows: list[dict]) -> str:
    head = (
        f"{'mode':<7}{'conc':>5} | {'direct rps':>10}{'p50 ms':>8}{'p99 ms':>8} | {'relay rps':>10}{'p50 ms':>8}"
        f"{'p99 ms':>8} | {'rps %':>6}{'+p50 ms':>9}{'+p99 ms':>9} | {'gw CPU ms/req':>13}{'gw CPU %':>9} | {'errs':>5}"
    )
    if any("floor" in r for r in rows):
        head += f" | {'floor rps':>9}{'p99 ms':>8}{'CPU ms/req':>11} | {'x floor':>8}{'p99/floor':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        d, t = r["direct"], r["relay"]
        line = (
            f"{r['mode']:<7}{r['conc']:>5} | {d['rps']:>10.0f}{d['p50'] / 1000:>8.3f}{d['p99'] / 1000:>8.3f} | "
            f"{t['rps']:>10.0f}{t['p50'] / 1000:>8.3f}{t['p99'] / 1000:>8.3f} | "
            f"{100 * t['rps'] / d['rps']:>6.1f}{(t['p50'] - d['p50']) / 1000:>9.3f}{(t['p99'] - d['p99']) / 1000:>9.3f} | "
            f"{t['cpu_gateway_ms_per_req']:>13.3f}{100 * t['cpu_gateway_s'] / (t['duration_us'] / 1e6):>9.0f} | "
            f"{d['errors'] + t['errors'] + r.get('floor', {}).get('errors', 0):>5}"
        )
        if "floor" in r:
            f = r["floor"]
            line += (f" | {f['rps']:>9.0f}{f['p99'] / 1000:>8.3f}{f['cpu_floor_ms_per_req']:>11.3f} | "
                     f"{t['rps'] / f['rps']:>8.2f}{t['p99'] / f['p99']:>10.2f}")
        lines.append(line)
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def target_line(label: str, value: float, unit: str, key: str, at_most: bool = True) -> str:
    goal = TARGETS[key]
    ok = value <= goal if at_most else value >= goal
    return f"{label:<38}{value:>9.3f} {unit:<7}(target {'<=' if at_most else '>='} {goal:g})  {verdict(ok)}"


def summary_lines(results: dict) -> list[str]:
    """The issue's targets, each with its verdict: added latency against the direct upstream, throughput
    and tails as ratios to the floor relay measured in the same run."""
    rows = {(r["mode"], r["conc"]): r for r in results["rows"]}
    lines = []
    if ("json", 1) in rows:
        r = rows[("json", 1)]
        lines.append(target_line("added latency c=1 JSON p50", (r["relay"]["p50"] - r["direct"]["p50"]) / 1000, "ms",
                                 "added_p50_ms_c1"))
        lines.append(target_line("added latency c=1 JSON p99", (r["relay"]["p99"] - r["direct"]["p99"]) / 1000, "ms",
                                 "added_p99_ms_c1"))
    if ("json", 64) in rows:
        r = rows[("json", 64)]
        lines.append(target_line("gateway CPU c=64 JSON", r["relay"]["cpu_gateway_ms_per_req"], "ms/req",
                                 "cpu_ms_per_req_c64"))
        if "floor" in r:
            lines.append(target_line("rps c=64 JSON / floor", r["relay"]["rps"] / r["floor"]["rps"], "x",
                                     "floor_rps_json_c64", at_most=False))
            lines.append(target_line("p99 c=64 JSON / floor", r["relay"]["p99"] / r["floor"]["p99"], "x",
                                     "floor_p99_json_c64"))
    if ("stream", 16) in rows and "floor" in rows[("stream", 16)]:
        r = rows[("stream", 16)]
        lines.append(target_line("rps c=16 SSE / floor", r["relay"]["rps"] / r["floor"]["rps"], "x",
                                 "floor_rps_stream_c16", at_most=False))
    if "ttfb" in results:
        t = results["ttfb"]
        lines.append(target_line("stream TTFB c=1 added p50", (t["b"]["ttfb"]["p50"] - t["a"]["ttfb"]["p50"]) / 1000, "ms",
                                 "ttfb_added_ms")
                     + f"  [direct {t['a']['ttfb']['p50'] / 1000:.3f} ms, relay {t['b']['ttfb']['p50'] / 1000:.3f} ms"
                     + (f", floor {t['c']['ttfb']['p50'] / 1000:.3f} ms" if "c" in t else "")
                     + f"; added p99 {(t['b']['ttfb']['p99'] - t['a']['ttfb']['p99']) / 1000:.3f} ms, n={t['b']['n']}]")
    lines.append(target_line("idle RSS", results["idle_rss_mb"], "MB", "idle_rss_mb"))
    lines.append(f"{'RSS after load':<38}{results['rss_after_load_mb']:>9.3f} MB")
    lines.append(target_line("start -> /healthz 200, existing db", results["ready_existing_db_s"], "s", "ready_s")
                 + f"  [fresh db {results['ready_fresh_db_s']:.3f} s"
                 + (f", + separate migrate {results['migrate_s']:.3f} s" if "migrate_s" in results else "") + "]")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase [5]")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each phase [1]")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--server", choices=["uvicorn", "granian", "custom"], default="uvicorn")
    parser.add_argument("--server-arg", action="append", default=[], help="extra args for granian / the custom command")
    parser.add_argument("--src", type=Path, default=None,
                        help="run the gateway from this copy of src/ (PYTHONPATH), e.g. a frozen snapshot")
    parser.add_argument("--profile", default="", help="MODE:CONC,... e.g. json:64 -> py-spy raw profile of that "
                        "relay phase into bench/results/ (needs .venv/bin/py-spy)")
    parser.add_argument("--client-include-usage", action="store_true",
                        help="streaming callers send stream_options.include_usage (default: polyrelay adds it)")
    parser.add_argument("--no-importtime", action="store_true", help="skip the -X importtime breakdown")
    parser.add_argument("--hold", action="store_true", help="after the run, keep the gateway up (for profiling)")
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor relay (bench/floor_relay.py)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the gateway's database: SQLite in a temp dir, or a fresh database on --postgres-url")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="a server where the run may create and drop a database")
    parser.add_argument("--tracing", action="store_true", help="tracing on, exporting OTLP/HTTP to a second fake "
                        "upstream as the sink (it answers 200 to anything); needs the otel extra")
    args = parser.parse_args()

    global SRC
    if args.src is not None:
        SRC = args.src.resolve()
    wrk = ensure_wrk()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    modes = args.modes.split(",")
    bodies = {
        "json": json.dumps(BODY, separators=(",", ":")).encode(),
        "stream": json.dumps(
            {**BODY, "stream": True, **({"stream_options": {"include_usage": True}} if args.client_include_usage else {})},
            separators=(",", ":"),
        ).encode(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="polyrelay-bench-"))
    up_port, gw_port, floor_port = free_port(), free_port(), free_port()
    upstream = gateway = floor = traces_sink = None
    drop_database: Callable[[], None] | None = None
    profiles = {tuple(p.split(":")) for p in args.profile.split(",") if p}
    results: dict = {"server": args.server, "server_args": args.server_arg, "database": args.database,
                     "tracing": args.tracing,
                     "src": src_fingerprint(), "duration_s": args.duration,
                     "cpus": os.cpu_count(), "rows": []}
    try:
        upstream = start_upstream(up_port)
        database_url = f"sqlite:///{tmp / 'bench.db'}"
        gateway_env: dict[str, str] = {}
        if args.database == "postgresql":
            from cryptography.fernet import Fernet

            database_url, drop_database = fresh_postgres(args.postgres_url)
            # A shared database needs the operator's key for upstream keys at rest (SQLite keeps one beside it).
            gateway_env["POLYRELAY_SECRET_KEY"] = Fernet.generate_key().decode()
        traces_port = None
        if args.tracing:
            traces_port = free_port()
            traces_sink = start_upstream(traces_port)
        config = write_config(tmp, up_port, database_url, traces_port)
        if not args.no_floor:
            floor = start_floor(floor_port, up_port)
        log = tmp / "gateway.log"

        # Readiness, twice: a fresh database (migrations run) and a restart on the existing one.
        gateway = start_gateway(args.server, config, gw_port, args.server_arg, gateway_env, log)
        results["ready_fresh_db_s"] = gateway.ready_s
        results.update(gateway.extra)
        stop(gateway.proc)
        gateway = start_gateway(args.server, config, gw_port, args.server_arg, gateway_env, log)
        results["ready_existing_db_s"] = gateway.ready_s
        time.sleep(1.0)
        results["idle_rss_mb"] = rss_mb(gateway.proc.pid)
        watch = {"gateway": gateway.proc.pid, "upstream": upstream.pid}
        if floor is not None:
            watch["floor"] = floor.pid
        print(f"gateway ({args.server}) ready in {results['ready_fresh_db_s']:.3f} s (fresh db), "
              f"{results['ready_existing_db_s']:.3f} s (existing db); idle RSS {results['idle_rss_mb']:.1f} MB",
              file=sys.stderr)

        for mode in modes:
            direct_script = wrk_script(tmp, f"{mode}-direct", bodies[mode], None)
            relay_script = wrk_script(tmp, f"{mode}-relay", bodies[mode], TOKEN_KEY)
            for conns in concurrency:
                row = {"mode": mode, "conc": conns}
                row["direct"] = phase(wrk, up_port, direct_script, conns, args.duration, args.warmup, watch)
                if floor is not None:
                    row["floor"] = phase(wrk, floor_port, relay_script, conns, args.duration, args.warmup, watch)
                prof = None
                if (mode, str(conns)) in profiles:
                    prof = BENCH / "results" / f"profile-{args.server}-{mode}-{conns}.txt"
                    prof.parent.mkdir(exist_ok=True)
                row["relay"] = phase(wrk, gw_port, relay_script, conns, args.duration, args.warmup, watch, prof)
                if prof is not None:
                    row["relay"]["profile"] = str(prof)
                results["rows"].append(row)
                print(f"  {mode} c={conns}: direct {row['direct']['rps']:.0f} rps, relay {row['relay']['rps']:.0f} rps"
                      + (f", floor {row['floor']['rps']:.0f} rps" if "floor" in row else ""), file=sys.stderr)

        if "stream" in modes:
            out = subprocess.run(
                [PY, str(BENCH / "ttfb.py"), "--port-a", str(up_port), "--port-b", str(gw_port), "--key-b", TOKEN_KEY,
                 "--body", bodies["stream"].decode(), "--duration", str(max(2.0, args.duration * 0.8)),
                 *(["--port-c", str(floor_port), "--key-c", TOKEN_KEY] if floor is not None else [])],
                capture_output=True, text=True, check=True,
            ).stdout
            results["ttfb"] = json.loads(out)

        results["rss_after_load_mb"] = rss_mb(gateway.proc.pid)
        if args.hold:
            print(f"holding: gateway pid {gateway.proc.pid} on port {gw_port}, upstream on {up_port}, "
                  f"key {TOKEN_KEY}, config {config}; Ctrl-C to end", file=sys.stderr)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        stop(gateway.proc)
        gateway = None
        if args.server == "uvicorn" and not args.no_importtime and results["ready_existing_db_s"] > TARGETS["ready_s"]:
            results["importtime"] = importtime_breakdown(config, tmp, gateway_env)
    finally:
        stop(gateway.proc if gateway else None)
        stop(floor)
        stop(upstream)
        stop(traces_sink)
        if drop_database is not None:
            drop_database()

    # -------------------------------------------------------------- print
    print(f"\npolyrelay bench: server={args.server} {' '.join(args.server_arg)} database={args.database}"
          f"  src={results['src']}  tracing={'on' if args.tracing else 'off'}  cpus={os.cpu_count()}  "
          f"phase={args.duration:g}s (+{args.warmup:g}s warmup)  wrk -t1; latencies are full responses")
    print(fmt_table(results["rows"]))
    print("\n" + "\n".join(summary_lines(results)))
    if "importtime" in results:
        it = results["importtime"]
        print(f"\nimports at start (-X importtime, self time by top-level package; total {it['imports_total_s']:.3f} s):")
        print("  " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in it["by_package_s"].items()))
    up = [r["direct"]["cpu_upstream_ms_per_req"] for r in results["rows"]]
    if up:
        print(f"\n(fake upstream CPU: {min(up):.3f}-{max(up):.3f} ms/req in direct phases)")
    for r in results["rows"]:
        if "profile" in r["relay"]:
            print(f"profile of relay {r['mode']} c={r['conc']} (py-spy, nonblocking; throughput above is perturbed): "
                  f"{r['relay']['profile']}  -> .venv/bin/python bench/profile_summary.py FILE "
                  f"--cpu-ms-per-req {r['relay']['cpu_gateway_ms_per_req']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
