"""Second factors in the database: TOTP codes (RFC 6238), single-use recovery codes and sign-in tickets.

Every function takes an open SQLAlchemy session and runs on the DB thread. A TOTP code is
accepted for the step before, at or after now (one 30 s step of clock skew either way), and
only for a step later than the last one accepted: a code seen once, by a shoulder or a proxy,
is refused afterwards (a compare-and-set on ``last_step`` also settles two concurrent uses).
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import datetime, timedelta, timezone

import pyotp
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from polyrelay.api.admin.common import sha256_hex
from polyrelay.store import models

ISSUER = "polyrelay"
STEP_S = 30
SKEW_STEPS = 1
RECOVERY_CODES = 10
TICKET_TTL_S = 300  # between the password and the second factor
SIGN_IN = "sign_in"
PASSKEY_ADD = "passkey_add"
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off a printout


def has_second_factor(session: Session, user_id: int) -> bool:
    """Whether sign-in asks this user for a second factor: an active TOTP secret or a passkey."""
    return bool(session.scalar(select(
        exists().where(models.UserTotp.user_id == user_id, models.UserTotp.active)
        | exists().where(models.UserPasskey.user_id == user_id)
    )))


def factors_of(session: Session, user_id: int) -> list[str]:
    """The second factors the user has on: "totp", "passkey" (recovery codes stand in for them)."""
    totp = session.scalar(select(exists().where(models.UserTotp.user_id == user_id, models.UserTotp.active)))
    passkey = session.scalar(select(exists().where(models.UserPasskey.user_id == user_id)))
    return [name for name, on in (("totp", totp), ("passkey", passkey)) if on]


def totp_of(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, interval=STEP_S)


def provisioning_uri(secret: str, user_name: str) -> str:
    return totp_of(secret).provisioning_uri(name=user_name, issuer_name=ISSUER)


def _matching_step(secret: str, code: str) -> int | None:
    if len(code) != 6 or not code.isdigit():
        return None
    totp, now = totp_of(secret), int(time.time()) // STEP_S
    matched = None
    for step in range(now - SKEW_STEPS, now + SKEW_STEPS + 1):  # every candidate compared: no early exit to time
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    return matched


def accept_totp(session: Session, user_id: int, code: str, *, activating: bool = False) -> bool:
    """Accept ``code`` once: for an active secret, or (``activating``) for the one being enrolled, which it
    activates. Call inside a transaction."""
    row = session.get(models.UserTotp, user_id)
    if row is None or row.active == activating:
        return False
    step = _matching_step(row.secret, code.strip())
    if step is None:
        return False
    return session.execute(
        update(models.UserTotp)
        .where(models.UserTotp.user_id == user_id, models.UserTotp.last_step < step,
               models.UserTotp.active.is_(not activating))
        .values(last_step=step, active=True).execution_options(synchronize_session=False)
    ).rowcount == 1


def _recovery_hash(code: str) -> str:
    return sha256_hex(code.strip().lower().replace("-", "").replace(" ", ""))


def use_recovery_code(session: Session, user_id: int, code: str) -> bool:
    """Spend one unused recovery code of this user; a spent one never works again."""
    return session.execute(
        update(models.UserRecoveryCode)
        .where(models.UserRecoveryCode.user_id == user_id,
               models.UserRecoveryCode.code_hash == _recovery_hash(code),
               models.UserRecoveryCode.used_at.is_(None))
        .values(used_at=datetime.now(timezone.utc)).execution_options(synchronize_session=False)
    ).rowcount == 1


def new_recovery_codes(session: Session, user_id: int) -> list[str]:
    """Replace the user's recovery codes with fresh ones (50 random bits each), returned once in plain text."""
    session.execute(delete(models.UserRecoveryCode).where(models.UserRecoveryCode.user_id == user_id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
        session.add(models.UserRecoveryCode(user_id=user_id, code_hash=_recovery_hash(raw)))
    return codes


def recovery_codes_left(session: Session, user_id: int) -> int:
    return session.scalar(select(func.count()).where(models.UserRecoveryCode.user_id == user_id,
                                                     models.UserRecoveryCode.used_at.is_(None))) or 0


def drop_recovery_codes_unless_protected(session: Session, user_id: int) -> None:
    """Recovery codes stand in for a factor: with none left to stand in for, they go."""
    if not has_second_factor(session, user_id):
        session.execute(delete(models.UserRecoveryCode).where(models.UserRecoveryCode.user_id == user_id))


def remove_all(session: Session, user_id: int) -> None:
    """Every second factor of the user, its recovery codes and pending steps (an admin reset, a deleted user)."""
    for model in (models.UserTotp, models.UserRecoveryCode, models.UserPasskey, models.SignInChallenge):
        session.execute(delete(model).where(model.user_id == user_id))


def open_challenge(session: Session, user_id: int, purpose: str, key: str, challenge: str | None = None) -> None:
    """Store a single-use step under SHA-256 of ``key``, expiring in TICKET_TTL_S; expired ones are swept here."""
    now = datetime.now(timezone.utc)
    session.execute(delete(models.SignInChallenge).where(models.SignInChallenge.expires_at <= now))
    session.add(models.SignInChallenge(id=sha256_hex(key), user_id=user_id, purpose=purpose, challenge=challenge,
                                       expires_at=now + timedelta(seconds=TICKET_TTL_S)))


def open_ticket(session: Session, user_id: int) -> str:
    """A ticket for the second step of sign-in: it proves the password, and is no session."""
    ticket = secrets.token_urlsafe(32)
    open_challenge(session, user_id, SIGN_IN, ticket)
    return ticket


def find_challenge(session: Session, purpose: str, key: str) -> models.SignInChallenge | None:
    """The unexpired step stored under ``key``, left in place."""
    return session.scalar(select(models.SignInChallenge).where(
        models.SignInChallenge.id == sha256_hex(key), models.SignInChallenge.purpose == purpose,
        models.SignInChallenge.expires_at > datetime.now(timezone.utc)))


def consume_challenge(session: Session, purpose: str, key: str) -> bool:
    """Take the step stored under ``key``; only one caller ever gets True for it."""
    return session.execute(
        delete(models.SignInChallenge).where(
            models.SignInChallenge.id == sha256_hex(key), models.SignInChallenge.purpose == purpose,
            models.SignInChallenge.expires_at > datetime.now(timezone.utc))
        .execution_options(synchronize_session=False)
    ).rowcount == 1
