"""API tokens: one implementation serving the admin routes and a user's own /api/me/tokens.

A token carries two sets of limits. The owner's (``/api/me/tokens``) and an
administrator's (``/api/tokens``) are stored apart, each route writes only its own, and
the relay applies the stricter of each pair; so an owner can tighten a key but never lift
what an administrator imposed. Each route shows its own set at the top level, the other
set under ``admin_limits`` / ``owner_settings``, and ``active``: both sets enable the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.budgets import clock_of, token_budget
from polyrelay.api.admin.common import (
    ApiError, engine_of, iso, json_response, not_found, paging, path_int, query_int, read_body, run_db,
)
from polyrelay.api.admin.fields import (
    MAX_MICROS,
    check_unknown,
    field_bool,
    field_choice,
    field_datetime,
    field_int,
    field_str,
    field_str_list,
)
from polyrelay.api.admin.search import contains_pattern
from polyrelay.api.admin.records import insert_record, record_op
from polyrelay.billing.periods import PERIODS, PeriodClock
from polyrelay.keys import generate_key, hash_key, key_hint
from polyrelay.store import models


# A limit's name in the API -> the column holding the owner's value; an administrator's is admin_<column>.
_OWNER_COLUMNS = {"enabled": "enabled", "limit_micros": "quota_micros", "models": "models", "expires_at": "expires_at",
                  "allowed_ips": "allowed_ips", "rpm_limit": "rpm_limit", "tpm_limit": "tpm_limit",
                  "budget_period": "budget_period"}
_ADMIN_COLUMNS = {name: f"admin_{column}" for name, column in _OWNER_COLUMNS.items()}
_TOKEN_FIELDS = {"name", *_OWNER_COLUMNS}


def _columns(owner: int | None) -> dict[str, str]:
    """The limits a route writes: an owner's own (``owner`` is their user id), else the administrator's."""
    return _ADMIN_COLUMNS if owner is None else _OWNER_COLUMNS


def _limits(row: models.Token, columns: dict[str, str]) -> dict[str, Any]:
    values = {name: getattr(row, column) for name, column in columns.items()}
    return {**values, "expires_at": iso(values["expires_at"])}


def token_view(owner: int | None, clock: PeriodClock) -> Callable[[models.Token], dict[str, Any]]:
    """The token as the route of ``owner`` (None: an administrator) shows it; ``period_budget`` is the
    limit in force when it resets daily, weekly or monthly: its current period, spend and next reset."""
    other = ("owner_settings", _OWNER_COLUMNS) if owner is None else ("admin_limits", _ADMIN_COLUMNS)

    def to_json(row: models.Token) -> dict[str, Any]:
        return {
            "id": row.id, "name": row.name, "user_id": row.user_id, "key_hint": row.key_hint,
            "used_micros": row.used_micros, **_limits(row, _columns(owner)), other[0]: _limits(row, other[1]),
            "active": row.enabled and row.admin_enabled, "created_at": iso(row.created_at),
            "last_used_at": iso(row.last_used_at), "period_budget": token_budget(row, clock),
        }

    return to_json


def _ip_list(data: dict[str, Any]) -> list[str] | None:
    ips = field_str_list(data, "allowed_ips", max_len=64)
    for ip in ips or ():
        try:
            ipaddress.ip_network(ip, strict=False)
        except ValueError:
            raise ApiError(400, "invalid_field", f"'allowed_ips': '{ip}' is not an IP address or CIDR.") from None
    return ips


_PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "enabled": lambda data: field_bool(data, "enabled"),
    "limit_micros": lambda data: field_int(data, "limit_micros", maximum=MAX_MICROS, nullable=True),
    "models": lambda data: field_str_list(data, "models"),
    "expires_at": lambda data: field_datetime(data, "expires_at"),
    "allowed_ips": _ip_list,
    "rpm_limit": lambda data: field_int(data, "rpm_limit", minimum=1, nullable=True),
    "tpm_limit": lambda data: field_int(data, "tpm_limit", minimum=1, nullable=True),
    "budget_period": lambda data: field_choice(data, "budget_period", PERIODS),
}


def _parse(data: dict[str, Any]) -> dict[str, Any]:
    """Every field sent, validated, before any row is touched."""
    values = {name: parse(data) for name, parse in _PARSERS.items() if name in data}
    if "name" in data:
        values["name"] = field_str(data, "name")
    return values


def _apply(row: models.Token, values: dict[str, Any], columns: dict[str, str]) -> None:
    for name, value in values.items():
        setattr(row, columns.get(name, name), value)


async def list_tokens_of(request: Request, owner: int | None) -> Response:
    """The tokens with their owner's name; an administrator may narrow them to ``user_id``, or to ``q``: a part
    of the token's or its owner's name."""
    limit, offset = paging(request)
    user_id = owner
    if owner is None and request.query_params.get("user_id"):
        user_id = query_int(request, "user_id")
    query = select(models.Token, models.User.name).outerjoin(models.User, models.User.id == models.Token.user_id)
    if user_id is not None:
        query = query.where(models.Token.user_id == user_id)
    if owner is None and (text := request.query_params.get("q")):
        pattern = contains_pattern(text)
        query = query.where(or_(models.Token.name.ilike(pattern, escape="\\"),
                                models.User.name.ilike(pattern, escape="\\")))
    query = query.order_by(models.Token.id).limit(limit).offset(offset)
    view = token_view(owner, clock_of(request))

    def work() -> list[dict[str, Any]]:
        with Session(engine_of(request)) as session:
            return [{**view(token), "user_name": user_name} for token, user_name in session.execute(query)]

    return json_response({"data": await run_db(request, work)})


async def create_token_for(request: Request, owner: int | None) -> Response:
    data = await read_body(request)
    check_unknown(data, _TOKEN_FIELDS | ({"user_id"} if owner is None else set()))
    values = {**_parse(data), "name": field_str(data, "name")}
    user_id = owner if owner is not None else field_int(data, "user_id", minimum=1)
    key = generate_key()

    def build(session: Session) -> models.Token:
        if session.get(models.User, user_id) is None:
            raise not_found(f"User {user_id}")
        row = models.Token(key_hash=hash_key(key), key_hint=key_hint(key), user_id=user_id, used_micros=0,
                           enabled=True, admin_enabled=True)
        _apply(row, values, _columns(owner))
        return row

    result = await insert_record(request, build, f"A token named '{values['name']}'",
                                 token_view(owner, clock_of(request)))
    return json_response({**result, "key": key}, 201)  # the only time the key is shown


async def token_op(request: Request, owner: int | None, op: str) -> Response:
    token_id = path_int(request)
    data = await read_body(request) if op == "update" else {}
    check_unknown(data, _TOKEN_FIELDS)
    values = _parse(data)

    def find(session: Session) -> models.Token | None:
        row = session.get(models.Token, token_id)
        # someone else's token looks exactly like a missing one
        return row if row is not None and (owner is None or row.user_id == owner) else None

    return await record_op(
        request, op, find=find, missing=f"Token {token_id}", to_json=token_view(owner, clock_of(request)),
        apply=lambda row: _apply(row, values, _columns(owner)), conflict=f"A token named '{values.get('name')}'",
    )


@endpoint()
async def list_tokens(request: Request, _: Principal) -> Response:
    return await list_tokens_of(request, None)


@endpoint()
async def create_token(request: Request, _: Principal) -> Response:
    """Create a token for ``user_id``; its limits are an administrator's, which the owner cannot lift.

    The answer carries the key, shown this once only.
    """
    return await create_token_for(request, None)


@endpoint()
async def get_token(request: Request, _: Principal) -> Response:
    return await token_op(request, None, "get")


@endpoint()
async def update_token(request: Request, _: Principal) -> Response:
    """Change a token's name or the limits an administrator imposes on it (the owner's own stay as they are)."""
    return await token_op(request, None, "update")


@endpoint()
async def delete_token(request: Request, _: Principal) -> Response:
    return await token_op(request, None, "delete")
