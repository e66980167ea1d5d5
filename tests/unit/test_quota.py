"""The quota arithmetic on budget leases, against a real (SQLite) database: holds capped at what
remains, the minimum a call must find, the group multiplier, and several nodes sharing one account."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from polyrelay.billing.budget import Budgets, BudgetSettings
from polyrelay.billing.quota import Reservation, charge
from polyrelay.errors import RelayError
from polyrelay.store import models
from polyrelay.store.db import create_db_engine, migrate
from polyrelay.store.snapshot import TokenRecord, UserRecord


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'quota.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def _account(engine: Engine, balance: int | None = None, quota: int | None = None,
             ratio_ppm: int = 1_000_000) -> TokenRecord:
    """A user (unlimited when ``balance`` is None) and its key, in the database and as records."""
    with Session(engine) as session, session.begin():
        user = models.User(name=f"u{id(object())}", balance_micros=balance or 0, unlimited=balance is None,
                           role="user", group="default", enabled=True)
        session.add(user)
        session.flush()
        token = models.Token(name="t", key_hash=f"h{user.id}", key_hint="", user_id=user.id, quota_micros=quota,
                             used_micros=0, enabled=True)
        session.add(token)
        session.flush()
        user_id, token_id = user.id, token.id
    user_record = UserRecord(id=user_id, name="u", unlimited=balance is None, balance_micros=balance or 0,
                             ratio_ppm=ratio_ppm)
    return TokenRecord(id=token_id, name="t", quota_micros=quota, used_micros=0, models=None, expires_at=None,
                       enabled=True, user=user_record)


def _twin(token: TokenRecord) -> TokenRecord:
    """The same key as another node's snapshot has it: its own in-memory records."""
    user = token.user
    assert user is not None
    twin_user = UserRecord(id=user.id, name=user.name, unlimited=user.unlimited, balance_micros=user.balance_micros)
    return TokenRecord(id=token.id, name=token.name, quota_micros=token.quota_micros, used_micros=0, models=None,
                       expires_at=None, enabled=True, user=twin_user)


def _leased(engine: Engine, subject: str | None = None) -> int:
    """Money leased to nodes in the database, in all or on one subject (``u:<id>``, ``t:<id>``)."""
    query = select(models.BudgetLease.micros)
    if subject is not None:
        query = query.where(models.BudgetLease.subject == subject)
    with Session(engine) as session:
        return sum(session.scalars(query))


async def test_a_hold_is_capped_at_what_the_account_has_left(engine: Engine, executor: ThreadPoolExecutor) -> None:
    token = _account(engine, balance=1_000)
    held = await Budgets(engine, executor).reserve(token, 2_070, minimum=20)
    assert held.micros == 1_000
    assert token.user is not None and token.user.reserved_micros == 1_000 and token.reserved_micros == 1_000


async def test_a_call_whose_minimum_is_not_covered_is_refused_with_both_amounts(
    engine: Engine, executor: ThreadPoolExecutor,
) -> None:
    token = _account(engine, balance=10)
    with pytest.raises(RelayError) as refused:
        await Budgets(engine, executor).reserve(token, 2_070, minimum=20)
    assert refused.value.status == 429 and refused.value.code == "insufficient_quota"
    assert "0.000010 USD available" in refused.value.message and "at least 0.000020 USD" in refused.value.message
    assert token.user is not None and token.user.reserved_micros == 0


async def test_an_empty_balance_refuses_even_a_free_call(engine: Engine, executor: ThreadPoolExecutor) -> None:
    with pytest.raises(RelayError):
        await Budgets(engine, executor).reserve(_account(engine, balance=0), 0, minimum=0)


async def test_the_key_limit_caps_when_it_is_the_smaller(engine: Engine, executor: ThreadPoolExecutor) -> None:
    token = _account(engine, balance=1_000_000, quota=500)
    budgets = Budgets(engine, executor)
    assert (await budgets.reserve(token, 900, minimum=100)).micros == 500
    with pytest.raises(RelayError, match="this key has"):
        await budgets.reserve(token, 900, minimum=100)


async def test_concurrent_holds_never_exceed_the_balance(engine: Engine, executor: ThreadPoolExecutor) -> None:
    token = _account(engine, balance=1_000)
    budgets = Budgets(engine, executor)
    outcomes = await asyncio.gather(*(budgets.reserve(token, 300, minimum=100) for _ in range(10)),
                                    return_exceptions=True)
    held = sorted((o.micros for o in outcomes if isinstance(o, Reservation)), reverse=True)
    assert held == [300, 300, 300, 100]
    assert all(isinstance(o, RelayError) and o.status == 429 for o in outcomes if not isinstance(o, Reservation))


async def test_settling_releases_the_hold_and_charges_the_cost_once(
    engine: Engine, executor: ThreadPoolExecutor,
) -> None:
    token = _account(engine, balance=1_000)
    held = await Budgets(engine, executor).reserve(token, 600, minimum=600)
    held.settle(250)
    held.settle(250)
    assert token.user is not None
    assert token.user.reserved_micros == 0 and token.user.balance_micros == 750 and token.used_micros == 250


async def test_an_unlimited_key_is_held_the_whole_estimate_without_a_lease(
    engine: Engine, executor: ThreadPoolExecutor,
) -> None:
    token = _account(engine)
    assert (await Budgets(engine, executor).reserve(token, 5_000, minimum=1)).micros == 5_000
    assert _leased(engine) == 0


async def test_nodes_sharing_an_account_never_hold_more_than_it_has(
    engine: Engine, executor: ThreadPoolExecutor,
) -> None:
    """Three nodes, 90 concurrent calls of 100 on a balance of 5,000: never more than 50 admitted; at most
    one call per other node short, while fragments sit in their leases; those come back when given back."""
    token = _account(engine, balance=5_000)
    nodes = [(Budgets(engine, executor), _twin(token)) for _ in range(3)]
    calls = [budgets.reserve(record, 100, minimum=100) for _ in range(30) for budgets, record in nodes]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    held = [o for o in outcomes if isinstance(o, Reservation)]
    assert 48 <= len(held) <= 50 and all(h.micros == 100 for h in held)
    assert _leased(engine) <= 5_000
    for budgets, _record in nodes:
        await budgets.close()
    last = Budgets(engine, executor)
    late = await asyncio.gather(*(last.reserve(_twin(token), 100, minimum=100) for _ in range(5)),
                                return_exceptions=True)
    # The fresh node sees the whole balance again: the earlier holds were never settled into charges.
    assert all(isinstance(o, Reservation) for o in late)


async def test_only_a_node_holding_all_the_money_may_hold_short_of_an_estimate(
    engine: Engine, executor: ThreadPoolExecutor,
) -> None:
    """The capped hold: one such call at a time across nodes, as on one node."""
    token = _account(engine, balance=1_000)
    first, second = Budgets(engine, executor), Budgets(engine, executor)
    held = await second.reserve(_twin(token), 100, minimum=100)  # the second node leases part of it
    with pytest.raises(RelayError, match="may cost up to 0.002000 USD, and the rest is held by requests in flight"):
        await first.reserve(token, 2_000, minimum=10)  # one node alone would hold 900 here
    held.settle(0)
    await second.close()  # both give their leases back
    await first.close()
    assert (await Budgets(engine, executor).reserve(token, 2_000, minimum=10)).micros == 1_000


async def test_committed_charges_leave_the_lease_and_a_restart_gives_it_back(
    engine: Engine, executor: ThreadPoolExecutor,
) -> None:
    token = _account(engine, balance=10_000)
    budgets = Budgets(engine, executor, BudgetSettings(calls_per_grant=4))
    held = await budgets.reserve(token, 1_000, minimum=1_000)
    assert _leased(engine) == 4_000
    held.settle(1_000, committed=True)  # as a task submit's charge, committed with its task
    assert budgets.leased_micros() == 3_000
    await budgets.close()
    assert _leased(engine) == 0


async def test_a_lowered_key_limit_shrinks_the_lease_at_the_next_call(
    engine: Engine, executor: ThreadPoolExecutor,
) -> None:
    token = _account(engine, balance=1_000_000, quota=10_000)
    budgets = Budgets(engine, executor)
    (await budgets.reserve(token, 1_000, minimum=1_000)).settle(0)
    with Session(engine) as session, session.begin():
        session.get(models.Token, token.id).admin_quota_micros = 500  # type: ignore[union-attr]
    token.quota_micros = 500  # as the snapshot applies the stricter limit
    with pytest.raises(RelayError, match="this key has"):
        await budgets.reserve(token, 1_000, minimum=1_000)
    assert _leased(engine, f"t:{token.id}") == 500


def test_the_group_multiplier_rounds_half_up_once() -> None:
    user = UserRecord(id=1, name="u", ratio_ppm=500_000)
    token = TokenRecord(id=1, name="t", quota_micros=None, used_micros=0, models=None, expires_at=None, enabled=True,
                        user=user)
    assert charge(token, 3) == 2
    user.ratio_ppm = 1_500_000
    assert charge(token, 1_000) == 1_500
    user.ratio_ppm = 1_000_000
    assert charge(token, 7) == 7
