"""The dashboard's stats query over a big usage log: seeded raw rows plus the rollups the writer keeps.

Seeds ``--rows`` usage rows spread over the last ``--span`` days (``--users`` x ``--models``
x ``--channels``) by bulk insert (PostgreSQL ``COPY``; SQLite ``executemany`` in one
transaction), adds them to the daily rollups as the batching writer does (``Rollups.upsert``,
one flush per ``--flush`` rows), then times the stats endpoint's query (``api/admin/stats``)
for 7, 30 and 90 days, for everyone and for one user. ``--raw`` also times the same answer
computed from the raw rows, as it was before the rollups.

    .venv/bin/python bench/stats_rollups.py [--url postgresql://...] [--rows 10000000] [--raw]

The query reads one row per day x user x model in the window, so its time grows with those,
not with the number of requests (``--rows`` only changes how fast the seed is).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, text

from polyrelay.api.admin.stats import _stats
from polyrelay.store.db import create_db_engine, migrate
from polyrelay.store.rollups import Rollups
from polyrelay.store.writer import _USAGE

_COLUMNS = ("request_id", "created_at", "user_id", "token_id", "model", "channel_id", "status_code",
            "prompt_tokens", "completion_tokens", "cost_micros", "latency_ms")


def _rows(args: argparse.Namespace, engine: Engine) -> Iterator[tuple[Any, ...]]:
    """Usage rows as ``BulkInsert`` driver tuples, oldest first, in time order like real traffic."""
    dialect = engine.dialect
    template = list(_USAGE.row(dialect, {"request_id": "", "created_at": datetime.now(timezone.utc), "family": "openai",
                                         "endpoint": "chat/completions", "status_code": 200, "stream": False,
                                         "token_name": "bench", "channel_name": "bench", "usage_source": "upstream"}))
    at = _USAGE.positions(dialect)
    positions = [at[name] for name in _COLUMNS]
    sqlite = dialect.name == "sqlite"
    start = datetime.now(timezone.utc) - timedelta(days=args.span)
    step_us = args.span * 86_400_000_000 // args.rows
    for n in range(args.rows):
        created = start + timedelta(microseconds=n * step_us)
        user = n % args.users
        values = (f"bench-{n}", created.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else created, user + 1, user + 1,
                  f"model-{(n // args.users) % args.models}", n % args.channels + 1, 500 if n % 50 == 0 else 200,
                  n % 900 + 100, n % 300, n % 2000, float(n * 37 % 4000 + 20))
        row = template[:]
        for position, value in zip(positions, values):
            row[position] = value
        yield tuple(row)


def seed(engine: Engine, args: argparse.Namespace) -> float:
    begun = time.perf_counter()
    rollups = Rollups(_USAGE.positions(engine.dialect))
    head = _USAGE._plan_for(engine.dialect).head  # INSERT INTO usage_logs (columns) VALUES
    columns = head[head.index("(") + 1:head.index(")")]
    chunk: list[tuple[Any, ...]] = []
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]

        def flush() -> None:
            if engine.dialect.name == "postgresql":
                with cursor.copy(f"COPY usage_logs ({columns}) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row(row)
            else:
                cursor.executemany(head + "(" + ", ".join("?" * len(chunk[0])) + ")", chunk)
            rollups.upsert(connection, chunk)  # what the writer adds in the same transaction
            chunk.clear()

        for n, row in enumerate(_rows(args, engine), 1):
            chunk.append(row)
            if len(chunk) == args.flush:
                flush()
                if n % 1_000_000 == 0:
                    print(f"  seeded {n:,} rows in {time.perf_counter() - begun:.0f} s", flush=True)
        if chunk:
            flush()
    with engine.connect() as connection:  # what autovacuum / an operator's ANALYZE would have done
        connection.execute(text("ANALYZE"))
        connection.commit()
    return time.perf_counter() - begun


def _window(days: int) -> list[str]:
    today = datetime.now(timezone.utc).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


def _raw(engine: Engine, days: list[str], user_id: int | None) -> int:
    """The same numbers from ``usage_logs`` (the query the stats endpoint ran before the rollups)."""
    day = "CAST(timezone('UTC', created_at) AS DATE)" if engine.dialect.name == "postgresql" else "date(created_at)"
    where = "created_at >= :start" + (" AND user_id = :user" if user_id is not None else "")
    start = datetime.fromisoformat(days[0]).replace(tzinfo=timezone.utc)
    with engine.connect() as connection:
        rows = connection.execute(text(
            f"SELECT {day} AS day, model, SUM(CASE WHEN status_code > 0 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), SUM(cost_micros), SUM(prompt_tokens), "
            f"SUM(completion_tokens) FROM usage_logs WHERE {where} GROUP BY 1, model"),
            {"start": start if engine.dialect.name == "postgresql" else start.strftime("%Y-%m-%d %H:%M:%S.%f"),
             "user": user_id}).all()
        total = sum(int(row[2]) for row in rows)
        connection.execute(text(f"SELECT latency_ms FROM usage_logs WHERE {where} AND status_code > 0 "
                                "ORDER BY latency_ms LIMIT 1 OFFSET :middle"),
                           {"start": start if engine.dialect.name == "postgresql"
                            else start.strftime("%Y-%m-%d %H:%M:%S.%f"), "user": user_id, "middle": total // 2})
    return total


def _time(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """Median wall and median CPU time of this process (the whole query on SQLite; the client's part on
    PostgreSQL), in ms: the CPU time says what a loaded machine's wall time hides."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        begun, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - begun) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"sqlite:///{tempfile.mkdtemp()}/bench.db", help="an empty database")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--span", type=int, default=90, help="days the rows are spread over")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--flush", type=int, default=50_000, help="rows per bulk insert and rollup upsert")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--raw", action="store_true", help="also time the query on the raw rows")
    args = parser.parse_args()
    engine = create_db_engine(args.url)
    migrate(engine)
    print(f"{engine.dialect.name}: seeding {args.rows:,} rows over {args.span} days "
          f"({args.users} users x {args.models} models, {args.channels} channels)", flush=True)
    seconds = seed(engine, args)
    with engine.connect() as connection:
        daily = connection.execute(text("SELECT COUNT(*) FROM usage_daily")).scalar()
    print(f"seeded in {seconds:.0f} s ({args.rows / seconds:,.0f} rows/s); usage_daily holds {daily:,} rows")
    print(f"{'query':<28}{'wall ms':>10}{'cpu ms':>10}{'requests':>12}")
    for days in (7, 30, 90):
        window = _window(days)
        for scope, user_id in (("all users", None), ("one user", 1)):
            median, cpu, answer = _time(lambda: _stats(engine, window, user_id), args.repeat)
            print(f"{f'rollups {days:>2} d, {scope}':<28}{median:>10.1f}{cpu:>10.1f}"
                  f"{answer['totals']['requests']:>12,}")
            if args.raw:
                median, cpu, total = _time(lambda: _raw(engine, window, user_id), 1)
                print(f"{f'raw     {days:>2} d, {scope}':<28}{median:>10.1f}{cpu:>10.1f}{total:>12,}")
    engine.dispose()


if __name__ == "__main__":
    main()
