"""Passkeys (WebAuthn, via py_webauthn) as a second factor: register, list, remove, and answer a sign-in ticket.

A passkey stands where a TOTP code would, after the password; it does not replace the password
(one sign-in path to throttle and reason about). The relying party is ``public_url``: the
browser binds a passkey to its host, so without that setting passkeys are off. Every challenge
is single-use and expires with its row (``sign_in_challenges``); the authenticator's signature
counter must grow, so a cloned authenticator shows itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from webauthn import (
    generate_authentication_options, generate_registration_options, options_to_json,
    verify_authentication_response, verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes, bytes_to_base64url, parse_authentication_credential_json, parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria, PublicKeyCredentialDescriptor, ResidentKeyRequirement,
)

from polyrelay.api.admin import second_factor
from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, iso, json_response, path_int, read_body, run_db
from polyrelay.api.admin.fields import check_unknown, field_str
from polyrelay.store import models

_BODY_BYTES = 64 * 1024  # a credential is a few KB: attestation object, client data, signature
_MAX_CREDENTIAL_ID = 1400  # base64url of WebAuthn's 1023 bytes at most; the column's length
_BAD_ANSWER = (WebAuthnException, ValueError, TypeError, KeyError)


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str  # the host passkeys are bound to
    origin: str  # where the console runs, as the browser reports it in the client data


def relying_party(request: Request) -> RelyingParty:
    public_url = request.app.state.settings.public_url
    if not public_url:
        raise ApiError(409, "passkeys_unavailable", "Passkeys need the gateway's public_url setting.")
    parts = urlsplit(public_url)
    return RelyingParty(parts.hostname or "", f"{parts.scheme}://{parts.netloc}")


def own_user_id(principal: Principal) -> int:
    if principal.user_id is None:
        raise ApiError(404, "no_user", "The admin key has no second factor; log in as a user to manage yours.")
    return principal.user_id


def passkey_json(row: models.UserPasskey) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": iso(row.created_at), "last_used_at": iso(row.last_used_at)}


def passkeys_of(session: Session, user_id: int) -> list[models.UserPasskey]:
    return list(session.scalars(select(models.UserPasskey).where(models.UserPasskey.user_id == user_id)
                                .order_by(models.UserPasskey.id)))


def _descriptors(rows: list[models.UserPasskey]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=base64url_to_bytes(row.credential_id)) for row in rows]


def _options_json(options: Any) -> dict[str, Any]:
    return orjson.loads(options_to_json(options))


@endpoint(admin=False, enrolment=True)
async def passkey_options(request: Request, principal: Principal) -> Response:
    """Options for ``navigator.credentials.create``; its challenge is good for one registration, for a while."""
    user_id, rp = own_user_id(principal), relying_party(request)

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            options = generate_registration_options(
                rp_id=rp.id, rp_name="polyrelay", user_name=principal.name, user_id=str(user_id).encode(),
                exclude_credentials=_descriptors(passkeys_of(session, user_id)),
                authenticator_selection=AuthenticatorSelectionCriteria(resident_key=ResidentKeyRequirement.PREFERRED),
            )
            challenge = bytes_to_base64url(options.challenge)
            second_factor.open_challenge(session, user_id, second_factor.PASSKEY_ADD, challenge, challenge)
            return _options_json(options)

    return json_response(await run_db(request, work))


@endpoint(admin=False, enrolment=True)
async def add_passkey(request: Request, principal: Principal) -> Response:
    """Store the passkey the browser made from our options; the first second factor also brings recovery codes."""
    user_id, rp = own_user_id(principal), relying_party(request)
    data = await read_body(request, limit=_BODY_BYTES)
    check_unknown(data, {"name", "credential"})
    name = field_str(data, "name", max_len=64)
    try:
        credential = parse_registration_credential_json(data.get("credential"))  # type: ignore[arg-type]
        challenge = bytes_to_base64url(parse_client_data_json(credential.response.client_data_json).challenge)
    except _BAD_ANSWER:
        raise ApiError(400, "invalid_field", "'credential' is not a WebAuthn registration response.") from None

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            pending = second_factor.find_challenge(session, second_factor.PASSKEY_ADD, challenge)
            if pending is None or pending.user_id != user_id \
                    or not second_factor.consume_challenge(session, second_factor.PASSKEY_ADD, challenge):
                raise ApiError(400, "invalid_challenge", "This registration expired or was used; start again.")
            try:
                verified = verify_registration_response(credential=credential, expected_challenge=base64url_to_bytes(
                    challenge), expected_rp_id=rp.id, expected_origin=rp.origin)
            except _BAD_ANSWER as exc:
                raise ApiError(400, "invalid_passkey", f"The passkey was refused: {exc}") from None
            credential_id = bytes_to_base64url(verified.credential_id)
            if len(credential_id) > _MAX_CREDENTIAL_ID:
                raise ApiError(400, "invalid_passkey", "The credential id is longer than WebAuthn allows.")
            if session.scalar(select(models.UserPasskey.id).where(models.UserPasskey.credential_id == credential_id)):
                raise ApiError(409, "passkey_exists", "This passkey is already registered.")
            first = not second_factor.has_second_factor(session, user_id)
            row = models.UserPasskey(user_id=user_id, credential_id=credential_id, name=name,
                                     public_key=verified.credential_public_key, sign_count=verified.sign_count)
            session.add(row)
            session.flush()
            answer: dict[str, Any] = {"passkey": passkey_json(row)}
            if first:
                answer["recovery_codes"] = second_factor.new_recovery_codes(session, user_id)
            return answer

    return json_response(await run_db(request, work), 201)


@endpoint(admin=False, enrolment=True)
async def delete_passkey(request: Request, principal: Principal) -> Response:
    user_id, passkey_id = own_user_id(principal), path_int(request)

    def work() -> None:
        with Session(engine_of(request)) as session, session.begin():
            removed = session.execute(delete(models.UserPasskey).where(
                models.UserPasskey.id == passkey_id, models.UserPasskey.user_id == user_id)).rowcount
            if not removed:
                raise ApiError(404, "not_found", f"Passkey {passkey_id} does not exist.")
            second_factor.drop_recovery_codes_unless_protected(session, user_id)

    await run_db(request, work)
    return Response(status_code=204)


def sign_in_options(session: Session, rp: RelyingParty, ticket: str) -> dict[str, Any] | None:
    """Options for ``navigator.credentials.get`` answering this sign-in ticket (None: no such ticket or passkey)."""
    pending = second_factor.find_challenge(session, second_factor.SIGN_IN, ticket)
    rows = passkeys_of(session, pending.user_id) if pending is not None else []
    if pending is None or not rows:
        return None
    options = generate_authentication_options(rp_id=rp.id, allow_credentials=_descriptors(rows))
    pending.challenge = bytes_to_base64url(options.challenge)
    return _options_json(options)


def verify_sign_in(session: Session, rp: RelyingParty, pending: models.SignInChallenge, answer: Any) -> bool:
    """Whether ``answer`` is the user's passkey signing the ticket's challenge with a grown counter."""
    if pending.challenge is None:
        return False
    try:
        credential = parse_authentication_credential_json(answer)
    except _BAD_ANSWER:
        return False
    row = session.scalar(select(models.UserPasskey).where(
        models.UserPasskey.credential_id == bytes_to_base64url(credential.raw_id),
        models.UserPasskey.user_id == pending.user_id))
    if row is None:
        return False
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=base64url_to_bytes(pending.challenge), expected_rp_id=rp.id,
            expected_origin=rp.origin, credential_public_key=row.public_key,
            credential_current_sign_count=row.sign_count)
    except _BAD_ANSWER:
        return False
    return session.execute(  # compare-and-set: of two answers with the same count, one wins
        update(models.UserPasskey).where(models.UserPasskey.id == row.id,
                                         models.UserPasskey.sign_count == row.sign_count)
        .values(sign_count=verified.new_sign_count, last_used_at=datetime.now(timezone.utc))
        .execution_options(synchronize_session=False)
    ).rowcount == 1
