"""The tokens of mailed links (verify an address, reset a password): random, stored as SHA-256 only,
expiring, used once. A new one of a kind voids the user's earlier unused ones."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from polyrelay.api.admin.common import aware, sha256_hex
from polyrelay.store import models

_TOKEN_LENGTH = 512  # far longer than any token we make; a longer one is refused before it is hashed


@dataclass(frozen=True, slots=True)
class Redeemed:
    user_id: int
    email: str


def issue(session: Session, user_id: int, email: str, purpose: str, ttl_s: int) -> str:
    """A new token for ``purpose``; the caller mails it and never stores or logs it."""
    now = datetime.now(timezone.utc)
    _void(session, user_id, purpose, now)
    token = secrets.token_urlsafe(32)
    session.execute(insert(models.AccountToken), [{
        "token_hash": sha256_hex(token), "user_id": user_id, "purpose": purpose, "email": email, "created_at": now,
        "expires_at": now + timedelta(seconds=ttl_s)}])
    return token


def sent_within(session: Session, user_id: int, purpose: str, interval_s: int) -> bool:
    """Whether a token of ``purpose`` went to the user less than ``interval_s`` ago (the resend throttle)."""
    since = datetime.now(timezone.utc) - timedelta(seconds=interval_s)
    return session.scalar(select(models.AccountToken.id).where(
        models.AccountToken.user_id == user_id, models.AccountToken.purpose == purpose,
        models.AccountToken.created_at > since).limit(1)) is not None


def redeem(session: Session, token: str, purpose: str) -> Redeemed | None:
    """Use the token once; None when it is unknown, of another purpose, expired, used, or its address changed.

    The use is one conditional UPDATE (``used_at IS NULL``): of two concurrent uses, exactly one wins.
    """
    if not token or len(token) > _TOKEN_LENGTH:
        return None
    now = datetime.now(timezone.utc)
    row = session.execute(select(models.AccountToken).where(
        models.AccountToken.token_hash == sha256_hex(token), models.AccountToken.purpose == purpose)).scalar_one_or_none()
    if row is None or row.used_at is not None or aware(row.expires_at) <= now:
        return None
    claimed = session.execute(
        update(models.AccountToken).where(models.AccountToken.id == row.id, models.AccountToken.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)
    ).rowcount == 1
    current = session.scalar(select(models.User.email).where(models.User.id == row.user_id))
    if not claimed or current != row.email:
        return None
    _void(session, row.user_id, purpose, now)
    return Redeemed(row.user_id, row.email)


def _void(session: Session, user_id: int, purpose: str, now: datetime) -> None:
    session.execute(
        update(models.AccountToken).where(models.AccountToken.user_id == user_id,
                                          models.AccountToken.purpose == purpose,
                                          models.AccountToken.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)
    )
