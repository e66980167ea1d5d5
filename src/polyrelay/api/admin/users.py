"""Users, their money (top-up, adjust) and their ledger."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin import second_factor
from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.budgets import clock_of, user_budget
from polyrelay.api.admin.common import (
    ApiError,
    engine_of,
    iso,
    json_response,
    not_found,
    paging,
    path_int,
    read_body,
    reload_snapshot,
    run_db,
)
from polyrelay.api.admin.fields import (
    MAX_MICROS,
    check_unknown,
    commit_conflict,
    field_bool,
    field_choice,
    field_email,
    field_int,
    field_str,
    field_text,
)
from polyrelay.api.admin.records import fetch_record, insert_record, list_records
from polyrelay.billing import accounts, invitations
from polyrelay.billing.periods import PERIODS, PeriodClock
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version


_USER_FIELDS = {"name", "role", "group", "unlimited", "enabled", "password", "rpm_limit", "tpm_limit", "email",
                "email_verified", "budget_micros", "budget_period"}
_PASSWORD_LENGTHS = (8, 1024)  # an upper bound too: argon2 hashes whatever it is given


def user_json(row: models.User) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "role": row.role, "group": row.group, "balance_micros": row.balance_micros,
        "unlimited": row.unlimited, "enabled": row.enabled, "rpm_limit": row.rpm_limit, "tpm_limit": row.tpm_limit,
        "has_password": row.password_hash is not None, "created_at": iso(row.created_at),
        "email": row.email, "email_verified": row.email_verified, "budget_micros": row.budget_micros,
        "budget_period": row.budget_period,
        "signed_up_at": iso(row.signed_up_at), "invited_by": row.invited_by,  # docs/platform.md
    }


def user_view(clock: PeriodClock) -> Callable[[models.User], dict[str, Any]]:
    """The user with ``period_budget``: the current period of its cap, its spend and next reset (or null)."""
    return lambda row: {**user_json(row), "period_budget": user_budget(row, clock)}


def _apply_user(row: models.User, data: dict[str, Any], password_hash: str | None) -> None:
    if "name" in data:
        row.name = field_str(data, "name")
    if "role" in data:
        row.role = field_str(data, "role", choices=("admin", "user"))
    if "group" in data:
        row.group = field_str(data, "group", max_len=64)
    if "email" in data:
        email = field_email(data, "email")
        if email != row.email:
            row.email, row.email_verified = email, False  # a new address is unproven until verified again
    for flag in ("unlimited", "enabled", "email_verified"):
        if flag in data:
            setattr(row, flag, field_bool(data, flag))
    for limit in ("rpm_limit", "tpm_limit"):
        if limit in data:
            setattr(row, limit, field_int(data, limit, minimum=1, nullable=True))
    if "budget_micros" in data:
        row.budget_micros = field_int(data, "budget_micros", maximum=MAX_MICROS, nullable=True)
    if "budget_period" in data:
        row.budget_period = field_choice(data, "budget_period", PERIODS)
    if row.budget_micros is not None and row.budget_period is None:
        raise ApiError(400, "invalid_field", "'budget_period' must be daily, weekly or monthly while 'budget_micros' "
                                             "is set (a cap on spend per period).")
    if password_hash is not None:
        row.password_hash = password_hash


def _who(data: dict[str, Any]) -> str:
    """What a unique-constraint conflict is about: a name or an e-mail address already taken."""
    if data.get("email") and "name" in data:
        return f"A user named '{data['name']}' or with e-mail '{data['email']}'"
    return f"A user with e-mail '{data['email']}'" if data.get("email") else f"A user named '{data.get('name')}'"


def password_field(data: dict[str, Any], key: str) -> str:
    password = data.get(key)
    shortest, longest = _PASSWORD_LENGTHS
    if not isinstance(password, str) or not shortest <= len(password) <= longest:
        raise ApiError(400, "invalid_field", f"'{key}' must be a string of {shortest} to {longest} characters.")
    return password


async def _password_hash(data: dict[str, Any]) -> str | None:
    if "password" not in data:
        return None
    password = password_field(data, "password")
    return await asyncio.get_running_loop().run_in_executor(None, accounts.hash_password, password)


@endpoint()
async def list_users(request: Request, _: Principal) -> Response:
    limit, offset = paging(request)
    return await list_records(request, select(models.User).order_by(models.User.id).limit(limit).offset(offset),
                              user_view(clock_of(request)))


@endpoint()
async def create_user(request: Request, _: Principal) -> Response:
    data = await read_body(request)
    check_unknown(data, _USER_FIELDS | {"balance_micros"})
    field_str(data, "name")
    initial = field_int(data, "balance_micros", maximum=MAX_MICROS) if "balance_micros" in data else 0
    password_hash = await _password_hash(data)

    def build(_: Session) -> models.User:
        row = models.User(name="", balance_micros=0, role="user", group="default", unlimited=False, enabled=True)
        _apply_user(row, data, password_hash)
        return row

    def top_up(session: Session, row: models.User) -> None:
        if initial:
            accounts.post(session, row.id, "topup", initial, f"initial-{row.id}", "initial balance")
            session.refresh(row)

    result = await insert_record(request, build, _who(data), user_view(clock_of(request)), top_up)
    return json_response(result, 201)


@endpoint()
async def get_user(request: Request, _: Principal) -> Response:
    user_id = path_int(request)
    return json_response(await fetch_record(request, models.User, user_id, f"User {user_id}",
                                            user_view(clock_of(request))))


@endpoint()
async def update_user(request: Request, _: Principal) -> Response:
    user_id = path_int(request)
    data = await read_body(request)
    check_unknown(data, _USER_FIELDS)
    password_hash = await _password_hash(data)
    view = user_view(clock_of(request))

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.User, user_id)
            if row is None:
                raise not_found(f"User {user_id}")
            _apply_user(row, data, password_hash)
            try:
                session.flush()
            except IntegrityError:
                raise commit_conflict(_who(data)) from None
            if data.get("enabled") is False or password_hash is not None:
                session.execute(delete(models.WebSession).where(models.WebSession.user_id == user_id))
            bump_records_version(session, changes.user(user_id))
            return view(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return json_response(result)


@endpoint()
async def delete_user(request: Request, _: Principal) -> Response:
    """Delete a user, its tokens, sessions, second factors and linked identities; its ledger and usage logs
    stay as history."""
    user_id = path_int(request)

    def work() -> None:
        with Session(engine_of(request)) as session, session.begin():
            if session.get(models.User, user_id) is None:
                raise not_found(f"User {user_id}")
            tokens = session.scalars(select(models.Token.id).where(models.Token.user_id == user_id)).all()
            session.execute(delete(models.Token).where(models.Token.user_id == user_id))
            session.execute(delete(models.WebSession).where(models.WebSession.user_id == user_id))
            session.execute(delete(models.UserIdentity).where(models.UserIdentity.user_id == user_id))
            second_factor.remove_all(session, user_id)
            session.execute(delete(models.User).where(models.User.id == user_id))
            bump_records_version(session, changes.user(user_id), *map(changes.token, tokens))

    await run_db(request, work)
    await reload_snapshot(request)
    return Response(status_code=204)


_MAX_NOTE = 1000


async def _move_money(request: Request, user_id: int, kind: str) -> Response:
    data = await read_body(request)
    check_unknown(data, {"amount_micros", "note", "request_id"})
    amount = field_int(data, "amount_micros", minimum=1 if kind == "topup" else -MAX_MICROS, maximum=MAX_MICROS)
    if amount == 0:
        raise ApiError(400, "invalid_field", "'amount_micros' must not be 0.")
    note = field_text(data, "note", max_len=_MAX_NOTE)
    request_id = field_text(data, "request_id", max_len=64) or f"{kind}-{secrets.token_hex(12)}"
    rules = request.app.state.settings.invitations

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.User, user_id)
            if row is None:
                raise not_found(f"User {user_id}")
            applied = accounts.post(session, user_id, kind, amount, request_id, note)
            if applied and kind == "topup":
                invitations.reward_first_topup(session, user_id, amount, rules=rules)
            bump_records_version(session, changes.user(user_id))
            session.refresh(row)
            return {"applied": applied, "request_id": request_id, "user": user_json(row)}

    result = await run_db(request, work)
    await reload_snapshot(request)
    return json_response(result)


@endpoint()
async def topup(request: Request, _: Principal) -> Response:
    """Credit a user; idempotent by ``request_id`` (a repeated one changes nothing and says applied=false)."""
    return await _move_money(request, path_int(request), "topup")


@endpoint()
async def adjust(request: Request, _: Principal) -> Response:
    """Correct a user's balance by a signed amount; idempotent by ``request_id``."""
    return await _move_money(request, path_int(request), "adjustment")


def ledger_json(row: models.LedgerEntry) -> dict[str, Any]:
    return {"id": row.id, "created_at": iso(row.created_at), "user_id": row.user_id, "token_id": row.token_id,
            "kind": row.kind, "amount_micros": row.amount_micros, "request_id": row.request_id, "note": row.note}


async def ledger_of(request: Request, user_id: int) -> Response:
    """Newest first; ``kind`` narrows to one kind of movement (charge, refund, topup, adjustment, redemption)."""
    limit, offset = paging(request)
    query = select(models.LedgerEntry).where(models.LedgerEntry.user_id == user_id)
    if kind := request.query_params.get("kind"):
        if kind not in accounts.KINDS:
            raise ApiError(400, "invalid_query", f"'kind' must be one of {', '.join(accounts.KINDS)}.")
        query = query.where(models.LedgerEntry.kind == kind)
    query = query.order_by(models.LedgerEntry.id.desc()).limit(limit).offset(offset)
    return await list_records(request, query, ledger_json)


@endpoint()
async def user_ledger(request: Request, _: Principal) -> Response:
    return await ledger_of(request, path_int(request))
