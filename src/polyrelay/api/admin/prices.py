"""Per-model prices."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, not_found, read_body, reload_snapshot, run_db
from polyrelay.api.admin.fields import MAX_MICROS, check_unknown, field_int
from polyrelay.api.admin.records import fetch_record, list_records
from polyrelay.billing.meter import Price as PriceValue
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version


_PRICE_FIELDS = PriceValue.field_names()
_MAX_MODEL = 256  # the column's length


def price_json(row: models.Price) -> dict[str, Any]:
    return {"model": row.model, **{f"{name}_micros": getattr(row, name) for name in _PRICE_FIELDS}}


@endpoint()
async def list_prices(request: Request, _: Principal) -> Response:
    return await list_records(request, select(models.Price).order_by(models.Price.model), price_json)


@endpoint()
async def put_price(request: Request, _: Principal) -> Response:
    """Set a model's price (exact name, wildcard, or ``default``); amounts in micro-USD per unit."""
    model = request.path_params["model"]
    if not 0 < len(model) <= _MAX_MODEL:
        raise ApiError(400, "invalid_id", f"'model' must be 1 to {_MAX_MODEL} characters.")
    data = await read_body(request)
    check_unknown(data, {f"{name}_micros" for name in _PRICE_FIELDS})
    values = {name: field_int(data, f"{name}_micros", maximum=MAX_MICROS, nullable=True) for name in _PRICE_FIELDS}

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.Price, model)
            if row is None:
                row = models.Price(model=model)
                session.add(row)
            for name, value in values.items():
                setattr(row, name, value)
            bump_records_version(session, changes.PRICES)
            session.flush()
            return price_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return json_response(result)


@endpoint()
async def get_price(request: Request, _: Principal) -> Response:
    model = request.path_params["model"]
    return json_response(await fetch_record(request, models.Price, model, f"The price of '{model}'", price_json))


@endpoint()
async def delete_price(request: Request, _: Principal) -> Response:
    model = request.path_params["model"]

    def work() -> None:
        with Session(engine_of(request)) as session, session.begin():
            if session.execute(delete(models.Price).where(models.Price.model == model)).rowcount != 1:
                raise not_found(f"The price of '{model}'")
            bump_records_version(session, changes.PRICES)

    await run_db(request, work)
    await reload_snapshot(request)
    return Response(status_code=204)
