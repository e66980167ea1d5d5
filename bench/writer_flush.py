"""CPU cost of one batching-writer flush: usage rows + ledger charges + balance updates.

The writer's thread shares the GIL with the event loop, so its Python time shows up as
request latency (the c=1 p99 in ``run.py``). This times ``BatchWriter._write`` alone on
a batch shaped like 100 ms of traffic at ~5000 req/s, with the thread's CPU clock.

    .venv/bin/python bench/writer_flush.py [--url postgresql://...] [--rows 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import count

from sqlalchemy import delete
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from polyrelay.store import models
from polyrelay.store.db import create_db_engine, migrate
from polyrelay.store.writer import _LEDGER, _USAGE, BatchWriter, _Batch

_ids = count()


def _batch(rows: int, dialect: Dialect) -> _Batch:
    """The rows as ``record_usage`` queues them (already driver tuples, made on the loop)."""
    batch = _Batch()
    for _ in range(rows):
        request_id = f"bench-{next(_ids)}"
        now = datetime.now(timezone.utc)
        batch.logs.append(_USAGE.row(dialect, {
            "request_id": request_id, "created_at": now, "token_id": 1, "token_name": "bench", "channel_id": 1,
            "channel_name": "bench", "family": "openai", "endpoint": "chat/completions", "model": "gpt-4o-mini",
            "upstream_model": "gpt-4o-mini", "stream": False, "status_code": 200, "prompt_tokens": 12,
            "completion_tokens": 5, "cached_tokens": 0, "cache_write_tokens": 0, "images": 0, "seconds": 0.0,
            "characters": 0, "usage_source": "upstream", "cost_micros": 3, "price_set": True, "attempts": 1,
            "latency_ms": 1.5, "ttfb_ms": 1.2, "error": "", "client_ip": "127.0.0.1", "user_id": 1,
        }))
        batch.ledger.append(_LEDGER.row(dialect, {"created_at": now, "user_id": 1, "token_id": 1, "kind": "charge",
                                                  "amount_micros": -3, "request_id": request_id, "note": ""}))
        batch.last_used[1] = now
    batch.spend[1] = batch.balances[1] = 3 * rows
    batch.users[1] = batch.tokens[1] = None  # type: ignore[assignment]  # _write only reads their ids
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    engine = create_db_engine(args.url)
    migrate(engine)
    with Session(engine) as session, session.begin():
        for table in (models.LedgerEntry, models.UsageLog, models.Token, models.User):
            session.execute(delete(table))
        session.add(models.User(id=1, name="bench", balance_micros=10**15))
        session.add(models.Token(id=1, name="bench", key_hash="bench", user_id=1))
    writer = BatchWriter(engine, 0.1, ThreadPoolExecutor(1))
    cpu, wall = [], []
    for _ in range(args.rounds):
        batch = _batch(args.rows, engine.dialect)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        writer._write(batch)
        cpu.append((time.thread_time() - cpu0) * 1000)
        wall.append((time.perf_counter() - wall0) * 1000)
    cpu, wall = cpu[2:], wall[2:]  # the first rounds warm caches and build the statements
    print(f"{engine.dialect.name}, {args.rows} usage + ledger rows per flush: CPU p50 {statistics.median(cpu):.1f} ms "
          f"(min {min(cpu):.1f}), wall p50 {statistics.median(wall):.1f} ms; "
          f"{statistics.median(cpu) * 1000 / args.rows:.0f} µs CPU per request")


if __name__ == "__main__":
    main()
