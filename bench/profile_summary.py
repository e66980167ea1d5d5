"""Summarise a py-spy raw (collapsed-stack) profile of the gateway: where does CPU go?

    py-spy record --pid PID --nonblocking --threads -r 250 -d 8 --format raw -o prof.txt
    python bench/profile_summary.py prof.txt [--requests N]

Each sample is attributed to the innermost frame that belongs to a non-stdlib package
(stdlib helpers such as uuid, hashlib, datetime, asyncio are charged to their caller,
and also listed on their own under "leaf functions"). A sample whose innermost frame is
the event loop's run() itself is time spent inside uvloop's C code (socket I/O,
callback dispatch), shown as "event loop (uvloop C)". With --requests, percentages are
also turned into milliseconds of CPU per request, using --cpu-ms-per-req.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^():]+)(?::(?P<line>\d+))?\)$")
STDLIB = set(sys.stdlib_module_names) | {"<frozen runpy>", "<frozen importlib._bootstrap>"}

BUCKETS = [  # (prefix of the frame's path, bucket); first match wins
    ("polyrelay/store/writer.py", "polyrelay: batch writer (loop side)"),
    ("polyrelay/relay/pipeline.py", "polyrelay: relay pipeline"),
    ("polyrelay/providers/", "polyrelay: openai adaptor"),
    ("polyrelay/api/", "polyrelay: api/openai.py (parse, read body)"),
    ("polyrelay/relay/", "polyrelay: auth/routing"),
    ("polyrelay/billing/", "polyrelay: billing"),
    ("polyrelay/", "polyrelay: other"),
    ("uvicorn/", "server: uvicorn (httptools protocol)"),
    ("granian/", "server: granian"),
    ("starlette/", "ASGI framework: starlette"),
    ("aiohttp/", "upstream client: aiohttp"),
    ("multidict/", "upstream client: aiohttp"),
    ("yarl/", "upstream client: aiohttp"),
    ("propcache/", "upstream client: aiohttp"),
    ("aiohappyeyeballs/", "upstream client: aiohttp"),
    ("sqlalchemy/", "db: sqlalchemy"),
    ("orjson", "json: orjson"),
]


def parse(line: str) -> tuple[list[tuple[str, str]], int] | None:
    line = line.rstrip("\n")
    if not line:
        return None
    stack, _, count = line.rpartition(" ")
    frames = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw)
        frames.append((m.group("func"), m.group("path")) if m else (raw, ""))
    return frames, int(count)


def bucket_of(frames: list[tuple[str, str]]) -> str:
    thread = frames[0][0] if frames and frames[0][0].startswith(("thread", "process")) else ""
    main = "MainThread" in thread or not thread
    for func, path in reversed(frames):
        top = path.split("/")[0].removesuffix(".py")
        if not path or top in STDLIB:
            continue
        for prefix, name in BUCKETS:
            if path.startswith(prefix):
                return name if main else f"thread: {name}"
        return f"other: {top}" if main else f"thread: other: {top}"
    leaf_func, leaf_path = frames[-1]
    if leaf_path.startswith("asyncio/runners.py") or leaf_func in ("run_forever", "run_until_complete"):
        return "event loop (uvloop C: I/O, dispatch)" if main else "thread: idle/other"
    top = leaf_path.split("/")[0].removesuffix(".py")
    return f"stdlib: {top}" if main else f"thread: stdlib: {top}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--cpu-ms-per-req", type=float, default=None, help="gateway CPU ms/request of the phase")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as f:
        for line in f:
            parsed = parse(line)
            if parsed is None:
                continue
            frames, count = parsed
            total += count
            buckets[bucket_of(frames)] += count
            func, path = frames[-1]
            leaves[f"{func} ({path})"] += count
            for func, path in {(fn, p) for fn, p in frames}:
                if path.startswith(("polyrelay/", "starlette/", "aiohttp/", "uvicorn/", "sqlalchemy/")):
                    inclusive[f"{func} ({path.split(':')[0]})"] += count

    def show(title: str, counter: collections.Counter[str], n: int) -> None:
        print(f"\n{title}")
        for name, count in counter.most_common(n):
            share = count / total
            ms = f"  {share * args.cpu_ms_per_req:6.3f} ms/req" if args.cpu_ms_per_req else ""
            print(f"  {100 * share:5.1f}%{ms}  {name}")

    print(f"{total} samples")
    show("By owner (innermost non-stdlib frame):", buckets, 40)
    show("Leaf functions (self time):", leaves, args.top)
    show("Inclusive, selected packages:", inclusive, args.top)


if __name__ == "__main__":
    main()
