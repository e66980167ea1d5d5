"""Two-factor sign-in over HTTP: enrolling TOTP (/api/me/2fa), the second step of sign-in, an admin's reset.

Wrong codes count against the sign-in throttle under the user's name, like wrong passwords, so a
guesser holding a password (or a session) gets the same few tries. The TOTP secret is shown once,
when enrolment starts; afterwards no answer carries it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyotp
import segno
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin import passkeys, second_factor
from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.auth import admit, signed_in, succeeded
from polyrelay.api.admin.common import ApiError, engine_of, json_response, not_found, path_int, read_body, run_db
from polyrelay.api.admin.fields import check_unknown, field_str
from polyrelay.store import models

_BODY_BYTES = 64 * 1024
_MAX_CODE = 32
_WRONG = ApiError(401, "invalid_code", "The code is wrong, expired or was already used.")
_NO_TICKET = ApiError(401, "invalid_ticket", "This sign-in expired or was finished; enter your password again.")

Check = Callable[[Session, int], bool]


def _proof(data: dict[str, Any], kinds: tuple[str, ...]) -> tuple[str, Any]:
    """Which one of ``kinds`` (code, recovery_code, passkey) the body sends, and its value."""
    given = [kind for kind in kinds if data.get(kind) is not None]
    if len(given) != 1:
        raise ApiError(400, "invalid_field", f"Send exactly one of {', '.join(repr(k) for k in kinds)}.")
    kind, value = given[0], data[given[0]]
    if kind != "passkey" and (not isinstance(value, str) or len(value) > _MAX_CODE):
        raise ApiError(400, "invalid_field", f"'{kind}' must be a string of at most {_MAX_CODE} characters.")
    return kind, value


def _code_check(kind: str, value: str) -> Check:
    if kind == "code":
        return lambda session, user_id: second_factor.accept_totp(session, user_id, value)
    return lambda session, user_id: second_factor.use_recovery_code(session, user_id, value)


async def _code_or_recovery_code(request: Request) -> Check:
    """The check of the TOTP code or the recovery code the body proves the user with."""
    data = await read_body(request)
    check_unknown(data, {"code", "recovery_code"})
    return _code_check(*_proof(data, ("code", "recovery_code")))


async def _throttled(request: Request, name: str, work: Callable[[], bool]) -> Response | None:
    """Run ``work`` (a check on the DB thread) as one sign-in attempt of ``name``: a 429 when throttled, 401 when
    it fails, None when it passed."""
    attempt = await admit(request, name)
    if isinstance(attempt, Response):
        return attempt
    if not await run_db(request, work):
        raise _WRONG
    await succeeded(request, attempt)
    return None


@endpoint(admin=False, public=True)
async def sign_in_second_factor(request: Request, _: Principal) -> Response:
    """The second step of sign-in: the ticket from the password step and a TOTP code, a recovery code or a
    passkey's answer; a session cookie when right."""
    data = await read_body(request, limit=_BODY_BYTES)
    check_unknown(data, {"ticket", "code", "recovery_code", "passkey"})
    ticket = field_str(data, "ticket", max_len=128)
    kind, value = _proof(data, ("code", "recovery_code", "passkey"))
    rp = passkeys.relying_party(request) if kind == "passkey" else None

    def holder() -> tuple[int, str] | None:
        with Session(engine_of(request)) as session:
            pending = second_factor.find_challenge(session, second_factor.SIGN_IN, ticket)
            name = session.scalar(select(models.User.name).where(models.User.id == pending.user_id)) \
                if pending is not None else None
            return (pending.user_id, name) if pending is not None and name is not None else None

    found = await run_db(request, holder)
    if found is None:
        raise _NO_TICKET

    def work() -> bool:
        with Session(engine_of(request)) as session, session.begin():
            pending = second_factor.find_challenge(session, second_factor.SIGN_IN, ticket)
            if pending is None:
                raise _NO_TICKET
            if kind == "passkey":
                assert rp is not None
                passed = passkeys.verify_sign_in(session, rp, pending, value)
            else:
                passed = _code_check(kind, value)(session, pending.user_id)
            if passed and not second_factor.consume_challenge(session, second_factor.SIGN_IN, ticket):
                raise _NO_TICKET  # another request finished this sign-in first; undoes what the check spent
            return passed

    refused = await _throttled(request, found[1], work)
    return refused or await signed_in(request, found[0])


@endpoint(admin=False, public=True)
async def sign_in_passkey_options(request: Request, _: Principal) -> Response:
    """Options for the browser to sign this ticket's challenge with one of the user's passkeys."""
    data = await read_body(request, limit=_BODY_BYTES)
    check_unknown(data, {"ticket"})
    ticket = field_str(data, "ticket", max_len=128)
    rp = passkeys.relying_party(request)

    def work() -> dict[str, Any] | None:
        with Session(engine_of(request)) as session, session.begin():
            return passkeys.sign_in_options(session, rp, ticket)

    options = await run_db(request, work)
    if options is None:
        raise _NO_TICKET
    return json_response(options)


@endpoint(admin=False, enrolment=True)
async def status(request: Request, principal: Principal) -> Response:
    """Your second factors: whether TOTP is on, recovery codes left, passkeys; never a secret."""
    user_id = passkeys.own_user_id(principal)

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session:
            totp = session.get(models.UserTotp, user_id)
            return {
                "totp": totp is not None and totp.active,
                "recovery_codes_left": second_factor.recovery_codes_left(session, user_id),
                "passkeys": [passkeys.passkey_json(row) for row in passkeys.passkeys_of(session, user_id)],
                "passkeys_available": bool(request.app.state.settings.public_url),
                "enrolment_required": principal.enrol_only,
            }

    return json_response(await run_db(request, work))


@endpoint(admin=False, enrolment=True)
async def begin_totp(request: Request, principal: Principal) -> Response:
    """A new TOTP secret, its otpauth:// URI and that URI as a QR code (SVG data URI); shown this once.
    It counts only once a code from it is confirmed."""
    user_id = passkeys.own_user_id(principal)
    secret = pyotp.random_base32()

    def work() -> None:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.UserTotp, user_id)
            if row is not None and row.active:
                raise ApiError(409, "totp_active", "TOTP is already on; turn it off first to enrol a new one.")
            if row is None:
                session.add(models.UserTotp(user_id=user_id, secret=secret, active=False, last_step=0))
            else:
                row.secret, row.last_step = secret, 0

    await run_db(request, work)
    uri = second_factor.provisioning_uri(secret, principal.name)
    return json_response({"secret": secret, "otpauth_uri": uri,
                          "qr_data_uri": segno.make(uri, error="m").svg_data_uri(scale=5, border=2)}, 201)


@endpoint(admin=False, enrolment=True)
async def confirm_totp(request: Request, principal: Principal) -> Response:
    """Turn TOTP on with a code from the new secret; the first second factor also brings 10 recovery codes,
    shown this once."""
    user_id = passkeys.own_user_id(principal)
    data = await read_body(request)
    check_unknown(data, {"code"})
    _, code = _proof(data, ("code",))
    codes: list[str] = []

    def work() -> bool:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.UserTotp, user_id)
            if row is None or row.active:
                raise ApiError(409, "no_pending_totp", "Start TOTP enrolment first.")
            first = not second_factor.has_second_factor(session, user_id)
            if not second_factor.accept_totp(session, user_id, code, activating=True):
                return False
            if first:
                codes.extend(second_factor.new_recovery_codes(session, user_id))
            return True

    refused = await _throttled(request, principal.name, work)
    return refused or json_response({"totp": True, "recovery_codes": codes})


@endpoint(admin=False, enrolment=True)
async def disable_totp(request: Request, principal: Principal) -> Response:
    """Turn TOTP off, proven with a current code or a recovery code."""
    user_id = passkeys.own_user_id(principal)
    check = await _code_or_recovery_code(request)

    def work() -> bool:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.UserTotp, user_id)
            if row is None or not row.active:
                raise ApiError(409, "totp_inactive", "TOTP is not on.")
            if not check(session, user_id):
                return False
            session.delete(row)
            session.flush()
            second_factor.drop_recovery_codes_unless_protected(session, user_id)
            return True

    refused = await _throttled(request, principal.name, work)
    return refused or Response(status_code=204)


@endpoint(admin=False, enrolment=True)
async def renew_recovery_codes(request: Request, principal: Principal) -> Response:
    """Replace your recovery codes with 10 new ones (shown this once), proven with a code or a recovery code."""
    user_id = passkeys.own_user_id(principal)
    check = await _code_or_recovery_code(request)
    codes: list[str] = []

    def work() -> bool:
        with Session(engine_of(request)) as session, session.begin():
            if not second_factor.has_second_factor(session, user_id):
                raise ApiError(409, "no_second_factor", "Recovery codes come with a second factor; set one up first.")
            if not check(session, user_id):
                return False
            codes.extend(second_factor.new_recovery_codes(session, user_id))
            return True

    refused = await _throttled(request, principal.name, work)
    return refused or json_response({"recovery_codes": codes})


@endpoint()
async def reset_user_2fa(request: Request, _: Principal) -> Response:
    """Remove a user's TOTP, recovery codes and passkeys (a lost phone); they sign in with the password alone
    (or, when administrators must use 2FA, enrol again at once)."""
    user_id = path_int(request)

    def work() -> None:
        with Session(engine_of(request)) as session, session.begin():
            if session.get(models.User, user_id) is None:
                raise not_found(f"User {user_id}")
            second_factor.remove_all(session, user_id)

    await run_db(request, work)
    return Response(status_code=204)
