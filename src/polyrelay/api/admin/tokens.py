"""API tokens: one implementation serving the admin routes and a user's own /api/me/tokens."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, iso, json_response, not_found, paging, path_int, query_int, read_body
from polyrelay.api.admin.fields import check_unknown, field_bool, field_datetime, field_int, field_str, field_str_list
from polyrelay.api.admin.records import insert_record, list_records, record_op
from polyrelay.keys import generate_key, hash_key, key_hint
from polyrelay.store import models


_TOKEN_FIELDS = {"name", "limit_micros", "models", "expires_at", "enabled", "allowed_ips", "rpm_limit", "tpm_limit"}


def token_json(row: models.Token) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "user_id": row.user_id, "key_hint": row.key_hint,
        "limit_micros": row.quota_micros, "used_micros": row.used_micros, "models": row.models,
        "expires_at": iso(row.expires_at), "enabled": row.enabled, "allowed_ips": row.allowed_ips,
        "rpm_limit": row.rpm_limit, "tpm_limit": row.tpm_limit, "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
    }


def _apply_token(row: models.Token, data: dict[str, Any]) -> None:
    if "name" in data:
        row.name = field_str(data, "name")
    if "limit_micros" in data:
        row.quota_micros = field_int(data, "limit_micros", minimum=0, nullable=True)
    if "models" in data:
        row.models = field_str_list(data, "models")
    if "expires_at" in data:
        row.expires_at = field_datetime(data, "expires_at")
    if "enabled" in data:
        row.enabled = field_bool(data, "enabled")
    if "allowed_ips" in data:
        ips = field_str_list(data, "allowed_ips")
        for ip in ips or ():
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise ApiError(400, "invalid_field", f"'{ip}' is not an IP address or CIDR.") from None
        row.allowed_ips = ips
    for limit in ("rpm_limit", "tpm_limit"):
        if limit in data:
            setattr(row, limit, field_int(data, limit, minimum=1, nullable=True))


def _token_filter(principal: Principal, query: Any) -> Any:
    return query if principal.user_id is None and principal.admin else query.where(models.Token.user_id == principal.user_id)


async def list_tokens_of(request: Request, owner: int | None) -> Response:
    limit, offset = paging(request)
    if owner is None and request.query_params.get("user_id"):
        owner = query_int(request, "user_id")
    query = select(models.Token)
    if owner is not None:
        query = query.where(models.Token.user_id == owner)
    return await list_records(request, query.order_by(models.Token.id).limit(limit).offset(offset), token_json)


async def create_token_for(request: Request, owner: int | None) -> Response:
    data = await read_body(request)
    check_unknown(data, _TOKEN_FIELDS | ({"user_id"} if owner is None else set()))
    field_str(data, "name")
    user_id = owner if owner is not None else field_int(data, "user_id")
    key = generate_key()

    def build(session: Session) -> models.Token:
        if session.get(models.User, user_id) is None:
            raise not_found(f"User {user_id}")
        row = models.Token(name="", key_hash=hash_key(key), key_hint=key_hint(key), user_id=user_id,
                           used_micros=0, enabled=True)
        _apply_token(row, data)
        return row

    result = await insert_record(request, build, f"A token named '{data['name']}'", token_json)
    return json_response({**result, "key": key}, 201)  # the only time the key is shown


async def token_op(request: Request, owner: int | None, op: str) -> Response:
    token_id = path_int(request)
    data = await read_body(request) if op == "update" else {}
    if op == "update":
        check_unknown(data, _TOKEN_FIELDS)

    def find(session: Session) -> models.Token | None:
        row = session.get(models.Token, token_id)
        # someone else's token looks exactly like a missing one
        return row if row is not None and (owner is None or row.user_id == owner) else None

    return await record_op(
        request, op, find=find, missing=f"Token {token_id}", to_json=token_json,
        apply=lambda row: _apply_token(row, data), conflict=f"A token named '{data.get('name')}'",
    )


@endpoint()
async def list_tokens(request: Request, _: Principal) -> Response:
    return await list_tokens_of(request, None)


@endpoint()
async def create_token(request: Request, _: Principal) -> Response:
    """Create a token for ``user_id``; the answer carries the key, shown this once only."""
    return await create_token_for(request, None)


@endpoint()
async def get_token(request: Request, _: Principal) -> Response:
    return await token_op(request, None, "get")


@endpoint()
async def update_token(request: Request, _: Principal) -> Response:
    return await token_op(request, None, "update")


@endpoint()
async def delete_token(request: Request, _: Principal) -> Response:
    return await token_op(request, None, "delete")
