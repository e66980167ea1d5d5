"""Console login and logout: the session cookie."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, SESSION_COOKIE, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, read_body, run_db, sha256_hex
from polyrelay.api.admin.users import user_json
from polyrelay.billing import accounts
from polyrelay.store import models


@endpoint(admin=False, public=True)
async def login(request: Request, _: Principal) -> Response:
    data = await read_body(request)
    name, password = data.get("name"), data.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise ApiError(400, "invalid_field", "Send 'name' and 'password'.")

    def find() -> tuple[int, str | None, bool] | None:
        with Session(engine_of(request)) as session:
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
        with Session(engine_of(request)) as session, session.begin():
            session.add(models.WebSession(id=sha256_hex(cookie), user_id=user_id,
                                          expires_at=datetime.now(timezone.utc) + timedelta(seconds=ttl)))
            row = session.get(models.User, user_id)
            assert row is not None
            return user_json(row)

    user = await run_db(request, store)
    response = json_response({"user": user})
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
            with Session(engine_of(request)) as session, session.begin():
                session.execute(delete(models.WebSession).where(models.WebSession.id == sha256_hex(cookie)))

        await run_db(request, work)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/api", httponly=True, samesite="lax")
    return response
