"""``/api/me/identities``: the single sign-on accounts linked to you, and removing one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, iso, json_response, not_found, path_int, run_db
from polyrelay.api.admin.me import _me  # the one rule for /api/me: the admin key is nobody
from polyrelay.store import models


def identity_json(row: models.UserIdentity, labels: dict[str, str]) -> dict[str, Any]:
    return {"id": row.id, "provider": row.provider, "label": labels.get(row.provider, row.provider),
            "email": row.email, "created_at": iso(row.created_at)}


@endpoint(admin=False)
async def my_identities(request: Request, principal: Principal) -> Response:
    user_id = _me(principal)
    labels = {provider.name: provider.button for provider in request.app.state.settings.sso.providers}

    def work() -> list[dict[str, Any]]:
        with Session(engine_of(request)) as session:
            rows = session.scalars(select(models.UserIdentity).where(models.UserIdentity.user_id == user_id)
                                   .order_by(models.UserIdentity.id)).all()
            return [identity_json(row, labels) for row in rows]

    return json_response({"data": await run_db(request, work)})


@endpoint(admin=False)
async def my_delete_identity(request: Request, principal: Principal) -> Response:
    """Unlink one of your identities; not the last way in of a user without a password."""
    user_id = _me(principal)
    identity_id = path_int(request)

    def work() -> None:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.UserIdentity, identity_id)
            if row is None or row.user_id != user_id:
                raise not_found(f"Identity {identity_id}")
            user = session.get(models.User, user_id)
            others = session.scalar(select(func.count()).select_from(models.UserIdentity).where(
                models.UserIdentity.user_id == user_id, models.UserIdentity.id != identity_id))
            if user is not None and user.password_hash is None and not others:
                raise ApiError(409, "last_sign_in", "This is your only way to sign in: set a password first.")
            session.delete(row)

    await run_db(request, work)
    return Response(status_code=204)
