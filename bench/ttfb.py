"""Streaming time-to-first-byte at concurrency 1: direct upstream vs. through polyrelay (and the floor relay).

A separate load-generator process (run by bench/run.py). One keep-alive connection per
target; requests alternate A, B[, C], A, B ... so every target sees the same machine state.
Raw asyncio streams on uvloop rather than aiohttp: an aiohttp client costs ~0.2 ms CPU per
request on this class of machine (measured), which would add noise on 2 shared cores.

For every request it records (perf_counter, microseconds):
  headers: request written -> end of the response header block
  ttfb:    request written -> first byte of the first SSE event ("data:")
  total:   request written -> last chunk (0-length terminator)

Prints one JSON object: {"a": {...}, "b": {...}[, "c": {...}]} with percentiles per metric.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


class Conn:
    def __init__(self, host: str, port: int, path: str, body: bytes, key: str | None) -> None:
        self.host, self.port = host, port
        headers = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if key:
            headers.append(f"Authorization: Bearer {key}")
        self.request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
        self.samples: dict[str, list[float]] = {"headers": [], "ttfb": [], "total": []}
        self.errors = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def one(self) -> None:
        reader = self.reader
        t0 = time.perf_counter()
        self.writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        t_head = time.perf_counter()
        status = int(head.split(b" ", 2)[1])
        lower = head.lower()
        t_first = None
        if b"transfer-encoding: chunked" in lower:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                data = await reader.readexactly(size + 2)
                if t_first is None and b"data:" in data:
                    t_first = time.perf_counter()
        else:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            t_first = time.perf_counter()
        t_end = time.perf_counter()
        if status != 200 or t_first is None:
            self.errors += 1
            return
        self.samples["headers"].append((t_head - t0) * 1e6)
        self.samples["ttfb"].append((t_first - t0) * 1e6)
        self.samples["total"].append((t_end - t0) * 1e6)

    def summary(self) -> dict:
        out: dict = {"n": len(self.samples["ttfb"]), "errors": self.errors}
        for name, values in self.samples.items():
            out[name] = {"p50": _pct(values, 50), "p90": _pct(values, 90), "p99": _pct(values, 99)}
        return out


async def run(args: argparse.Namespace) -> dict:
    body = args.body.encode()
    conns = {"a": Conn("127.0.0.1", args.port_a, args.path, body, None),
             "b": Conn("127.0.0.1", args.port_b, args.path, body, args.key_b)}
    if args.port_c:
        conns["c"] = Conn("127.0.0.1", args.port_c, args.path, body, args.key_c)
    for conn in conns.values():
        await conn.open()
    warm_until = time.perf_counter() + args.warmup
    while time.perf_counter() < warm_until:
        for conn in conns.values():
            await conn.one()
    for conn in conns.values():
        conn.samples = {k: [] for k in conn.samples}
        conn.errors = 0
    end = time.perf_counter() + args.duration
    while time.perf_counter() < end:
        for conn in conns.values():
            await conn.one()
    return {name: conn.summary() for name, conn in conns.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-a", type=int, required=True, help="direct upstream")
    parser.add_argument("--port-b", type=int, required=True, help="polyrelay")
    parser.add_argument("--key-b", default=None)
    parser.add_argument("--port-c", type=int, default=0, help="the floor relay (optional)")
    parser.add_argument("--key-c", default=None)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--body", required=True)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
