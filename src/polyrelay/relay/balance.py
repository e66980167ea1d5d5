"""Upstream balances: what a channel's provider says is left on its account, where it says so.

Protocols (``options.balance`` on the channel, or inferred from its base URL's host):

- ``openrouter``: ``GET {origin}/api/v1/credits`` → ``{"data": {"total_credits", "total_usage"}}`` (USD);
  the balance is credits minus usage.
- ``deepseek``: ``GET {origin}/user/balance`` → ``{"is_available", "balance_infos": [{"currency",
  "total_balance", ...}]}``; the USD entry, else the CNY one converted at ``cny_per_usd``.
- ``siliconflow``: ``GET {origin}/v1/user/info`` → ``{"code": 20000, "data": {"totalBalance"}}`` (CNY).
- ``openai``: the billing endpoints one-api and new-api relays answer: ``GET {base}/v1/dashboard/billing/
  subscription`` (``hard_limit_usd``) minus ``GET {base}/v1/dashboard/billing/usage?start_date&end_date``
  (``total_usage``, US cents, over the last 100 days).

Every call goes through ``fetch.pinned_request`` with the channel's first key: the host is resolved
once and connected to as checked, no redirect is followed (the key never leaves the channel's host),
the answer is bounded in size and time, and anything the upstream says back is scrubbed of the
channel's keys before it reaches an error, a log or the API.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from polyrelay.background import every
from polyrelay.fetch import FetchError, FetchPolicy, pinned_request
from polyrelay.scrub import scrub
from polyrelay.store import leases, models

log = logging.getLogger("polyrelay")

PROTOCOLS = ("openrouter", "deepseek", "siliconflow", "openai")
OFF = "off"  # options.balance that turns inference off for a channel
LEASE = "channel_balances"  # the job lease of the scheduled fetch: one node fetches per round
_HOSTS = {"openrouter.ai": "openrouter", "api.deepseek.com": "deepseek", "api.siliconflow.cn": "siliconflow",
          "api.siliconflow.com": "siliconflow"}
_MAX_ANSWER = 64 * 1024
_INT64_MAX = 2**63 - 1
_USAGE_DAYS = 100  # the window one-api asks the billing usage for


class BalanceSettings(BaseModel):
    """``channel_balance:`` in the config file (docs/operations.md, "Channel balances")."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=0.0, ge=0, le=604_800,
                              description="Fetch every channel's balance this often (one node per round); 0: never.")
    cny_per_usd: float = Field(default=7.2, gt=0, le=1000, description="Converts balances given in CNY to USD.")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Per upstream balance request.")


class BalanceError(Exception):
    """Why a balance could not be fetched; scrubbed of the channel's keys, safe to show."""


class NoProtocol(BalanceError):
    """The channel names no balance protocol and its host implies none: nothing to ask."""


def protocol_of(base_url: str, options: dict[str, Any]) -> str | None:
    """The channel's balance protocol: ``options.balance`` when set (``off``: none), else by its host."""
    chosen = options.get("balance")
    if chosen is not None:
        return chosen if chosen in PROTOCOLS else None
    return _HOSTS.get((urlsplit(base_url).hostname or "").lower())


def _origin(base_url: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _root(base_url: str) -> str:
    """The base URL without a trailing ``/v1``: relays are configured either way."""
    root = base_url.rstrip("/")
    return root[:-3] if root.endswith("/v1") else root


def _micros(value: Any, per_usd: float = 1.0) -> int:
    """A decimal amount (number or numeric string) in micro-USD, bounded to the column's range."""
    try:
        amount = Decimal(str(value)) / Decimal(str(per_usd))
    except (InvalidOperation, ValueError):
        raise BalanceError(f"the upstream's balance is not a number: {str(value)[:40]!r}") from None
    if not amount.is_finite():
        raise BalanceError("the upstream's balance is not a finite number")
    return max(-_INT64_MAX, min(_INT64_MAX, int((amount * 1_000_000).to_integral_value())))


def _field(data: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(data, dict) or name not in data:
            raise BalanceError(f"the upstream's answer has no {'.'.join(path)}")
        data = data[name]
    return data


class _Fetcher:
    def __init__(self, session: aiohttp.ClientSession, key: str, timeout_s: float) -> None:
        self._session = session
        self._headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self._policy = FetchPolicy(allow_private=True, max_bytes=_MAX_ANSWER, timeout_s=timeout_s, max_redirects=0)

    async def json(self, url: str) -> Any:
        async def read(response: aiohttp.ClientResponse) -> Any:
            body = await response.content.read(_MAX_ANSWER + 1)
            if len(body) > _MAX_ANSWER:
                raise BalanceError(f"the answer is larger than {_MAX_ANSWER} bytes")
            return orjson.loads(body)

        try:
            return await pinned_request(self._session, "GET", url, self._policy, read, headers=self._headers)
        except orjson.JSONDecodeError:
            raise BalanceError("the upstream did not answer JSON") from None


async def fetch(session: aiohttp.ClientSession, base_url: str, key: str, protocol: str,
                settings: BalanceSettings) -> int:
    """The account's balance in micro-USD. Raises BalanceError or FetchError (not yet scrubbed)."""
    get = _Fetcher(session, key, settings.timeout_s).json
    if protocol == "openrouter":
        data = await get(_origin(base_url) + "/api/v1/credits")
        return _micros(_field(data, "data", "total_credits")) - _micros(_field(data, "data", "total_usage"))
    if protocol == "deepseek":
        infos = _field(await get(_origin(base_url) + "/user/balance"), "balance_infos")
        by_currency = {i.get("currency"): i for i in infos if isinstance(i, dict)} if isinstance(infos, list) else {}
        if "USD" in by_currency:
            return _micros(_field(by_currency["USD"], "total_balance"))
        if "CNY" in by_currency:
            return _micros(_field(by_currency["CNY"], "total_balance"), settings.cny_per_usd)
        raise BalanceError("the upstream's answer has no USD or CNY balance")
    if protocol == "siliconflow":
        data = await get(_origin(base_url) + "/v1/user/info")
        return _micros(_field(data, "data", "totalBalance"), settings.cny_per_usd)
    if protocol == "openai":
        root = _root(base_url) + "/v1/dashboard/billing"
        limit = _field(await get(root + "/subscription"), "hard_limit_usd")
        today = datetime.now(timezone.utc).date()
        window = f"start_date={today - timedelta(days=_USAGE_DAYS - 1)}&end_date={today + timedelta(days=1)}"
        used_cents = _field(await get(f"{root}/usage?{window}"), "total_usage")
        return _micros(limit) - _micros(used_cents, 100.0)
    raise BalanceError(f"no balance protocol '{protocol}'")


def _load(engine: Engine, channel_id: int) -> models.Channel | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(models.Channel, channel_id)


def _store(engine: Engine, channel_id: int, micros: int) -> datetime:
    at = datetime.now(timezone.utc)
    with Session(engine) as session, session.begin():
        session.execute(update(models.Channel).where(models.Channel.id == channel_id)
                        .values(balance_micros=micros, balance_updated_at=at))
    return at


async def refresh(engine: Engine, executor: Executor | None, session: aiohttp.ClientSession, channel_id: int,
                  settings: BalanceSettings) -> dict[str, Any] | None:
    """Fetch one channel's balance now and store it; what it was. None: no such channel.
    Raises BalanceError (scrubbed) when the channel has no protocol or the upstream would not tell."""
    loop = asyncio.get_running_loop()
    row = await loop.run_in_executor(executor, _load, engine, channel_id)
    if row is None:
        return None
    protocol = protocol_of(row.base_url, row.options or {})
    if protocol is None:
        raise NoProtocol(f"channel {row.name} has no balance protocol: set options.balance to one of "
                           f"{', '.join(PROTOCOLS)}")
    if not row.keys:
        raise NoProtocol(f"channel {row.name} has no key to ask its balance with")
    try:
        micros = await fetch(session, row.base_url, row.keys[0], protocol, settings)
    except (BalanceError, FetchError) as error:
        raise BalanceError(scrub(f"{protocol}: {error}", tuple(row.keys))) from None
    at = await loop.run_in_executor(executor, _store, engine, row.id, micros)
    return {"channel_id": row.id, "protocol": protocol, "balance_micros": micros,
            "balance_updated_at": at.isoformat()}


def _with_protocol(engine: Engine) -> list[int]:
    c = models.Channel
    with Session(engine) as session:
        rows = session.execute(select(c.id, c.base_url, c.options).order_by(c.id)).all()
    return [row.id for row in rows if protocol_of(row.base_url, row.options or {})]


class Schedule:
    """Every ``interval_s``, the node holding the ``channel_balances`` lease fetches every channel's balance."""

    def __init__(self, engine: Engine, executor: Executor, session: aiohttp.ClientSession, node: str,
                 settings: BalanceSettings) -> None:
        self._engine, self._executor, self._session, self._node = engine, executor, session, node
        self._settings = settings

    async def round(self) -> None:
        loop = asyncio.get_running_loop()
        lease_s = 2 * self._settings.interval_s + self._settings.timeout_s
        if not await loop.run_in_executor(self._executor, leases.claim, self._engine, LEASE, self._node, lease_s):
            return
        for channel_id in await loop.run_in_executor(self._executor, _with_protocol, self._engine):
            try:
                await refresh(self._engine, self._executor, self._session, channel_id, self._settings)
            except BalanceError as error:  # one upstream that will not tell must not stop the others
                log.warning("channel balance not fetched: %s", error)

    def start(self) -> asyncio.Task[None] | None:
        if not self._settings.interval_s:
            return None
        return every(self._settings.interval_s, self.round, "channel balance round")
