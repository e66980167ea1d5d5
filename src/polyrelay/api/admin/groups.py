"""Groups: price ratios and the channels a group may use."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, read_body, reload_snapshot, run_db
from polyrelay.api.admin.fields import check_unknown, commit_conflict, field_int, field_str, field_str_list
from polyrelay.api.admin.records import list_records, record_op
from polyrelay.store import models
from polyrelay.store.db import bump_records_version


def group_json(row: models.Group) -> dict[str, Any]:
    return {"name": row.name, "ratio": row.ratio_ppm / 1_000_000, "ratio_ppm": row.ratio_ppm,
            "channels": row.channels, "description": row.description}


def _apply_group(row: models.Group, data: dict[str, Any]) -> None:
    if "ratio" in data:
        ratio = data["ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 0:
            raise ApiError(400, "invalid_field", "'ratio' must be a number >= 0.")
        row.ratio_ppm = round(ratio * 1_000_000)
    if "ratio_ppm" in data:
        row.ratio_ppm = field_int(data, "ratio_ppm", minimum=0)  # type: ignore[assignment]
    if "channels" in data:
        row.channels = field_str_list(data, "channels")
    if "description" in data:
        description = data["description"]
        if not isinstance(description, str):
            raise ApiError(400, "invalid_field", "'description' must be a string.")
        row.description = description


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
            bump_records_version(session)
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
