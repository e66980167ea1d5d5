"""Who is calling (admin key or session cookie, with the CSRF rule) and the endpoint decorator that checks it."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin import second_factor
from polyrelay.api.admin.common import ApiError, aware, check_url, engine_of, error_response, run_db, sha256_hex
from polyrelay.store import models


SESSION_COOKIE = "polyrelay_session"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int | None  # None: the admin key
    name: str
    admin: bool
    via: str  # "key" | "session"
    # An administrator without a second factor while security.require_2fa_for_admins is on: may only enrol one.
    enrol_only: bool = False


def _principal_from_session(engine: Engine, session_hash: str, require_2fa_for_admins: bool) -> Principal | None:
    with Session(engine) as session:
        row = session.execute(
            select(models.User.id, models.User.name, models.User.role, models.User.enabled, models.WebSession.expires_at)
            .join(models.WebSession, models.WebSession.user_id == models.User.id)
            .where(models.WebSession.id == session_hash)
        ).first()
        if row is None or not row.enabled or aware(row.expires_at) <= datetime.now(timezone.utc):
            return None
        admin = row.role == "admin"
        # Checked on every request, not at sign-in: it also holds sessions opened before the setting or a reset.
        enrol_only = admin and require_2fa_for_admins and not second_factor.has_second_factor(session, row.id)
    return Principal(row.id, row.name, admin, "session", enrol_only)


def is_admin_key(request: Request, admin_key: str | None) -> bool:
    """Whether the request presents ``admin_key`` as ``Authorization: Bearer`` (compared in constant time)."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return bool(scheme.lower() == "bearer" and admin_key
                and hmac.compare_digest(presented.strip().encode(), admin_key.encode()))


async def authenticate(request: Request) -> Principal:
    """The admin key or a live session (with the CSRF rule for writes); ApiError otherwise."""
    admin_key = request.app.state.settings.admin_key
    if request.headers.get("authorization", ""):
        if is_admin_key(request, admin_key):
            return Principal(None, "admin", True, "key")
        raise ApiError(401, "invalid_credentials", "The admin key is not valid.")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = await run_db(request, _principal_from_session, engine_of(request), sha256_hex(cookie),
                                 request.app.state.settings.security.require_2fa_for_admins)
        if principal is not None:
            if request.method not in _SAFE_METHODS and not request.headers.get("x-requested-with"):
                raise ApiError(403, "csrf", "Requests with a session cookie that change data need an X-Requested-With header.")
            return principal
    raise ApiError(401, "unauthenticated", "Send the admin key as 'Authorization: Bearer <key>', or log in.")


Handler = Callable[[Request, Principal], Awaitable[Response]]


def endpoint(*, admin: bool = True, public: bool = False,
             enrolment: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """``enrolment``: open to a session that may only enrol a second factor (``Principal.enrol_only``)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                check_url(request)
                principal = Principal(None, "", False, "none") if public else await authenticate(request)
                if principal.enrol_only and not enrolment:
                    raise ApiError(403, "second_factor_required",
                                   "Administrators must set up two-factor sign-in first (your account page).")
                if admin and not principal.admin:
                    raise ApiError(403, "forbidden", "This needs an administrator.")
                return await handler(request, principal)
            except ApiError as error:
                return error_response(error)

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap
