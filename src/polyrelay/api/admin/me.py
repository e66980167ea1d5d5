"""/api/me: a user's own data; never takes a user id from the request."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, read_body, reload_snapshot, run_db
from polyrelay.api.admin.logs import aggregate_of, csv_of, logs_of
from polyrelay.api.admin.records import fetch_record
from polyrelay.api.admin.tokens import create_token_for, list_tokens_of, token_op
from polyrelay.api.admin.users import ledger_of, user_json
from polyrelay.billing import accounts
from polyrelay.store import models
from polyrelay.store.db import bump_records_version


def _me(principal: Principal) -> int:
    if principal.user_id is None:
        raise ApiError(404, "no_user", "The admin key is not a user; log in as one to use /api/me.")
    return principal.user_id


@endpoint(admin=False)
async def me(request: Request, principal: Principal) -> Response:
    user_id = _me(principal)
    data = await fetch_record(request, models.User, user_id, "Your user", user_json)
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
    code = data.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "invalid_field", "Send the 'code' to redeem.")

    def work() -> int | None:
        with Session(engine_of(request)) as session, session.begin():
            credited = accounts.redeem(session, user_id, code)
            if credited is not None:
                bump_records_version(session)
            return credited

    credited = await run_db(request, work)
    if credited is None:
        raise ApiError(400, "invalid_code", "This code does not exist, has expired or was already redeemed.")
    await reload_snapshot(request)
    return json_response({"credited_micros": credited})
