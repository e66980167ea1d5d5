"""/api/me: a user's own data; never takes a user id from the request."""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import SESSION_COOKIE, Principal, endpoint
from polyrelay.api.admin.budgets import clock_of
from polyrelay.api.admin.common import (
    ApiError, engine_of, json_response, read_body, reload_snapshot, run_db, sha256_hex,
)
from polyrelay.api.admin.logs import aggregate_of, csv_of, logs_of
from polyrelay.api.admin.fields import check_unknown, field_str
from polyrelay.api.admin.records import fetch_record
from polyrelay.api.admin.stats import stats_of
from polyrelay.api.admin.tasks import tasks_of
from polyrelay.api.admin.tokens import create_token_for, list_tokens_of, token_op
from polyrelay.api.admin.users import ledger_of, password_field, user_view
from polyrelay.billing import accounts
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version


def _me(principal: Principal) -> int:
    if principal.user_id is None:
        raise ApiError(404, "no_user", "The admin key is not a user; log in as one to use /api/me.")
    return principal.user_id


@endpoint(admin=False, enrolment=True)
async def me(request: Request, principal: Principal) -> Response:
    user_id = _me(principal)
    data = await fetch_record(request, models.User, user_id, "Your user", user_view(clock_of(request)))
    data["must_enrol_second_factor"] = principal.enrol_only  # the console then opens only the account page
    # The live balance: what the database has minus charges settled here and not yet committed.
    record = request.app.state.relay.snapshot.users.get(user_id)
    if record is not None:
        data["available_micros"] = record.balance_micros - record.reserved_micros
    return json_response(data)


@endpoint(admin=False)
async def my_tokens(request: Request, principal: Principal) -> Response:
    return await list_tokens_of(request, _me(principal))


@endpoint(admin=False)
async def my_create_token(request: Request, principal: Principal) -> Response:
    return await create_token_for(request, _me(principal))


@endpoint(admin=False)
async def my_get_token(request: Request, principal: Principal) -> Response:
    return await token_op(request, _me(principal), "get")


@endpoint(admin=False)
async def my_update_token(request: Request, principal: Principal) -> Response:
    """Change your token's name or your own limits; limits an administrator imposed stay in force."""
    return await token_op(request, _me(principal), "update")


@endpoint(admin=False)
async def my_delete_token(request: Request, principal: Principal) -> Response:
    return await token_op(request, _me(principal), "delete")


@endpoint(admin=False)
async def my_logs(request: Request, principal: Principal) -> Response:
    return await logs_of(request, _me(principal))


@endpoint(admin=False)
async def my_logs_aggregate(request: Request, principal: Principal) -> Response:
    return await aggregate_of(request, _me(principal))


@endpoint(admin=False)
async def my_logs_csv(request: Request, principal: Principal) -> Response:
    return await csv_of(request, _me(principal))


@endpoint(admin=False)
async def my_ledger(request: Request, principal: Principal) -> Response:
    return await ledger_of(request, _me(principal))


@endpoint(admin=False)
async def my_redeem(request: Request, principal: Principal) -> Response:
    user_id = _me(principal)
    data = await read_body(request)
    check_unknown(data, {"code"})
    code = field_str(data, "code", max_len=256)

    def work() -> int | None:
        with Session(engine_of(request)) as session, session.begin():
            credited = accounts.redeem(session, user_id, code)
            if credited is not None:
                bump_records_version(session, changes.user(user_id))
            return credited

    credited = await run_db(request, work)
    if credited is None:
        raise ApiError(400, "invalid_code", "This code does not exist, has expired or was already redeemed.")
    await reload_snapshot(request)
    return json_response({"credited_micros": credited})


@endpoint(admin=False)
async def my_stats(request: Request, principal: Principal) -> Response:
    """Your requests, errors and cost per day and model over the last `days` (1..90, default 14)."""
    return await stats_of(request, _me(principal))


@endpoint(admin=False)
async def my_tasks(request: Request, principal: Principal) -> Response:
    """The tasks of all your keys, newest first, with prompt, media and buttons."""
    return await tasks_of(request, _me(principal))


@endpoint(admin=False)
async def my_password(request: Request, principal: Principal) -> Response:
    """Change your password; your other console sessions are logged out, this one stays."""
    user_id = _me(principal)
    data = await read_body(request)
    check_unknown(data, {"current_password", "new_password"})
    current = data.get("current_password")
    if not isinstance(current, str) or len(current) > 1024:
        raise ApiError(400, "invalid_field", "'current_password' must be a string of at most 1024 characters.")
    new = password_field(data, "new_password")

    def stored() -> str | None:
        with Session(engine_of(request)) as session:
            return session.scalar(select(models.User.password_hash).where(models.User.id == user_id))

    old_hash = await run_db(request, stored)
    loop = asyncio.get_running_loop()  # argon2 takes tens of ms of CPU: not on the event loop, not on the DB thread
    if not await loop.run_in_executor(None, accounts.verify_password, old_hash, current):
        raise ApiError(403, "wrong_password", "The current password is wrong.")
    new_hash = await loop.run_in_executor(None, accounts.hash_password, new)
    keep = sha256_hex(request.cookies.get(SESSION_COOKIE, ""))

    def store() -> bool:
        with Session(engine_of(request)) as session, session.begin():
            # Compare-and-set: a concurrent change made the checked password stale.
            changed = session.execute(
                update(models.User).where(models.User.id == user_id, models.User.password_hash == old_hash)
                .values(password_hash=new_hash).execution_options(synchronize_session=False)
            ).rowcount == 1
            if changed:
                session.execute(delete(models.WebSession).where(models.WebSession.user_id == user_id,
                                                                models.WebSession.id != keep))
            return changed

    if not await run_db(request, store):
        raise ApiError(403, "wrong_password", "The password was changed meanwhile; log in again.")
    return Response(status_code=204)
