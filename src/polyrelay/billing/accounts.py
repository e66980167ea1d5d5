"""Accounts outside the hot path: passwords, money movements with their ledger entries, redemption.

Every change to a balance goes through :func:`post`, which appends the ledger entry and
moves ``users.balance_micros`` in the caller's transaction; ``(request_id, kind)`` is
unique, so posting the same movement twice changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from polyrelay.store import models

# signup: the starting balance of a self-signed-up user; affiliate: invitation rewards moved into the balance.
KINDS = ("charge", "refund", "topup", "adjustment", "redemption", "signup", "affiliate")
CODE_PREFIX = "pr-"


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher  # deferred: only logins and user management need it

    return PasswordHasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def post(
    session: Session,
    user_id: int,
    kind: str,
    amount_micros: int,
    request_id: str,
    note: str = "",
    token_id: int | None = None,
) -> bool:
    """Append a ledger entry and move the balance by ``amount_micros`` (signed); False if already posted."""
    assert kind in KINDS
    try:
        with session.begin_nested():
            session.execute(
                insert(models.LedgerEntry),
                [{"created_at": datetime.now(timezone.utc), "user_id": user_id, "token_id": token_id, "kind": kind,
                  "amount_micros": amount_micros, "request_id": request_id, "note": note[:2000]}],
            )
    except IntegrityError:
        return False
    session.execute(
        update(models.User)
        .where(models.User.id == user_id)
        .values(balance_micros=models.User.balance_micros + amount_micros)
        .execution_options(synchronize_session=False)
    )
    return True


def user_of_token(session: Session, token_id: int | None) -> int | None:
    if token_id is None:
        return None
    return session.scalar(select(models.Token.user_id).where(models.Token.id == token_id))


def new_code() -> str:
    return CODE_PREFIX + secrets.token_urlsafe(18)


def hash_code(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


def redeem(session: Session, user_id: int, code: str) -> int | None:
    """Claim ``code`` for ``user_id`` and credit it; the micro-USD credited, or None if it can't be.

    The claim is one conditional UPDATE (``redeemed_by IS NULL``): of two concurrent
    redemptions, the database lets exactly one change the row.
    """
    now = datetime.now(timezone.utc)
    code_hash = hash_code(code)
    row = session.execute(
        select(models.RedemptionCode.id, models.RedemptionCode.amount_micros, models.RedemptionCode.expires_at)
        .where(models.RedemptionCode.code_hash == code_hash)
    ).first()
    if row is None:
        return None
    if row.expires_at is not None and _aware(row.expires_at) <= now:
        return None
    claimed = session.execute(
        update(models.RedemptionCode)
        .where(models.RedemptionCode.id == row.id, models.RedemptionCode.redeemed_by.is_(None))
        .values(redeemed_by=user_id, redeemed_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        return None
    post(session, user_id, "redemption", row.amount_micros, f"code-{row.id}", "redemption code")
    return row.amount_micros


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
