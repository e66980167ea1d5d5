"""Console login and logout: the session cookie."""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, SESSION_COOKIE, endpoint
from polyrelay.api.admin.common import (
    ApiError, engine_of, error_response, json_response, read_body, run_db, sha256_hex,
)
from polyrelay.api.admin import second_factor
from polyrelay.api.admin.throttle import Attempt, LoginThrottle
from polyrelay.api.admin.users import user_json
from polyrelay.api.common import client_ip
from polyrelay.billing import accounts
from polyrelay.store import models


_LOGIN_BODY_BYTES = 64 * 1024


def _throttle(request: Request) -> LoginThrottle:
    state = request.app.state
    if not hasattr(state, "login_throttle"):
        settings = state.settings
        state.login_throttle = LoginThrottle(
            max_entries=settings.sign_in_throttle_entries, redis_url=settings.redis_url, namespace=state.cluster_id,
        )
    return state.login_throttle


@functools.cache
def _dummy_hash() -> str:
    """A hash made like the real ones, verified for names without one: an unknown name costs what a known one does."""
    return accounts.hash_password(secrets.token_urlsafe(16))


def _password_matches(password_hash: str | None, password: str) -> bool:
    dummy = _dummy_hash()  # made before any verification, so the first sign-in of either kind pays for it
    if password_hash is None:
        accounts.verify_password(dummy, password)
        return False
    return accounts.verify_password(password_hash, password)


def secure_cookie(request: Request) -> bool:
    setting = request.app.state.settings.cookie_secure
    return request.url.scheme == "https" if setting == "auto" else setting


async def admit(request: Request, name: str) -> Attempt | Response:
    """The attempt, counted as failed until it proves right; or the 429 to send once a limit is reached."""
    attempt = await _throttle(request).admit(name, client_ip(request))
    if attempt.retry_after is None:
        return attempt
    seconds = max(1, math.ceil(attempt.retry_after))
    response = error_response(ApiError(429, "too_many_attempts", f"Too many failed sign-ins; try again in {seconds} s."))
    response.headers["retry-after"] = str(seconds)
    return response


async def succeeded(request: Request, attempt: Attempt) -> None:
    await _throttle(request).succeeded(attempt)


@endpoint(admin=False, public=True)
async def login(request: Request, _: Principal) -> Response:
    """A password; with a second factor on, the answer is a ticket for ``/api/auth/second-factor``, not a session."""
    data = await read_body(request, limit=_LOGIN_BODY_BYTES)
    name, password = data.get("name"), data.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise ApiError(400, "invalid_field", "Send 'name' and 'password'.")
    attempt = await admit(request, name)
    if isinstance(attempt, Response):
        return attempt

    def find() -> Any:
        with Session(engine_of(request)) as session:
            return session.execute(select(models.User.id, models.User.password_hash, models.User.enabled,
                                          models.User.signed_up_at, models.User.email_verified)
                                   .where(models.User.name == name)).first()

    found = await run_db(request, find)
    password_hash = found.password_hash if found is not None else None
    valid = await asyncio.get_running_loop().run_in_executor(None, _password_matches, password_hash, password)
    if found is None or not valid or not found.enabled:
        raise ApiError(401, "invalid_credentials", "Wrong name or password, or the account is disabled.")
    await succeeded(request, attempt)
    # Told only to whoever knows the password: a self-signed-up user proves the address before coming in.
    if found.signed_up_at is not None and not found.email_verified \
            and request.app.state.settings.signup.require_email_verification:
        raise ApiError(403, "email_unverified", "Confirm your e-mail address first: open the link we mailed to you, "
                                                "or ask for a new one.")
    user_id = found.id

    def ticket_if_protected() -> dict[str, Any] | None:
        with Session(engine_of(request)) as session, session.begin():
            factors = second_factor.factors_of(session, user_id)
            if not factors:
                return None
            return {"ticket": second_factor.open_ticket(session, user_id), "methods": [*factors, "recovery_code"],
                    "expires_in_s": second_factor.TICKET_TTL_S}

    ticket = await run_db(request, ticket_if_protected)
    if ticket is not None:
        return json_response({"second_factor": ticket})
    return await signed_in(request, user_id)


async def signed_in(request: Request, user_id: int) -> Response:
    """The answer to a completed sign-in: the user, with a new session's cookie."""
    cookie, user = await open_session(request, user_id)
    response = json_response({"user": user})
    set_session_cookie(request, response, cookie)
    return response


async def open_session(request: Request, user_id: int) -> tuple[str, dict[str, Any]]:
    """A new console session for ``user_id`` (password, second factor or single sign-on): the cookie value
    and the user."""
    cookie = secrets.token_urlsafe(32)
    ttl = request.app.state.settings.session_ttl_s

    def store() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            session.add(models.WebSession(id=sha256_hex(cookie), user_id=user_id,
                                          expires_at=datetime.now(timezone.utc) + timedelta(seconds=ttl)))
            row = session.get(models.User, user_id)
            assert row is not None
            return user_json(row)

    return cookie, await run_db(request, store)


def set_session_cookie(request: Request, response: Response, cookie: str) -> None:
    response.set_cookie(SESSION_COOKIE, cookie, max_age=request.app.state.settings.session_ttl_s, path="/api",
                        httponly=True, samesite="lax", secure=secure_cookie(request))


@endpoint(admin=False, public=True)
async def logout(request: Request, _: Principal) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if not request.headers.get("x-requested-with"):
            raise ApiError(403, "csrf", "Requests with a session cookie that change data need an X-Requested-With header.")

        def work() -> None:
            with Session(engine_of(request)) as session, session.begin():
                session.execute(delete(models.WebSession).where(models.WebSession.id == sha256_hex(cookie)))

        await run_db(request, work)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/api", httponly=True, samesite="lax",
                           secure=secure_cookie(request))
    return response
