"""Redemption codes: creating, listing and deleting them (redeeming is /api/me/redeem)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import (
    engine_of,
    iso,
    json_response,
    not_found,
    paging,
    path_int,
    read_body,
    run_db,
)
from polyrelay.api.admin.fields import MAX_MICROS, check_unknown, field_datetime, field_int, field_text
from polyrelay.billing import accounts
from polyrelay.keys import key_hint
from polyrelay.store import models


def code_json(row: models.RedemptionCode) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "code_hint": row.code_hint, "amount_micros": row.amount_micros,
            "created_at": iso(row.created_at), "expires_at": iso(row.expires_at),
            "redeemed_by": row.redeemed_by, "redeemed_at": iso(row.redeemed_at)}


@endpoint()
async def create_codes(request: Request, _: Principal) -> Response:
    """Create ``count`` codes worth ``amount_micros`` each; the codes are shown this once only."""
    data = await read_body(request)
    check_unknown(data, {"amount_micros", "count", "name", "expires_at"})
    amount = field_int(data, "amount_micros", minimum=1, maximum=MAX_MICROS)
    count = field_int(data, "count", minimum=1, maximum=1000) if "count" in data else 1
    name = field_text(data, "name", max_len=128)
    expires_at = field_datetime(data, "expires_at")
    codes = [accounts.new_code() for _ in range(count)]  # type: ignore[arg-type]

    def work() -> list[dict[str, Any]]:
        with Session(engine_of(request)) as session, session.begin():
            rows = [models.RedemptionCode(name=name, code_hash=accounts.hash_code(c), code_hint=key_hint(c),
                                          amount_micros=amount, expires_at=expires_at) for c in codes]
            session.add_all(rows)
            session.flush()
            return [{**code_json(r), "code": c} for r, c in zip(rows, codes)]

    return json_response({"data": await run_db(request, work)}, 201)


@endpoint()
async def list_codes(request: Request, _: Principal) -> Response:
    """The codes, oldest first, with the name of the user who redeemed each (``redeemed_by_name``)."""
    limit, offset = paging(request)
    query = (select(models.RedemptionCode, models.User.name)
             .outerjoin(models.User, models.User.id == models.RedemptionCode.redeemed_by)
             .order_by(models.RedemptionCode.id).limit(limit).offset(offset))

    def work() -> list[dict[str, Any]]:
        with Session(engine_of(request)) as session:
            return [{**code_json(row), "redeemed_by_name": name} for row, name in session.execute(query)]

    return json_response({"data": await run_db(request, work)})


@endpoint()
async def delete_code(request: Request, _: Principal) -> Response:
    code_id = path_int(request)

    def work() -> None:
        with Session(engine_of(request)) as session, session.begin():
            gone = session.execute(delete(models.RedemptionCode).where(
                models.RedemptionCode.id == code_id, models.RedemptionCode.redeemed_by.is_(None)))
            if gone.rowcount != 1:
                raise not_found(f"Unredeemed code {code_id}")

    await run_db(request, work)
    return Response(status_code=204)
