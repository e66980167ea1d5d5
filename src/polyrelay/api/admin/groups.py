"""Groups: price ratios and the channels a group may use."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import engine_of, json_response, read_body, reload_snapshot, run_db
from polyrelay.api.admin.fields import (
    check_unknown,
    commit_conflict,
    field_int,
    field_number,
    field_str,
    field_str_list,
    field_text,
)
from polyrelay.api.admin.records import list_records, record_op
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version


def group_json(row: models.Group) -> dict[str, Any]:
    return {"name": row.name, "ratio": row.ratio_ppm / 1_000_000, "ratio_ppm": row.ratio_ppm,
            "channels": row.channels, "description": row.description}


# A price multiplier of at most x100 keeps any cost times the ratio inside a BigInteger.
_MAX_RATIO = 100


def _apply_group(row: models.Group, data: dict[str, Any]) -> None:
    if "ratio" in data:
        row.ratio_ppm = round(field_number(data, "ratio", minimum=0, maximum=_MAX_RATIO) * 1_000_000)
    if "ratio_ppm" in data:
        row.ratio_ppm = field_int(data, "ratio_ppm", maximum=_MAX_RATIO * 1_000_000)  # type: ignore[assignment]
    if "channels" in data:
        row.channels = field_str_list(data, "channels", max_len=128)
    if "description" in data:
        row.description = field_text(data, "description", max_len=2000)


_GROUP_FIELDS = {"ratio", "ratio_ppm", "channels", "description"}


@endpoint()
async def list_groups(request: Request, _: Principal) -> Response:
    return await list_records(request, select(models.Group).order_by(models.Group.name), group_json)


@endpoint()
async def create_group(request: Request, _: Principal) -> Response:
    data = await read_body(request)
    check_unknown(data, _GROUP_FIELDS | {"name"})
    name = field_str(data, "name", max_len=64)

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            if session.get(models.Group, name) is not None:
                raise commit_conflict(f"A group named '{name}'")
            row = models.Group(name=name, ratio_ppm=1_000_000, channels=None, description="")
            _apply_group(row, data)
            session.add(row)
            bump_records_version(session, changes.GROUPS)
            session.flush()
            return group_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return json_response(result, 201)


async def _group_op(request: Request, op: str) -> Response:
    name = request.path_params["name"]
    data = await read_body(request) if op == "update" else {}
    check_unknown(data, _GROUP_FIELDS)

    return await record_op(
        request, op, find=lambda session: session.get(models.Group, name), missing=f"Group '{name}'",
        to_json=group_json, apply=lambda row: _apply_group(row, data),
    )


@endpoint()
async def get_group(request: Request, _: Principal) -> Response:
    return await _group_op(request, "get")


@endpoint()
async def update_group(request: Request, _: Principal) -> Response:
    return await _group_op(request, "update")


@endpoint()
async def delete_group(request: Request, _: Principal) -> Response:
    return await _group_op(request, "delete")
