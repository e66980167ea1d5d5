"""A user's invitations (``/api/me/invite``) and, for administrators, the sign-up and invitation settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.account_mail import account_mail
from polyrelay.api.admin.common import ApiError, engine_of, json_response, reload_snapshot, run_db
from polyrelay.api.admin.users import user_json
from polyrelay.billing import invitations
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version

_CODE_ATTEMPTS = 5  # a fresh code colliding with another user's is rare; a few tries make it negligible


def _inviter(principal: Principal) -> int:
    if principal.user_id is None:
        raise ApiError(404, "no_user", "The admin key invites no one; log in as a user to invite.")
    return principal.user_id


def _invitations_open(request: Request) -> bool:
    settings = request.app.state.settings
    return settings.invitations.enabled and settings.signup.mode != "closed"


def _code_of(session: Session, user_id: int) -> str:
    """The user's invite code, made on first use."""
    for _ in range(_CODE_ATTEMPTS):
        code = session.scalar(select(models.User.invite_code).where(models.User.id == user_id))
        if code is not None:
            return code
        try:
            with session.begin_nested():
                session.execute(update(models.User).where(models.User.id == user_id, models.User.invite_code.is_(None))
                                .values(invite_code=invitations.new_invite_code())
                                .execution_options(synchronize_session=False))
        except IntegrityError:
            continue
    raise ApiError(503, "try_again", "No invite code could be made just now; try again.")


@endpoint(admin=False)
async def my_invite(request: Request, principal: Principal) -> Response:
    """Your invite code and link (while sign-up is open), what inviting earns, and your affiliate balance."""
    user_id = _inviter(principal)
    is_open = _invitations_open(request)
    rules = request.app.state.settings.invitations

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            code = _code_of(session, user_id) if is_open else None
            row = session.execute(select(models.User.affiliate_micros, models.User.rewarded_invites)
                                  .where(models.User.id == user_id)).one()
            invitees = session.scalar(select(func.count()).select_from(models.User)
                                      .where(models.User.invited_by == user_id))
            return {"code": code, "affiliate_micros": row.affiliate_micros, "invitees": invitees,
                    "rewarded_invites": row.rewarded_invites}

    data = await run_db(request, work)
    base = request.app.state.settings.signup.public_url or str(request.base_url).rstrip("/")
    data.update({
        "enabled": is_open, "link": f"{base}/#/signup?invite={data['code']}" if data["code"] else None,
        "reward_fixed_micros": round(rules.reward_fixed_usd * 1_000_000),
        "reward_share_of_first_topup": rules.reward_share_of_first_topup,
        "max_rewarded_invites": rules.max_rewarded_invites_per_user,
    })
    return json_response(data)


@endpoint(admin=False)
async def my_invite_move(request: Request, principal: Principal) -> Response:
    """Move your whole affiliate balance into your balance (a ledger entry of kind ``affiliate``)."""
    user_id = _inviter(principal)

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            moved = invitations.move_to_balance(session, user_id)
            if not moved:
                raise ApiError(409, "nothing_to_move", "Your affiliate balance is 0.")
            bump_records_version(session, changes.user(user_id))
            row = session.get(models.User, user_id)
            assert row is not None
            return {"moved_micros": moved, "user": user_json(row)}

    result = await run_db(request, work)
    await reload_snapshot(request)
    return json_response(result)


@endpoint()
async def account_settings(request: Request, _: Principal) -> Response:
    """The ``signup:`` and ``invitations:`` settings in force, and whether account mail can be sent (no secrets)."""
    settings = request.app.state.settings
    server = settings.mail_server
    return json_response({
        "signup": settings.signup.model_dump(mode="json"),
        "invitations": settings.invitations.model_dump(mode="json"),
        "mail": {"configured": account_mail(request).configured, "host": server.host if server else None,
                 "from": server.sender if server else None},
    })
