"""What metrics and the request log cost one request: the hooks ``Settler.finish`` and the failover loop call.

Times, per request, ``metrics.request`` (the usage row's numbers added to plain sums),
``metrics.sync`` amortised (the sums handed to prometheus-client, once a second at 1000 requests a second),
``metrics.upstream_answered`` (the attempt's upstream status) and ``logs.request`` (off by
default; with ``log_format: json`` a JSON line to a null stream), in one process and in
prometheus-client's multiprocess mode (``--workers N``: values in memory-mapped files). Rows cycle
through a few models and channels, as a busy gateway's would. Target: <= 20 µs per request.

    .venv/bin/python bench/metrics_cost.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any


def _rows(count: int) -> list[dict[str, Any]]:
    return [{
        "request_id": f"req-{i}", "token_name": "bench", "user_id": 1, "family": "openai",
        "endpoint": "chat.completions", "model": f"model-{i % 4}", "channel_name": f"channel-{i % 3}",
        "status_code": 200 if i % 10 else 429, "stream": False, "attempts": 1, "latency_ms": 123.4, "ttfb_ms": 45.6,
        "prompt_tokens": 120, "completion_tokens": 40, "cached_tokens": 0, "cost_micros": 720, "client_ip": "10.0.0.1",
        "error": "",
    } for i in range(count)]


def measure(requests: int) -> None:
    """Print µs per request of each hook, in this process's prometheus-client mode."""
    from polyrelay.telemetry import logs, metrics

    rows = _rows(64)
    mode = "multiprocess" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "one process"

    def per_request(hook: Any) -> float:
        """CPU µs per call, the best of five rounds (a busy machine inflates wall time, not this)."""
        for row in rows:  # bind the children first, as the first requests of a running gateway do
            hook(row)
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for i in range(requests // 5):
                hook(rows[i & 63])
            best = min(best, (time.process_time() - started) / (requests // 5) * 1e6)
        return best

    results = {
        "metrics.request": per_request(lambda row: metrics.request(row, "default")),
        "metrics.upstream_answered": per_request(lambda row: metrics.upstream_answered(row["channel_name"], 200)),
        "logs.request (text: off)": per_request(logs.request),
    }
    started = time.process_time()
    for _ in range(100):  # a second of a busy gateway between syncs: 1000 requests over the 64 rows' label sets
        for i in range(1000):
            metrics.request(rows[i & 63], "default")
            metrics.upstream_answered(rows[i & 63]["channel_name"], 200)
        metrics.sync()
    results["metrics.sync, per request"] = (time.process_time() - started) / 100_000 * 1e6 - (
        results["metrics.request"] + results["metrics.upstream_answered"])
    logs.configure("info", "json")
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115 - the process's lifetime
    results["logs.request (json)"] = per_request(logs.request)
    for name, micros in results.items():
        print(f"{mode:>12}  {name:<28} {micros:6.2f} µs/request")
    total = sum(micros for name, micros in results.items() if name != "logs.request (json)")
    print(f"{mode:>12}  {'all of it, default logs':<28} {total:6.2f} µs/request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.requests)
        return
    measure(args.requests)
    with tempfile.TemporaryDirectory() as directory:  # the mode is chosen at import: a fresh process
        subprocess.run([sys.executable, __file__, "--child", "--requests", str(args.requests)], check=True,
                       env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory})


if __name__ == "__main__":
    main()
