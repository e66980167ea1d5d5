"""Operator actions shared by the admin API and the CLI: the channel test, creating users and keys."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from polyrelay.billing import accounts
from polyrelay.patterns import ModelPatterns, is_wildcard
from polyrelay.keys import generate_key, hash_key, key_hint
from polyrelay.providers.base import Call, new_request_id
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version
from polyrelay.store.snapshot import ChannelRecord

_TEST_PROMPT = [{"role": "user", "content": "Say OK."}]


def _record(row: models.Channel) -> ChannelRecord:
    return ChannelRecord(
        id=row.id, name=row.name, type=row.type, base_url=row.base_url, keys=tuple(row.keys),
        models=ModelPatterns(row.models or []), model_mapping=dict(row.model_mapping or {}), priority=row.priority,
        weight=row.weight, timeout_s=row.timeout_s, connect_timeout_s=row.connect_timeout_s,
        options=dict(row.options or {}),
    )


def _test_model(row: models.Channel, model: str | None) -> str:
    if model:
        return model
    names = [m for m in (row.models or []) if not is_wildcard(m)] + list(row.model_mapping or {})
    return names[0] if names else "gpt-4o-mini"


async def run_channel_test(
    engine: Engine, executor: Executor | None, channel_id: int | str, model: str | None = None
) -> dict[str, Any] | None:
    """One tiny chat call (max 1 output token) through the channel's adaptor with its first key;
    for a channel type only task families use, a GET of its base URL (reachability, no job, no charge).

    Records ``tested_at``, ``test_latency_ms`` and ``test_result`` ("ok" or the error) on
    the channel; the answer says the same plus the upstream status. None: no such channel.
    """
    from polyrelay import kinds
    from polyrelay.providers.registry import kinds_of

    loop = asyncio.get_running_loop()

    def load() -> models.Channel | None:
        with Session(engine, expire_on_commit=False) as session:
            query = select(models.Channel)
            query = query.where(models.Channel.id == channel_id) if isinstance(channel_id, int) else query.where(
                models.Channel.name == channel_id)
            return session.scalar(query)

    row = await loop.run_in_executor(executor, load)
    if row is None:
        return None
    channel = _record(row)
    model_name = _test_model(row, model)
    status: int | None = None
    started = time.perf_counter()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        try:
            if kinds.CHAT not in kinds_of(channel.type):  # no chat to test with: see that the host answers
                status, result = await _probe(http, channel)
            else:
                status, result = await _chat_test(http, channel, model_name)
        except asyncio.TimeoutError:
            result = "timed out"
        except Exception as exc:  # the test reports any failure; it never raises
            result = f"{type(exc).__name__}: {exc}"
        for key in channel.keys:
            result = result.replace(key, key_hint(key))
    latency_ms = (time.perf_counter() - started) * 1000

    def save() -> None:
        with Session(engine) as session, session.begin():
            session.execute(
                update(models.Channel).where(models.Channel.id == row.id)
                .values(tested_at=datetime.now(timezone.utc), test_latency_ms=latency_ms, test_result=result[:2000])
            )

    await loop.run_in_executor(executor, save)
    return {"channel_id": row.id, "channel": row.name, "model": model_name, "ok": result == "ok",
            "status": status, "latency_ms": round(latency_ms, 1), "result": result}


def _timeout(channel: ChannelRecord) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=min(channel.timeout_s, 60), sock_connect=channel.connect_timeout_s)


async def _chat_test(http: aiohttp.ClientSession, channel: ChannelRecord, model_name: str) -> tuple[int, str]:
    from polyrelay.providers.registry import adaptor_for
    from polyrelay.providers.base import Services, Target

    payload = {"model": model_name, "messages": _TEST_PROMPT, "max_tokens": 1}
    call = Call(family="openai", endpoint="chat.completions", path="/v1/chat/completions", model=model_name,
                body=orjson.dumps(payload), content_type="application/json", request_id=new_request_id(),
                payload=payload, max_output_tokens=1)
    adaptor = adaptor_for(channel.type)
    target = Target(channel=channel, key_index=0, key=channel.keys[0], upstream_model=channel.upstream_model(model_name))
    await adaptor.prepare(call, target, Services(http))
    request = adaptor.build_request(call, target)
    async with http.request(request.method, request.url, headers=request.headers, data=request.body,
                            timeout=_timeout(channel)) as response:
        status, body = response.status, await response.read()
    if status >= 400:
        return status, f"HTTP {status}: {adaptor.upstream_error(call, status, body).message}"
    return status, "ok"


async def _probe(http: aiohttp.ClientSession, channel: ChannelRecord) -> tuple[int, str]:
    """Task upstreams have no free call that proves a key works, so this only shows the host answers."""
    async with http.get(channel.base_url, timeout=_timeout(channel)) as response:
        status = response.status
    if status >= 500:
        return status, f"HTTP {status} from {channel.base_url}"
    return status, "ok"

def create_user(engine: Engine, name: str, *, role: str = "user", group: str = "default", balance_micros: int = 0,
                unlimited: bool = False, password: str | None = None) -> int:
    with Session(engine) as session, session.begin():
        row = models.User(name=name, role=role, group=group, balance_micros=0, unlimited=unlimited, enabled=True,
                          password_hash=accounts.hash_password(password) if password else None)
        session.add(row)
        session.flush()
        if balance_micros:
            accounts.post(session, row.id, "topup", balance_micros, f"initial-{row.id}", "initial balance")
        bump_records_version(session, changes.user(row.id))
        return row.id


def create_key(engine: Engine, user: str, name: str | None, *, limit_micros: int | None = None,
               models_allowed: list[str] | None = None) -> tuple[str, str]:
    """A new key for ``user`` (by name); returns (token name, key). The key is not stored."""
    key = generate_key()
    with Session(engine) as session, session.begin():
        user_id = session.scalar(select(models.User.id).where(models.User.name == user))
        if user_id is None:
            raise LookupError(f"no user named '{user}'")
        token_name = name or f"{user}-{key_hint(key)[-4:]}"
        token = models.Token(name=token_name, key_hash=hash_key(key), key_hint=key_hint(key), user_id=user_id,
                             quota_micros=limit_micros, used_micros=0, models=models_allowed, enabled=True)
        session.add(token)
        session.flush()
        bump_records_version(session, changes.token(token.id))
    return token_name, key
