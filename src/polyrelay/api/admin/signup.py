"""Self-service accounts, public under /api/auth/: sign up, verify the e-mail address, reset a forgotten password.

Nothing here tells whether an address has an account: a verification resend and a reset request
answer the same either way, and their mail goes out in the background (``account_mail``).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin import account_links
from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.account_mail import account_mail
from polyrelay.api.admin.common import ApiError, engine_of, json_response, read_body, reload_snapshot, run_db
from polyrelay.api.admin.fields import check_unknown, field_email, field_str, field_text
from polyrelay.api.admin.records import insert_record
from polyrelay.api.admin.throttle import FailureTable
from polyrelay.api.admin.users import password_field, user_json
from polyrelay.api.common import client_ip
from polyrelay.api.signup_policy import refusal
from polyrelay.billing import accounts, invitations
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version

_BODY_BYTES = 64 * 1024
_HOUR_S = 3600.0
MAIL_REQUESTS_PER_IP_PER_HOUR = 20  # verification resends and reset requests from one address
_INVITE_CODE_LENGTH = 32  # users.invite_code


def _per_ip(request: Request) -> FailureTable:
    """Sign-ups and mail requests per client address in the last hour, counted in this process."""
    state = request.app.state
    if not hasattr(state, "signup_counts"):
        state.signup_counts = FailureTable(_HOUR_S, state.settings.sign_in_throttle_entries, time.time)
    return state.signup_counts


def _admit(request: Request, kind: str, limit: int) -> None:
    wait = _per_ip(request).admit([(f"{kind}:{client_ip(request)}", limit)], time.time())
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise ApiError(429, "too_many_requests", f"Too many requests from your address; try again in {seconds} s.")


def _email(data: dict[str, Any]) -> str:
    email = field_email(data, "email")
    if email is None:
        raise ApiError(400, "invalid_field", "'email' must be an e-mail address of at most 254 characters.")
    return email


def _mail_ready(request: Request) -> None:
    if not account_mail(request).configured:
        raise ApiError(403, "mail_unavailable", "This server sends no mail; ask an administrator.")


def _inviter_of(session: Session, code: str) -> int | None:
    """The enabled user whose invite code this is."""
    return session.scalar(select(models.User.id).where(models.User.invite_code == code, models.User.enabled.is_(True)))


@endpoint(admin=False, public=True)
async def signup_options(request: Request, _: Principal) -> Response:
    """What the sign-up page needs to know: whether it is open, to whom, what follows, and whether ``invite`` is valid."""
    settings = request.app.state.settings
    invite = request.query_params.get("invite")
    if invite is not None and len(invite) > _INVITE_CODE_LENGTH:
        raise ApiError(400, "invalid_query", f"'invite' must be at most {_INVITE_CODE_LENGTH} characters.")
    options: dict[str, Any] = {
        "mode": settings.signup.mode, "require_email_verification": settings.signup.require_email_verification,
        "allowed_domains": settings.signup.allowed_domains, "password_reset": account_mail(request).configured,
    }
    if invite:
        def check() -> bool:
            with Session(engine_of(request)) as session:
                return _inviter_of(session, invite) is not None

        options["invite_valid"] = await run_db(request, check)
    return json_response(options)


@endpoint(admin=False, public=True)
async def signup(request: Request, _: Principal) -> Response:
    """Create an account (``name``, ``email``, ``password``, optional ``invite_code``) and mail its verification link."""
    settings = request.app.state.settings
    rules = settings.signup
    if rules.mode == "closed":
        raise ApiError(403, "signup_closed", "Sign-up is closed; ask an administrator for an account.")
    data = await read_body(request, limit=_BODY_BYTES)
    check_unknown(data, {"name", "email", "password", "invite_code"})
    name = field_str(data, "name")
    email = _email(data)
    password = password_field(data, "password")
    invite_code = field_text(data, "invite_code", max_len=_INVITE_CODE_LENGTH).strip()
    if rules.mode == "invite-only" and not invite_code:
        raise ApiError(403, "invite_required", "Sign-up needs an invitation: open the invite link you were given.")
    reason = refusal(rules, email)
    if reason is not None:
        raise ApiError(400, "email_not_allowed", reason)
    _admit(request, "signup", rules.per_ip_per_hour)
    password_hash = await asyncio.get_running_loop().run_in_executor(None, accounts.hash_password, password)
    mailer = account_mail(request)
    issued: list[str] = []

    def build(session: Session) -> models.User:
        inviter = None
        if invite_code:
            inviter = _inviter_of(session, invite_code)
            if inviter is None:
                raise ApiError(400, "invalid_invite", "This invite code does not exist.")
        return models.User(name=name, email=email, email_verified=False, password_hash=password_hash, role="user",
                           group=rules.default_group, balance_micros=0, unlimited=False, enabled=True,
                           signed_up_at=datetime.now(timezone.utc), invited_by=inviter)

    def settle(session: Session, row: models.User) -> None:
        starting = round(rules.starting_balance_usd * 1_000_000)
        if starting:
            accounts.post(session, row.id, "signup", starting, f"signup-{row.id}", "starting balance")
            session.refresh(row)
        if mailer.configured:
            issued.append(account_links.issue(session, row.id, email, "verify", rules.verification_ttl_s))

    user = await insert_record(request, build, f"A user named '{name}' or with e-mail '{email}'", user_json, settle)
    if issued:
        mailer.verification(email, name, issued[0])
    return json_response({"user": user, "verification_sent": bool(issued)}, 201)


@endpoint(admin=False, public=True)
async def verify_email(request: Request, _: Principal) -> Response:
    """Prove the address with the mailed ``token``; an inviter's fixed reward is due from here on."""
    data = await read_body(request, limit=_BODY_BYTES)
    check_unknown(data, {"token"})
    token = field_str(data, "token", max_len=512)
    rules = request.app.state.settings.invitations

    def work() -> bool:
        with Session(engine_of(request)) as session, session.begin():
            redeemed = account_links.redeem(session, token, "verify")
            if redeemed is None:
                return False
            _mark_verified(session, redeemed, rules)
            bump_records_version(session, changes.user(redeemed.user_id))
            return True

    if not await run_db(request, work):
        raise _bad_token()
    await reload_snapshot(request)
    return json_response({"verified": True})


def _mark_verified(session: Session, redeemed: account_links.Redeemed, rules: invitations.InvitationSettings) -> None:
    """The address the link went to is the user's: verified, and the inviter's fixed reward is due."""
    session.execute(update(models.User).where(models.User.id == redeemed.user_id, models.User.email == redeemed.email)
                    .values(email_verified=True).execution_options(synchronize_session=False))
    invitations.reward_verified_invitee(session, rules, redeemed.user_id)


def _bad_token() -> ApiError:
    return ApiError(400, "invalid_token", "This link is not valid: it was used already, has expired or was replaced "
                                          "by a newer one.")


async def _mail_request(request: Request, purpose: str) -> Response:
    """Mail a fresh ``purpose`` link to the account at ``email``, if there is one that should get it; 200 either way."""
    _mail_ready(request)
    data = await read_body(request, limit=_BODY_BYTES)
    check_unknown(data, {"email"})
    email = _email(data)
    _admit(request, "mail", MAIL_REQUESTS_PER_IP_PER_HOUR)
    rules = request.app.state.settings.signup
    ttl = rules.verification_ttl_s if purpose == "verify" else rules.reset_ttl_s

    def work() -> tuple[str, str] | None:
        with Session(engine_of(request)) as session, session.begin():
            user = session.execute(select(models.User.id, models.User.name, models.User.email_verified)
                                   .where(models.User.email == email, models.User.enabled.is_(True))).first()
            if user is None or (purpose == "verify" and user.email_verified) \
                    or account_links.sent_within(session, user.id, purpose, rules.resend_interval_s):
                return None
            return user.name, account_links.issue(session, user.id, email, purpose, ttl)

    found = await run_db(request, work)
    if found is not None:
        mailer = account_mail(request)
        (mailer.verification if purpose == "verify" else mailer.reset)(email, *found)
    return json_response({"accepted": True})


@endpoint(admin=False, public=True)
async def resend_verification(request: Request, _: Principal) -> Response:
    """Mail a new verification link to ``email`` if it has an unverified account (at most once a resend interval)."""
    return await _mail_request(request, "verify")


@endpoint(admin=False, public=True)
async def forgot_password(request: Request, _: Principal) -> Response:
    """Mail a password-reset link to ``email`` if it has an account; the answer is the same when it has none."""
    return await _mail_request(request, "reset")


@endpoint(admin=False, public=True)
async def reset_password(request: Request, _: Principal) -> Response:
    """Set a new ``password`` with the mailed ``token``; every console session of the user ends."""
    data = await read_body(request, limit=_BODY_BYTES)
    check_unknown(data, {"token", "password"})
    token = field_str(data, "token", max_len=512)
    password = password_field(data, "password")
    password_hash = await asyncio.get_running_loop().run_in_executor(None, accounts.hash_password, password)
    rules = request.app.state.settings.invitations

    def work() -> bool:
        with Session(engine_of(request)) as session, session.begin():
            redeemed = account_links.redeem(session, token, "reset")
            if redeemed is None:
                return False
            session.execute(update(models.User).where(models.User.id == redeemed.user_id)
                            .values(password_hash=password_hash).execution_options(synchronize_session=False))
            _mark_verified(session, redeemed, rules)  # the link reached the address: it is the user's
            session.execute(delete(models.WebSession).where(models.WebSession.user_id == redeemed.user_id))
            bump_records_version(session, changes.user(redeemed.user_id))
            return True

    if not await run_db(request, work):
        raise _bad_token()
    await reload_snapshot(request)
    return Response(status_code=204)
