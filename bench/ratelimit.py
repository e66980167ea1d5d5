"""What a rate-limited request pays for exact, shared limits: ``RateLimiter.acquire`` alone.

Times ``acquire`` for a token without limits (must stay free), a limited token counted in this
process (Redis away), and a limited token and its limited user admitted through Redis (one
EVALSHA on polyrelay.store.redis_pipe), at concurrency 1 and N on uvloop. Wall time per call and the process's CPU per call.
Keys go to a namespace of their own, deleted at the end.

    .venv/bin/python bench/ratelimit.py [--redis redis://127.0.0.1:6379/0] [--calls 20000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import uvloop

from polyrelay.billing.ratelimit import RateLimiter
from polyrelay.store.snapshot import TokenRecord, UserRecord


def _token(token_id: int, rpm: int | None) -> TokenRecord:
    user = UserRecord(id=token_id, name=f"bench-{token_id}", rpm_limit=rpm)
    return TokenRecord(id=token_id, name=f"bench-{token_id}", quota_micros=None, used_micros=0, models=None,
                       expires_at=None, enabled=True, user=user, rpm_limit=rpm)


async def _time(limiter: RateLimiter, tokens: list[TokenRecord], calls: int, concurrency: int) -> tuple[float, float]:
    """(wall µs per call, CPU µs per call)."""
    per_worker = calls // concurrency

    async def worker(token: TokenRecord) -> None:
        for _ in range(per_worker):
            await limiter.acquire(token)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(tokens[i % len(tokens)]) for i in range(concurrency)))
    done = per_worker * concurrency
    return (time.perf_counter() - wall) / done * 1e6, (time.process_time() - cpu) / done * 1e6


async def main(args: argparse.Namespace) -> None:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    limit = 10**9  # never refused: the cost of admitting is what is measured
    shared = RateLimiter(args.redis, namespace=namespace)
    await shared.start()
    assert shared.shared, f"Redis at {args.redis} does not answer"
    local = RateLimiter()
    await local.start()
    tokens = [_token(i, limit) for i in range(1, 65)]
    unlimited = [_token(i, None) for i in range(100, 164)]
    await _time(shared, tokens, 2000, args.concurrency)  # warm the connection pool and the script cache
    print(f"{'case':<34} {'c':>3} {'wall µs/call':>13} {'CPU µs/call':>12}")
    for label, limiter, subjects in (("unlimited (no Redis)", shared, unlimited),
                                     ("limited, local count", local, tokens),
                                     ("limited, Redis EVALSHA", shared, tokens)):
        for concurrency in (1, args.concurrency):
            wall, cpu = await _time(limiter, subjects, args.calls, concurrency)
            print(f"{label:<34} {concurrency:>3} {wall:>13.1f} {cpu:>12.1f}")
    assert shared._redis is not None
    keys = await shared._redis.call("KEYS", f"polyrelay:rl:{namespace}:*")
    if keys:
        await shared._redis.call("DEL", *keys)
    await shared.close()
    await local.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    uvloop.run(main(parser.parse_args()))
