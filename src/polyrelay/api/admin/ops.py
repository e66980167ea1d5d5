"""Operator actions shared by the admin API and the CLI: the channel test, creating users and keys."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from datetime import datetime, timezone
from typing import Any

import aiohttp
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from polyrelay.billing import accounts
from polyrelay.keys import generate_key, hash_key, key_hint
from polyrelay.relay import probes
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version


async def run_channel_test(
    engine: Engine, executor: Executor | None, channel_id: int | str, model: str | None = None
) -> dict[str, Any] | None:
    """One cheap call through the channel (``relay.probes.check``). Records ``tested_at``,
    ``test_latency_ms`` and ``test_result`` ("ok" or the error) on the channel; the answer says the
    same plus the upstream status. None: no such channel.
    """
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
    model_name = probes.check_model(row, model)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        checked = await probes.check(http, probes.record_of(row), model_name)

    def save() -> None:
        with Session(engine) as session, session.begin():
            session.execute(
                update(models.Channel).where(models.Channel.id == row.id)
                .values(tested_at=datetime.now(timezone.utc), test_latency_ms=checked.latency_ms,
                        test_result=checked.result[:2000])
            )

    await loop.run_in_executor(executor, save)
    return {"channel_id": row.id, "channel": row.name, "model": model_name, "ok": checked.ok,
            "status": checked.status, "latency_ms": round(checked.latency_ms, 1), "result": checked.result}


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
