"""The admin REST API (``/api/...``): users, tokens, groups, channels, prices, money, logs, ``/api/me``.

Auth: the operator's admin key (``Authorization: Bearer <admin_key>``, from
``POLYRELAY_ADMIN_KEY`` or the config's ``admin_key``), or a console session cookie
from ``POST /api/auth/login``. A session of a user with role ``admin`` may do what the
admin key may; any other user reaches only ``/api/me/...``, which never takes a user id
from the request. Cookie-authenticated writes must carry ``X-Requested-With`` (CSRF).

Every write that changes what the relay reads bumps ``meta.records_version`` in the
same transaction, and this process reloads its snapshot at once; the others within
``snapshot_refresh_s``. Errors are ``{"error": {"status", "code", "message"}}``.
Money is integer micro-USD (``*_micros``) in and out.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from sqlalchemy import Date, Engine, case, cast, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from polyrelay import accounts
from polyrelay.api import admin_docs
from polyrelay.billing.meter import Price as PriceValue
from polyrelay.relay.auth import generate_key, hash_key, key_hint
from polyrelay.store import models
from polyrelay.store.db import bump_records_version
from polyrelay.store.snapshot import load_snapshot

SESSION_COOKIE = "polyrelay_session"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PRICE_FIELDS = PriceValue.field_names()
_MAX_PAGE = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type="application/json",
        headers=headers,
    )


def error_response(error: ApiError) -> Response:
    return _json({"error": {"status": error.status, "code": error.code, "message": error.message}}, error.status)


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist.")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int | None  # None: the admin key
    name: str
    admin: bool
    via: str  # "key" | "session"


# --- plumbing ---------------------------------------------------------------------------------


def _engine(request: Request) -> Engine:
    return request.app.state.db


async def run_db(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """Database work on the process's DB thread (the one the batching writer uses)."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.db_executor, fn, *args)


async def reload_snapshot(request: Request) -> None:
    """Make an admin change visible to this process's relay now (others follow within snapshot_refresh_s)."""
    relay = request.app.state.relay

    def read() -> Any:
        with Session(_engine(request)) as session:
            return load_snapshot(session, relay.snapshot)

    fresh = await run_db(request, read)
    relay.snapshot = fresh.adopt(relay.snapshot)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return data


def _principal_from_session(engine: Engine, session_hash: str) -> Principal | None:
    with Session(engine) as session:
        row = session.execute(
            select(models.User.id, models.User.name, models.User.role, models.User.enabled, models.WebSession.expires_at)
            .join(models.WebSession, models.WebSession.user_id == models.User.id)
            .where(models.WebSession.id == session_hash)
        ).first()
    if row is None or not row.enabled or _aware(row.expires_at) <= datetime.now(timezone.utc):
        return None
    return Principal(row.id, row.name, row.role == "admin", "session")


async def _authenticate(request: Request) -> Principal:
    admin_key = request.app.state.settings.admin_key
    authorization = request.headers.get("authorization", "")
    scheme, _, presented = authorization.partition(" ")
    if authorization:
        if scheme.lower() == "bearer" and admin_key and hmac.compare_digest(presented.strip().encode(), admin_key.encode()):
            return Principal(None, "admin", True, "key")
        raise ApiError(401, "invalid_credentials", "The admin key is not valid.")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = await run_db(request, _principal_from_session, _engine(request), _sha256(cookie))
        if principal is not None:
            if request.method not in _SAFE_METHODS and not request.headers.get("x-requested-with"):
                raise ApiError(403, "csrf", "Requests with a session cookie that change data need an X-Requested-With header.")
            return principal
    raise ApiError(401, "unauthenticated", "Send the admin key as 'Authorization: Bearer <key>', or log in.")


Handler = Callable[[Request, Principal], Awaitable[Response]]


def endpoint(*, admin: bool = True, public: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                principal = Principal(None, "", False, "none") if public else await _authenticate(request)
                if admin and not principal.admin:
                    raise ApiError(403, "forbidden", "This needs an administrator.")
                return await handler(request, principal)
            except ApiError as error:
                return error_response(error)

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value is not None else None


def _path_int(request: Request, name: str = "id") -> int:
    try:
        return int(request.path_params[name])
    except (KeyError, ValueError):
        raise ApiError(400, "invalid_id", f"'{request.path_params.get(name)}' is not an id.") from None


# --- field validation -------------------------------------------------------------------------


def _int(data: dict[str, Any], key: str, *, minimum: int | None = None, nullable: bool = False) -> int | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_field", f"'{key}' must be an integer{' or null' if nullable else ''}.")
    if minimum is not None and value < minimum:
        raise ApiError(400, "invalid_field", f"'{key}' must be at least {minimum}.")
    return value


def _str(data: dict[str, Any], key: str, *, max_len: int = 128, choices: tuple[str, ...] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ApiError(400, "invalid_field", f"'{key}' must be a non-empty string of at most {max_len} characters.")
    if choices is not None and value not in choices:
        raise ApiError(400, "invalid_field", f"'{key}' must be one of {', '.join(choices)}.")
    return value.strip()


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"'{key}' must be true or false.")
    return value


def _str_list(data: dict[str, Any], key: str, *, nullable: bool = True) -> list[str] | None:
    value = data.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError(400, "invalid_field", f"'{key}' must be a list of strings{' or null' if nullable else ''}.")
    return list(value)


def _datetime(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"'{key}' must be an ISO 8601 time or null.")
    return _parse_time(value, key)


def _parse_time(value: str, key: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_field", f"'{key}' must be an ISO 8601 time.") from None
    return _aware(parsed).astimezone(timezone.utc)


def _check_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(400, "unknown_field", f"Unknown field(s): {', '.join(unknown)}.")


def _commit_conflict(what: str) -> ApiError:
    return ApiError(409, "conflict", f"{what} already exists.")


# --- users ------------------------------------------------------------------------------------

_USER_FIELDS = {"name", "role", "group", "unlimited", "enabled", "password", "rpm_limit", "tpm_limit"}


def user_json(row: models.User) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "role": row.role, "group": row.group, "balance_micros": row.balance_micros,
        "unlimited": row.unlimited, "enabled": row.enabled, "rpm_limit": row.rpm_limit, "tpm_limit": row.tpm_limit,
        "has_password": row.password_hash is not None, "created_at": _iso(row.created_at),
    }


def _apply_user(row: models.User, data: dict[str, Any], password_hash: str | None) -> None:
    if "name" in data:
        row.name = _str(data, "name")
    if "role" in data:
        row.role = _str(data, "role", choices=("admin", "user"))
    if "group" in data:
        row.group = _str(data, "group", max_len=64)
    for flag in ("unlimited", "enabled"):
        if flag in data:
            setattr(row, flag, _bool(data, flag))
    for limit in ("rpm_limit", "tpm_limit"):
        if limit in data:
            setattr(row, limit, _int(data, limit, minimum=1, nullable=True))
    if password_hash is not None:
        row.password_hash = password_hash


async def _password_hash(data: dict[str, Any]) -> str | None:
    if "password" not in data:
        return None
    password = data["password"]
    if not isinstance(password, str) or len(password) < 8:
        raise ApiError(400, "invalid_field", "'password' must be a string of at least 8 characters.")
    return await asyncio.get_running_loop().run_in_executor(None, accounts.hash_password, password)


@endpoint()
async def list_users(request: Request, _: Principal) -> Response:
    limit, offset = _paging(request)

    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session:
            rows = session.scalars(select(models.User).order_by(models.User.id).limit(limit).offset(offset))
            return [user_json(r) for r in rows]

    return _json({"data": await run_db(request, work)})


@endpoint()
async def create_user(request: Request, _: Principal) -> Response:
    data = await _body(request)
    _check_unknown(data, _USER_FIELDS | {"balance_micros"})
    _str(data, "name")
    initial = _int(data, "balance_micros", minimum=0) if "balance_micros" in data else 0
    password_hash = await _password_hash(data)

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            row = models.User(name="", balance_micros=0, role="user", group="default", unlimited=False, enabled=True)
            _apply_user(row, data, password_hash)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise _commit_conflict(f"A user named '{data['name']}'") from None
            if initial:
                accounts.post(session, row.id, "topup", initial, f"initial-{row.id}", "initial balance")
                session.refresh(row)
            bump_records_version(session)
            return user_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return _json(result, 201)


@endpoint()
async def get_user(request: Request, _: Principal) -> Response:
    user_id = _path_int(request)

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session:
            row = session.get(models.User, user_id)
            if row is None:
                raise _not_found(f"User {user_id}")
            return user_json(row)

    return _json(await run_db(request, work))


@endpoint()
async def update_user(request: Request, _: Principal) -> Response:
    user_id = _path_int(request)
    data = await _body(request)
    _check_unknown(data, _USER_FIELDS)
    password_hash = await _password_hash(data)

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            row = session.get(models.User, user_id)
            if row is None:
                raise _not_found(f"User {user_id}")
            _apply_user(row, data, password_hash)
            try:
                session.flush()
            except IntegrityError:
                raise _commit_conflict(f"A user named '{data.get('name')}'") from None
            if data.get("enabled") is False or password_hash is not None:
                session.execute(delete(models.WebSession).where(models.WebSession.user_id == user_id))
            bump_records_version(session)
            return user_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return _json(result)


@endpoint()
async def delete_user(request: Request, _: Principal) -> Response:
    """Delete a user, its tokens and sessions; its ledger and usage logs stay as history."""
    user_id = _path_int(request)

    def work() -> None:
        with Session(_engine(request)) as session, session.begin():
            if session.get(models.User, user_id) is None:
                raise _not_found(f"User {user_id}")
            session.execute(delete(models.Token).where(models.Token.user_id == user_id))
            session.execute(delete(models.WebSession).where(models.WebSession.user_id == user_id))
            session.execute(delete(models.User).where(models.User.id == user_id))
            bump_records_version(session)

    await run_db(request, work)
    await reload_snapshot(request)
    return Response(status_code=204)


async def _move_money(request: Request, user_id: int, kind: str) -> Response:
    data = await _body(request)
    _check_unknown(data, {"amount_micros", "note", "request_id"})
    amount = _int(data, "amount_micros")
    assert amount is not None
    if kind == "topup" and amount <= 0:
        raise ApiError(400, "invalid_field", "'amount_micros' of a top-up must be positive.")
    if amount == 0:
        raise ApiError(400, "invalid_field", "'amount_micros' must not be 0.")
    note = data.get("note") or ""
    if not isinstance(note, str):
        raise ApiError(400, "invalid_field", "'note' must be a string.")
    request_id = data.get("request_id") or f"{kind}-{secrets.token_hex(12)}"
    if not isinstance(request_id, str) or len(request_id) > 64:
        raise ApiError(400, "invalid_field", "'request_id' must be a string of at most 64 characters.")

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            row = session.get(models.User, user_id)
            if row is None:
                raise _not_found(f"User {user_id}")
            applied = accounts.post(session, user_id, kind, amount, request_id, note)
            bump_records_version(session)
            session.refresh(row)
            return {"applied": applied, "request_id": request_id, "user": user_json(row)}

    result = await run_db(request, work)
    await reload_snapshot(request)
    return _json(result)


@endpoint()
async def topup(request: Request, _: Principal) -> Response:
    """Credit a user; idempotent by ``request_id`` (a repeated one changes nothing and says applied=false)."""
    return await _move_money(request, _path_int(request), "topup")


@endpoint()
async def adjust(request: Request, _: Principal) -> Response:
    """Correct a user's balance by a signed amount; idempotent by ``request_id``."""
    return await _move_money(request, _path_int(request), "adjustment")


def ledger_json(row: models.LedgerEntry) -> dict[str, Any]:
    return {"id": row.id, "created_at": _iso(row.created_at), "user_id": row.user_id, "token_id": row.token_id,
            "kind": row.kind, "amount_micros": row.amount_micros, "request_id": row.request_id, "note": row.note}


async def _ledger(request: Request, user_id: int) -> Response:
    limit, offset = _paging(request)

    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session:
            rows = session.scalars(
                select(models.LedgerEntry).where(models.LedgerEntry.user_id == user_id)
                .order_by(models.LedgerEntry.id.desc()).limit(limit).offset(offset)
            )
            return [ledger_json(r) for r in rows]

    return _json({"data": await run_db(request, work)})


@endpoint()
async def user_ledger(request: Request, _: Principal) -> Response:
    return await _ledger(request, _path_int(request))


# --- tokens -----------------------------------------------------------------------------------

_TOKEN_FIELDS = {"name", "limit_micros", "models", "expires_at", "enabled", "allowed_ips", "rpm_limit", "tpm_limit"}


def token_json(row: models.Token) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "user_id": row.user_id, "key_hint": row.key_hint,
        "limit_micros": row.quota_micros, "used_micros": row.used_micros, "models": row.models,
        "expires_at": _iso(row.expires_at), "enabled": row.enabled, "allowed_ips": row.allowed_ips,
        "rpm_limit": row.rpm_limit, "tpm_limit": row.tpm_limit, "created_at": _iso(row.created_at),
        "last_used_at": _iso(row.last_used_at),
    }


def _apply_token(row: models.Token, data: dict[str, Any]) -> None:
    if "name" in data:
        row.name = _str(data, "name")
    if "limit_micros" in data:
        row.quota_micros = _int(data, "limit_micros", minimum=0, nullable=True)
    if "models" in data:
        row.models = _str_list(data, "models")
    if "expires_at" in data:
        row.expires_at = _datetime(data, "expires_at")
    if "enabled" in data:
        row.enabled = _bool(data, "enabled")
    if "allowed_ips" in data:
        ips = _str_list(data, "allowed_ips")
        for ip in ips or ():
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise ApiError(400, "invalid_field", f"'{ip}' is not an IP address or CIDR.") from None
        row.allowed_ips = ips
    for limit in ("rpm_limit", "tpm_limit"):
        if limit in data:
            setattr(row, limit, _int(data, limit, minimum=1, nullable=True))


def _token_filter(principal: Principal, query: Any) -> Any:
    return query if principal.user_id is None and principal.admin else query.where(models.Token.user_id == principal.user_id)


async def _list_tokens(request: Request, owner: int | None) -> Response:
    limit, offset = _paging(request)
    if owner is None and request.query_params.get("user_id"):
        owner = _query_int(request, "user_id")

    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session:
            query = select(models.Token)
            if owner is not None:
                query = query.where(models.Token.user_id == owner)
            rows = session.scalars(query.order_by(models.Token.id).limit(limit).offset(offset))
            return [token_json(r) for r in rows]

    return _json({"data": await run_db(request, work)})


async def _create_token(request: Request, owner: int | None) -> Response:
    data = await _body(request)
    _check_unknown(data, _TOKEN_FIELDS | ({"user_id"} if owner is None else set()))
    _str(data, "name")
    user_id = owner if owner is not None else _int(data, "user_id")
    key = generate_key()

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            if session.get(models.User, user_id) is None:
                raise _not_found(f"User {user_id}")
            row = models.Token(name="", key_hash=hash_key(key), key_hint=key_hint(key), user_id=user_id,
                               used_micros=0, enabled=True)
            _apply_token(row, data)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise _commit_conflict(f"A token named '{data['name']}'") from None
            bump_records_version(session)
            return token_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return _json({**result, "key": key}, 201)  # the only time the key is shown


async def _token_op(request: Request, owner: int | None, op: str) -> Response:
    token_id = _path_int(request)
    data = await _body(request) if op == "update" else {}
    if op == "update":
        _check_unknown(data, _TOKEN_FIELDS)

    def work() -> dict[str, Any] | None:
        with Session(_engine(request)) as session, session.begin():
            row = session.get(models.Token, token_id)
            if row is None or (owner is not None and row.user_id != owner):
                raise _not_found(f"Token {token_id}")  # someone else's token looks exactly like a missing one
            if op == "get":
                return token_json(row)
            if op == "delete":
                session.delete(row)
                bump_records_version(session)
                return None
            _apply_token(row, data)
            try:
                session.flush()
            except IntegrityError:
                raise _commit_conflict(f"A token named '{data.get('name')}'") from None
            bump_records_version(session)
            return token_json(row)

    result = await run_db(request, work)
    if op == "get":
        return _json(result)
    await reload_snapshot(request)
    return Response(status_code=204) if result is None else _json(result)


@endpoint()
async def list_tokens(request: Request, _: Principal) -> Response:
    return await _list_tokens(request, None)


@endpoint()
async def create_token(request: Request, _: Principal) -> Response:
    """Create a token for ``user_id``; the answer carries the key, shown this once only."""
    return await _create_token(request, None)


@endpoint()
async def get_token(request: Request, _: Principal) -> Response:
    return await _token_op(request, None, "get")


@endpoint()
async def update_token(request: Request, _: Principal) -> Response:
    return await _token_op(request, None, "update")


@endpoint()
async def delete_token(request: Request, _: Principal) -> Response:
    return await _token_op(request, None, "delete")


# --- groups -----------------------------------------------------------------------------------


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
        row.ratio_ppm = _int(data, "ratio_ppm", minimum=0)  # type: ignore[assignment]
    if "channels" in data:
        row.channels = _str_list(data, "channels")
    if "description" in data:
        description = data["description"]
        if not isinstance(description, str):
            raise ApiError(400, "invalid_field", "'description' must be a string.")
        row.description = description


_GROUP_FIELDS = {"ratio", "ratio_ppm", "channels", "description"}


@endpoint()
async def list_groups(request: Request, _: Principal) -> Response:
    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session:
            return [group_json(r) for r in session.scalars(select(models.Group).order_by(models.Group.name))]

    return _json({"data": await run_db(request, work)})


@endpoint()
async def create_group(request: Request, _: Principal) -> Response:
    data = await _body(request)
    _check_unknown(data, _GROUP_FIELDS | {"name"})
    name = _str(data, "name", max_len=64)

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            if session.get(models.Group, name) is not None:
                raise _commit_conflict(f"A group named '{name}'")
            row = models.Group(name=name, ratio_ppm=1_000_000, channels=None, description="")
            _apply_group(row, data)
            session.add(row)
            bump_records_version(session)
            session.flush()
            return group_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return _json(result, 201)


async def _group_op(request: Request, op: str) -> Response:
    name = request.path_params["name"]
    data = await _body(request) if op == "update" else {}
    _check_unknown(data, _GROUP_FIELDS)

    def work() -> dict[str, Any] | None:
        with Session(_engine(request)) as session, session.begin():
            row = session.get(models.Group, name)
            if row is None:
                raise _not_found(f"Group '{name}'")
            if op == "get":
                return group_json(row)
            if op == "delete":
                session.delete(row)
                bump_records_version(session)
                return None
            _apply_group(row, data)
            bump_records_version(session)
            session.flush()
            return group_json(row)

    result = await run_db(request, work)
    if op == "get":
        return _json(result)
    await reload_snapshot(request)
    return Response(status_code=204) if result is None else _json(result)


@endpoint()
async def get_group(request: Request, _: Principal) -> Response:
    return await _group_op(request, "get")


@endpoint()
async def update_group(request: Request, _: Principal) -> Response:
    return await _group_op(request, "update")


@endpoint()
async def delete_group(request: Request, _: Principal) -> Response:
    return await _group_op(request, "delete")


# --- channels ---------------------------------------------------------------------------------

_CHANNEL_FIELDS = {"name", "type", "base_url", "keys", "models", "model_mapping", "priority", "weight", "enabled",
                   "timeout_s", "connect_timeout_s", "options", "balance_micros"}


def channel_json(row: models.Channel) -> dict[str, Any]:
    """Never the upstream keys themselves: only hints."""
    return {
        "id": row.id, "name": row.name, "type": row.type, "base_url": row.base_url,
        "keys": [key_hint(k) for k in row.keys], "models": row.models, "model_mapping": row.model_mapping,
        "priority": row.priority, "weight": row.weight, "enabled": row.enabled,
        "disabled_reason": row.disabled_reason, "failure_count": row.failure_count,
        "cooldown_until": _iso(row.cooldown_until), "last_error": row.last_error, "timeout_s": row.timeout_s,
        "connect_timeout_s": row.connect_timeout_s, "options": row.options, "balance_micros": row.balance_micros,
        "tested_at": _iso(row.tested_at), "test_latency_ms": row.test_latency_ms, "test_result": row.test_result,
        "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
    }


def _apply_channel(row: models.Channel, data: dict[str, Any], creating: bool) -> None:
    from pydantic import ValidationError

    from polyrelay.config import ChannelConfig
    from polyrelay.providers import adaptor_for

    current = {} if creating else {
        "name": row.name, "type": row.type, "base_url": row.base_url, "keys": row.keys, "models": row.models,
        "model_mapping": row.model_mapping, "priority": row.priority, "weight": row.weight, "enabled": row.enabled,
        "timeout_s": row.timeout_s, "connect_timeout_s": row.connect_timeout_s, "options": row.options,
    }
    merged = {**current, **{k: v for k, v in data.items() if k != "balance_micros"}}
    try:
        config = ChannelConfig(**merged)
    except ValidationError as exc:
        raise ApiError(400, "invalid_field", str(exc).replace("\n", " ")) from None
    try:
        adaptor_for(config.type)
    except Exception:
        raise ApiError(400, "invalid_field", f"Unknown channel type '{config.type}'.") from None
    for name in ("name", "type", "base_url", "priority", "weight", "enabled", "timeout_s", "connect_timeout_s"):
        setattr(row, name, getattr(config, name))
    row.keys, row.models = list(config.keys), list(config.models)
    row.model_mapping, row.options = dict(config.model_mapping), dict(config.options)
    if "enabled" in data and config.enabled:
        row.disabled_reason, row.failure_count, row.cooldown_until = "", 0, None
    if "balance_micros" in data:
        row.balance_micros = _int(data, "balance_micros", nullable=True)


@endpoint()
async def list_channels(request: Request, _: Principal) -> Response:
    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session:
            return [channel_json(r) for r in session.scalars(select(models.Channel).order_by(models.Channel.id))]

    return _json({"data": await run_db(request, work)})


@endpoint()
async def create_channel(request: Request, _: Principal) -> Response:
    data = await _body(request)
    _check_unknown(data, _CHANNEL_FIELDS)

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            row = models.Channel()
            _apply_channel(row, data, creating=True)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise _commit_conflict(f"A channel named '{data.get('name')}'") from None
            bump_records_version(session)
            return channel_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return _json(result, 201)


async def _channel_op(request: Request, op: str, data: dict[str, Any] | None = None) -> Response:
    channel_id = _path_int(request)
    if data is None:
        data = await _body(request) if op == "update" else {}
    _check_unknown(data, _CHANNEL_FIELDS)

    def work() -> dict[str, Any] | None:
        with Session(_engine(request)) as session, session.begin():
            row = session.get(models.Channel, channel_id)
            if row is None:
                raise _not_found(f"Channel {channel_id}")
            if op == "get":
                return channel_json(row)
            if op == "delete":
                session.delete(row)
                bump_records_version(session)
                return None
            _apply_channel(row, data, creating=False)
            try:
                session.flush()
            except IntegrityError:
                raise _commit_conflict(f"A channel named '{data.get('name')}'") from None
            bump_records_version(session)
            return channel_json(row)

    result = await run_db(request, work)
    if op == "get":
        return _json(result)
    await reload_snapshot(request)
    return Response(status_code=204) if result is None else _json(result)


@endpoint()
async def get_channel(request: Request, _: Principal) -> Response:
    return await _channel_op(request, "get")


@endpoint()
async def update_channel(request: Request, _: Principal) -> Response:
    return await _channel_op(request, "update")


@endpoint()
async def delete_channel(request: Request, _: Principal) -> Response:
    return await _channel_op(request, "delete")


@endpoint()
async def enable_channel(request: Request, _: Principal) -> Response:
    return await _channel_op(request, "update", {"enabled": True})


@endpoint()
async def disable_channel(request: Request, _: Principal) -> Response:
    return await _channel_op(request, "update", {"enabled": False})


@endpoint()
async def test_channel(request: Request, _: Principal) -> Response:
    """One tiny real call through the channel's adaptor; records latency and result on the channel."""
    from polyrelay.admin_ops import run_channel_test

    channel_id = _path_int(request)
    data = await _body(request)
    _check_unknown(data, {"model"})
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "invalid_field", "'model' must be a string.")
    result = await run_channel_test(_engine(request), request.app.state.db_executor, channel_id, model)
    if result is None:
        raise _not_found(f"Channel {channel_id}")
    return _json(result)


# --- prices -----------------------------------------------------------------------------------


def price_json(row: models.Price) -> dict[str, Any]:
    return {"model": row.model, **{f"{name}_micros": getattr(row, name) for name in _PRICE_FIELDS}}


@endpoint()
async def list_prices(request: Request, _: Principal) -> Response:
    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session:
            return [price_json(r) for r in session.scalars(select(models.Price).order_by(models.Price.model))]

    return _json({"data": await run_db(request, work)})


@endpoint()
async def put_price(request: Request, _: Principal) -> Response:
    """Set a model's price (exact name, wildcard, or ``default``); amounts in micro-USD per unit."""
    model = request.path_params["model"]
    data = await _body(request)
    _check_unknown(data, {f"{name}_micros" for name in _PRICE_FIELDS})
    values = {name: _int(data, f"{name}_micros", minimum=0, nullable=True) for name in _PRICE_FIELDS}

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            row = session.get(models.Price, model)
            if row is None:
                row = models.Price(model=model)
                session.add(row)
            for name, value in values.items():
                setattr(row, name, value)
            bump_records_version(session)
            session.flush()
            return price_json(row)

    result = await run_db(request, work)
    await reload_snapshot(request)
    return _json(result)


@endpoint()
async def get_price(request: Request, _: Principal) -> Response:
    model = request.path_params["model"]

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session:
            row = session.get(models.Price, model)
            if row is None:
                raise _not_found(f"The price of '{model}'")
            return price_json(row)

    return _json(await run_db(request, work))


@endpoint()
async def delete_price(request: Request, _: Principal) -> Response:
    model = request.path_params["model"]

    def work() -> None:
        with Session(_engine(request)) as session, session.begin():
            if session.execute(delete(models.Price).where(models.Price.model == model)).rowcount != 1:
                raise _not_found(f"The price of '{model}'")
            bump_records_version(session)

    await run_db(request, work)
    await reload_snapshot(request)
    return Response(status_code=204)


# --- usage logs -------------------------------------------------------------------------------

_LOG_COLUMNS = [c.name for c in models.UsageLog.__table__.columns]


def _paging(request: Request) -> tuple[int, int]:
    limit = _query_int(request, "limit", 100)
    offset = _query_int(request, "offset", 0)
    if not 1 <= limit <= _MAX_PAGE or offset < 0:
        raise ApiError(400, "invalid_query", f"'limit' must be 1..{_MAX_PAGE} and 'offset' >= 0.")
    return limit, offset


def _query_int(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "invalid_query", f"'{name}' is required.")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"'{name}' must be an integer.") from None


def _log_filters(request: Request, owner: int | None) -> list[Any]:
    """Filters: start, end (ISO 8601), user_id, token_id, model, channel_id, status (code, 'ok' or 'error')."""
    log = models.UsageLog
    params = request.query_params
    clauses: list[Any] = []
    if params.get("start"):
        clauses.append(log.created_at >= _parse_time(params["start"], "start"))
    if params.get("end"):
        clauses.append(log.created_at < _parse_time(params["end"], "end"))
    if owner is not None:
        clauses.append(log.user_id == owner)
    elif params.get("user_id"):
        clauses.append(log.user_id == _query_int(request, "user_id"))
    if params.get("token_id"):
        clauses.append(log.token_id == _query_int(request, "token_id"))
    if params.get("model"):
        clauses.append(log.model == params["model"])
    if params.get("channel_id"):
        clauses.append(log.channel_id == _query_int(request, "channel_id"))
    status = params.get("status")
    if status == "ok":
        clauses.append(log.status_code < 400)
    elif status == "error":
        clauses.append(log.status_code >= 400)
    elif status:
        clauses.append(log.status_code == _query_int(request, "status"))
    return clauses


def _log_json(row: Any, owner: int | None) -> dict[str, Any]:
    data = {name: getattr(row, name) for name in _LOG_COLUMNS}
    data["created_at"] = _iso(data["created_at"])
    if owner is not None:  # a user sees its own rows, without the operator's channel names
        data.pop("channel_name", None)
        data.pop("channel_id", None)
    return data


async def _logs(request: Request, owner: int | None) -> Response:
    limit, offset = _paging(request)
    clauses = _log_filters(request, owner)
    before = request.query_params.get("before_id")

    def work() -> dict[str, Any]:
        log = models.UsageLog
        query = select(log).where(*clauses)
        if before:
            query = query.where(log.id < int(before))
        with Session(_engine(request)) as session:
            rows = list(session.scalars(query.order_by(log.id.desc()).limit(limit).offset(offset)))
            total = session.scalar(select(func.count()).select_from(log).where(*clauses))
            return {"data": [_log_json(r, owner) for r in rows], "total": total,
                    "next_before_id": rows[-1].id if len(rows) == limit else None}

    if before is not None and not before.isdigit():
        raise ApiError(400, "invalid_query", "'before_id' must be an integer.")
    return _json(await run_db(request, work))


def _day(engine: Engine) -> Any:
    column = models.UsageLog.created_at
    if engine.dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


async def _aggregate(request: Request, owner: int | None) -> Response:
    """Per day (UTC) x model x user: requests, errors, tokens and cost."""
    clauses = _log_filters(request, owner)

    def work() -> list[dict[str, Any]]:
        log = models.UsageLog
        day = _day(_engine(request)).label("day")
        query = (
            select(
                day, log.model, log.user_id, func.count().label("requests"),
                func.sum(case((log.status_code >= 400, 1), else_=0)).label("errors"),
                func.sum(log.prompt_tokens).label("prompt_tokens"),
                func.sum(log.completion_tokens).label("completion_tokens"),
                func.sum(log.cost_micros).label("cost_micros"),
            )
            .where(*clauses)
            .group_by(day, log.model, log.user_id)
            .order_by(day, log.model, log.user_id)
        )
        with Session(_engine(request)) as session:
            return [
                {"day": str(r.day), "model": r.model, "user_id": r.user_id, "requests": int(r.requests),
                 "errors": int(r.errors or 0), "prompt_tokens": int(r.prompt_tokens or 0),
                 "completion_tokens": int(r.completion_tokens or 0), "cost_micros": int(r.cost_micros or 0)}
                for r in session.execute(query)
            ]

    return _json({"data": await run_db(request, work)})


async def _csv(request: Request, owner: int | None) -> Response:
    clauses = _log_filters(request, owner)
    columns = [c for c in _LOG_COLUMNS if owner is None or c not in ("channel_name", "channel_id")]

    def work() -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        log = models.UsageLog
        with Session(_engine(request)) as session:
            for row in session.scalars(select(log).where(*clauses).order_by(log.id).limit(1_000_000)):
                writer.writerow([_iso(v) if isinstance(v, datetime) else v for v in (getattr(row, c) for c in columns)])
        return out.getvalue()

    text = await run_db(request, work)
    return Response(text, media_type="text/csv", headers={"content-disposition": 'attachment; filename="usage.csv"'})


@endpoint()
async def logs(request: Request, _: Principal) -> Response:
    return await _logs(request, None)


@endpoint()
async def logs_aggregate(request: Request, _: Principal) -> Response:
    return await _aggregate(request, None)


@endpoint()
async def logs_csv(request: Request, _: Principal) -> Response:
    return await _csv(request, None)


# --- redemption codes -------------------------------------------------------------------------


def code_json(row: models.RedemptionCode) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "code_hint": row.code_hint, "amount_micros": row.amount_micros,
            "created_at": _iso(row.created_at), "expires_at": _iso(row.expires_at),
            "redeemed_by": row.redeemed_by, "redeemed_at": _iso(row.redeemed_at)}


@endpoint()
async def create_codes(request: Request, _: Principal) -> Response:
    """Create ``count`` codes worth ``amount_micros`` each; the codes are shown this once only."""
    data = await _body(request)
    _check_unknown(data, {"amount_micros", "count", "name", "expires_at"})
    amount = _int(data, "amount_micros", minimum=1)
    count = _int(data, "count", minimum=1) if "count" in data else 1
    if count > 1000:  # type: ignore[operator]
        raise ApiError(400, "invalid_field", "'count' must be at most 1000.")
    name = data.get("name") or ""
    expires_at = _datetime(data, "expires_at")
    codes = [accounts.new_code() for _ in range(count)]  # type: ignore[arg-type]

    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session, session.begin():
            rows = [models.RedemptionCode(name=str(name)[:128], code_hash=accounts.hash_code(c), code_hint=key_hint(c),
                                          amount_micros=amount, expires_at=expires_at) for c in codes]
            session.add_all(rows)
            session.flush()
            return [{**code_json(r), "code": c} for r, c in zip(rows, codes)]

    return _json({"data": await run_db(request, work)}, 201)


@endpoint()
async def list_codes(request: Request, _: Principal) -> Response:
    limit, offset = _paging(request)

    def work() -> list[dict[str, Any]]:
        with Session(_engine(request)) as session:
            rows = session.scalars(select(models.RedemptionCode).order_by(models.RedemptionCode.id)
                                   .limit(limit).offset(offset))
            return [code_json(r) for r in rows]

    return _json({"data": await run_db(request, work)})


@endpoint()
async def delete_code(request: Request, _: Principal) -> Response:
    code_id = _path_int(request)

    def work() -> None:
        with Session(_engine(request)) as session, session.begin():
            gone = session.execute(delete(models.RedemptionCode).where(
                models.RedemptionCode.id == code_id, models.RedemptionCode.redeemed_by.is_(None)))
            if gone.rowcount != 1:
                raise _not_found(f"Unredeemed code {code_id}")

    await run_db(request, work)
    return Response(status_code=204)


# --- auth -------------------------------------------------------------------------------------


@endpoint(admin=False, public=True)
async def login(request: Request, _: Principal) -> Response:
    data = await _body(request)
    name, password = data.get("name"), data.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise ApiError(400, "invalid_field", "Send 'name' and 'password'.")

    def find() -> tuple[int, str | None, bool] | None:
        with Session(_engine(request)) as session:
            row = session.execute(select(models.User.id, models.User.password_hash, models.User.enabled)
                                  .where(models.User.name == name)).first()
            return (row.id, row.password_hash, row.enabled) if row is not None else None

    found = await run_db(request, find)
    password_hash = found[1] if found is not None else None
    valid = await asyncio.get_running_loop().run_in_executor(None, accounts.verify_password, password_hash, password)
    if found is None or not valid or not found[2]:
        raise ApiError(401, "invalid_credentials", "Wrong name or password, or the account is disabled.")
    user_id = found[0]
    cookie = secrets.token_urlsafe(32)
    ttl = request.app.state.settings.session_ttl_s

    def store() -> dict[str, Any]:
        with Session(_engine(request)) as session, session.begin():
            session.add(models.WebSession(id=_sha256(cookie), user_id=user_id,
                                          expires_at=datetime.now(timezone.utc) + timedelta(seconds=ttl)))
            row = session.get(models.User, user_id)
            assert row is not None
            return user_json(row)

    user = await run_db(request, store)
    response = _json({"user": user})
    response.set_cookie(SESSION_COOKIE, cookie, max_age=ttl, path="/api", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response


@endpoint(admin=False, public=True)
async def logout(request: Request, _: Principal) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if not request.headers.get("x-requested-with"):
            raise ApiError(403, "csrf", "Requests with a session cookie that change data need an X-Requested-With header.")

        def work() -> None:
            with Session(_engine(request)) as session, session.begin():
                session.execute(delete(models.WebSession).where(models.WebSession.id == _sha256(cookie)))

        await run_db(request, work)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/api", httponly=True, samesite="lax")
    return response


# --- /api/me: a user's own data ---------------------------------------------------------------


def _me(principal: Principal) -> int:
    if principal.user_id is None:
        raise ApiError(404, "no_user", "The admin key is not a user; log in as one to use /api/me.")
    return principal.user_id


@endpoint(admin=False)
async def me(request: Request, principal: Principal) -> Response:
    user_id = _me(principal)

    def work() -> dict[str, Any]:
        with Session(_engine(request)) as session:
            row = session.get(models.User, user_id)
            if row is None:
                raise _not_found("Your user")
            return user_json(row)

    data = await run_db(request, work)
    # The live balance: what the database has minus charges settled here and not yet committed.
    record = request.app.state.relay.snapshot.users.get(user_id)
    if record is not None:
        data["available_micros"] = record.balance_micros - record.reserved_micros
    return _json(data)


@endpoint(admin=False)
async def my_tokens(request: Request, principal: Principal) -> Response:
    return await _list_tokens(request, _me(principal))


@endpoint(admin=False)
async def my_create_token(request: Request, principal: Principal) -> Response:
    return await _create_token(request, _me(principal))


@endpoint(admin=False)
async def my_get_token(request: Request, principal: Principal) -> Response:
    return await _token_op(request, _me(principal), "get")


@endpoint(admin=False)
async def my_update_token(request: Request, principal: Principal) -> Response:
    return await _token_op(request, _me(principal), "update")


@endpoint(admin=False)
async def my_delete_token(request: Request, principal: Principal) -> Response:
    return await _token_op(request, _me(principal), "delete")


@endpoint(admin=False)
async def my_logs(request: Request, principal: Principal) -> Response:
    return await _logs(request, _me(principal))


@endpoint(admin=False)
async def my_logs_aggregate(request: Request, principal: Principal) -> Response:
    return await _aggregate(request, _me(principal))


@endpoint(admin=False)
async def my_logs_csv(request: Request, principal: Principal) -> Response:
    return await _csv(request, _me(principal))


@endpoint(admin=False)
async def my_ledger(request: Request, principal: Principal) -> Response:
    return await _ledger(request, _me(principal))


@endpoint(admin=False)
async def my_redeem(request: Request, principal: Principal) -> Response:
    user_id = _me(principal)
    data = await _body(request)
    code = data.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "invalid_field", "Send the 'code' to redeem.")

    def work() -> int | None:
        with Session(_engine(request)) as session, session.begin():
            credited = accounts.redeem(session, user_id, code)
            if credited is not None:
                bump_records_version(session)
            return credited

    credited = await run_db(request, work)
    if credited is None:
        raise ApiError(400, "invalid_code", "This code does not exist, has expired or was already redeemed.")
    await reload_snapshot(request)
    return _json({"credited_micros": credited})


# --- the schema -------------------------------------------------------------------------------


async def openapi(request: Request) -> Response:
    return _json(admin_docs.schema(ROUTES))


async def docs(request: Request) -> Response:
    return HTMLResponse(admin_docs.html(ROUTES))


# (method, path, handler, tag)
ROUTES: list[tuple[str, str, Callable[[Request], Awaitable[Response]], str]] = [
    ("POST", "/api/auth/login", login, "auth"),
    ("POST", "/api/auth/logout", logout, "auth"),
    ("GET", "/api/users", list_users, "users"),
    ("POST", "/api/users", create_user, "users"),
    ("GET", "/api/users/{id}", get_user, "users"),
    ("PATCH", "/api/users/{id}", update_user, "users"),
    ("DELETE", "/api/users/{id}", delete_user, "users"),
    ("POST", "/api/users/{id}/topup", topup, "users"),
    ("POST", "/api/users/{id}/adjust", adjust, "users"),
    ("GET", "/api/users/{id}/ledger", user_ledger, "users"),
    ("GET", "/api/tokens", list_tokens, "tokens"),
    ("POST", "/api/tokens", create_token, "tokens"),
    ("GET", "/api/tokens/{id}", get_token, "tokens"),
    ("PATCH", "/api/tokens/{id}", update_token, "tokens"),
    ("DELETE", "/api/tokens/{id}", delete_token, "tokens"),
    ("GET", "/api/groups", list_groups, "groups"),
    ("POST", "/api/groups", create_group, "groups"),
    ("GET", "/api/groups/{name}", get_group, "groups"),
    ("PATCH", "/api/groups/{name}", update_group, "groups"),
    ("DELETE", "/api/groups/{name}", delete_group, "groups"),
    ("GET", "/api/channels", list_channels, "channels"),
    ("POST", "/api/channels", create_channel, "channels"),
    ("GET", "/api/channels/{id}", get_channel, "channels"),
    ("PATCH", "/api/channels/{id}", update_channel, "channels"),
    ("DELETE", "/api/channels/{id}", delete_channel, "channels"),
    ("POST", "/api/channels/{id}/test", test_channel, "channels"),
    ("POST", "/api/channels/{id}/enable", enable_channel, "channels"),
    ("POST", "/api/channels/{id}/disable", disable_channel, "channels"),
    ("GET", "/api/prices", list_prices, "prices"),
    ("GET", "/api/prices/{model}", get_price, "prices"),
    ("PUT", "/api/prices/{model}", put_price, "prices"),
    ("DELETE", "/api/prices/{model}", delete_price, "prices"),
    ("GET", "/api/logs", logs, "logs"),
    ("GET", "/api/logs/aggregate", logs_aggregate, "logs"),
    ("GET", "/api/logs/export.csv", logs_csv, "logs"),
    ("GET", "/api/redemptions", list_codes, "redemptions"),
    ("POST", "/api/redemptions", create_codes, "redemptions"),
    ("DELETE", "/api/redemptions/{id}", delete_code, "redemptions"),
    ("GET", "/api/me", me, "me"),
    ("GET", "/api/me/tokens", my_tokens, "me"),
    ("POST", "/api/me/tokens", my_create_token, "me"),
    ("GET", "/api/me/tokens/{id}", my_get_token, "me"),
    ("PATCH", "/api/me/tokens/{id}", my_update_token, "me"),
    ("DELETE", "/api/me/tokens/{id}", my_delete_token, "me"),
    ("GET", "/api/me/logs", my_logs, "me"),
    ("GET", "/api/me/logs/aggregate", my_logs_aggregate, "me"),
    ("GET", "/api/me/logs/export.csv", my_logs_csv, "me"),
    ("GET", "/api/me/ledger", my_ledger, "me"),
    ("POST", "/api/me/redeem", my_redeem, "me"),
]


def routes() -> list[BaseRoute]:
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for method, path, handler, _tag in ROUTES:
        by_path.setdefault(path, {})[method] = handler
    result: list[BaseRoute] = [Route("/openapi.json", openapi, methods=["GET"]), Route("/docs", docs, methods=["GET"])]
    for path, handlers in by_path.items():
        result.append(Route(path.replace("{model}", "{model:path}"), _dispatch(handlers), methods=list(handlers)))
    return result


def _dispatch(handlers: dict[str, Callable[[Request], Awaitable[Response]]]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        handler = handlers.get(request.method)
        if handler is None:
            return error_response(ApiError(405, "method_not_allowed", f"{request.method} is not allowed here."))
        return await handler(request)

    return dispatch
