"""Channels: upstream endpoints, their keys and models; enable, disable and test."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import (
    INT32_MAX,
    ApiError,
    engine_of,
    iso,
    json_response,
    not_found,
    path_int,
    read_body,
)
from polyrelay.api.admin.fields import MAX_MICROS, check_unknown, field_int, field_number, field_str, field_str_list
from polyrelay.api.admin.records import insert_record, list_records, record_op
from polyrelay.keys import key_hint
from polyrelay.store import models


_CHANNEL_FIELDS = {"name", "type", "base_url", "keys", "models", "model_mapping", "priority", "weight", "enabled",
                   "timeout_s", "connect_timeout_s", "options", "balance_micros"}


def channel_json(row: models.Channel) -> dict[str, Any]:
    """Never the upstream keys themselves: only hints."""
    return {
        "id": row.id, "name": row.name, "type": row.type, "base_url": row.base_url,
        "keys": [key_hint(k) for k in row.keys], "models": row.models, "model_mapping": row.model_mapping,
        "priority": row.priority, "weight": row.weight, "enabled": row.enabled,
        "disabled_reason": row.disabled_reason, "failure_count": row.failure_count,
        "cooldown_until": iso(row.cooldown_until), "last_error": row.last_error, "timeout_s": row.timeout_s,
        "connect_timeout_s": row.connect_timeout_s, "options": row.options, "balance_micros": row.balance_micros,
        "balance_updated_at": iso(row.balance_updated_at),
        "tested_at": iso(row.tested_at), "test_latency_ms": row.test_latency_ms, "test_result": row.test_result,
        "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
    }


def _check_bounds(data: dict[str, Any]) -> None:
    """What the config model leaves open but the columns do not: lengths, integer and time ranges."""
    for name, max_len in (("name", 128), ("type", 32), ("base_url", 512)):
        if name in data:
            field_str(data, name, max_len=max_len)
    if "keys" in data:
        field_str_list(data, "keys", nullable=False, max_len=4096)
    if "models" in data:
        field_str_list(data, "models", nullable=False)
    if "priority" in data:
        field_int(data, "priority", minimum=-INT32_MAX, maximum=INT32_MAX)
    if "weight" in data:
        field_int(data, "weight")
    for name in ("timeout_s", "connect_timeout_s"):
        if name in data:
            field_number(data, name, minimum=0.001, maximum=_MAX_TIMEOUT_S)


_MAX_TIMEOUT_S = 86_400.0


def _apply_channel(row: models.Channel, data: dict[str, Any], creating: bool, actor: str = "") -> None:
    from pydantic import ValidationError

    from polyrelay.config import ChannelConfig
    from polyrelay.providers.registry import CHANNEL_TYPES

    current = {} if creating else {
        "name": row.name, "type": row.type, "base_url": row.base_url, "keys": row.keys, "models": row.models,
        "model_mapping": row.model_mapping, "priority": row.priority, "weight": row.weight, "enabled": row.enabled,
        "timeout_s": row.timeout_s, "connect_timeout_s": row.connect_timeout_s, "options": row.options,
    }
    _check_bounds(data)
    merged = {**current, **{k: v for k, v in data.items() if k != "balance_micros"}}
    try:
        config = ChannelConfig(**merged)
    except ValidationError as exc:
        raise ApiError(400, "invalid_field", str(exc).replace("\n", " ")) from None
    known = CHANNEL_TYPES
    if config.type not in known:
        raise ApiError(400, "invalid_field",
                       f"Unknown channel type '{config.type}'; known: {', '.join(sorted(known))}.")
    row.keys, row.models = list(config.keys), list(config.models)
    row.model_mapping, row.options = dict(config.model_mapping), dict(config.options)
    before = (row.enabled, row.disabled_reason)
    for name in ("name", "type", "base_url", "priority", "weight", "enabled", "timeout_s", "connect_timeout_s"):
        setattr(row, name, getattr(config, name))
    if "enabled" in data and config.enabled:
        row.disabled_reason, row.failure_count, row.cooldown_until = "", 0, None
    elif "enabled" in data:  # by hand: never probed back (relay.healing), even if health had disabled it first
        row.disabled_reason = f"disabled by {actor or 'an administrator'}"
    if not creating and "enabled" in data and (row.enabled, row.disabled_reason) != before:
        session = object_session(row)
        assert session is not None
        session.add(models.ChannelEvent(channel_id=row.id, kind="enabled" if row.enabled else "disabled",
                                        reason="by hand", actor=actor[:128]))
    if "balance_micros" in data:
        row.balance_micros = field_int(data, "balance_micros", minimum=-MAX_MICROS, maximum=MAX_MICROS, nullable=True)
        row.balance_updated_at = None  # noted by hand, not fetched


def actor_of(principal: Principal) -> str:
    """Who a channel event names when an administrator acted: ``admin:<user name>`` (``admin:admin``: the admin key)."""
    return f"admin:{principal.name}"[:128]


@endpoint()
async def list_channels(request: Request, _: Principal) -> Response:
    return await list_records(request, select(models.Channel).order_by(models.Channel.id), channel_json)


@endpoint()
async def create_channel(request: Request, _: Principal) -> Response:
    data = await read_body(request)
    check_unknown(data, _CHANNEL_FIELDS)

    def build(_: Session) -> models.Channel:
        row = models.Channel()
        _apply_channel(row, data, creating=True)
        return row

    return json_response(await insert_record(request, build, f"A channel named '{data.get('name')}'", channel_json), 201)


async def _channel_op(request: Request, op: str, principal: Principal, data: dict[str, Any] | None = None) -> Response:
    channel_id = path_int(request)
    if data is None:
        data = await read_body(request) if op == "update" else {}
    check_unknown(data, _CHANNEL_FIELDS)

    return await record_op(
        request, op, find=lambda session: session.get(models.Channel, channel_id), missing=f"Channel {channel_id}",
        to_json=channel_json, apply=lambda row: _apply_channel(row, data, creating=False, actor=actor_of(principal)),
        conflict=f"A channel named '{data.get('name')}'",
    )


@endpoint()
async def get_channel(request: Request, principal: Principal) -> Response:
    return await _channel_op(request, "get", principal)


@endpoint()
async def update_channel(request: Request, principal: Principal) -> Response:
    return await _channel_op(request, "update", principal)


@endpoint()
async def delete_channel(request: Request, principal: Principal) -> Response:
    return await _channel_op(request, "delete", principal)


@endpoint()
async def enable_channel(request: Request, principal: Principal) -> Response:
    return await _channel_op(request, "update", principal, {"enabled": True})


@endpoint()
async def disable_channel(request: Request, principal: Principal) -> Response:
    return await _channel_op(request, "update", principal, {"enabled": False})


@endpoint()
async def test_channel(request: Request, _: Principal) -> Response:
    """One tiny real call through the channel's adaptor; records latency and result on the channel."""
    from polyrelay.api.admin.ops import run_channel_test

    channel_id = path_int(request)
    data = await read_body(request)
    check_unknown(data, {"model"})
    model = field_str(data, "model", max_len=256) if data.get("model") is not None else None
    result = await run_channel_test(engine_of(request), request.app.state.db_executor, channel_id, model)
    if result is None:
        raise not_found(f"Channel {channel_id}")
    return json_response(result)
