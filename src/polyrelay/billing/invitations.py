"""Invitation rewards: each user has an invite code; what their invitees earn them lands in an affiliate
balance (``users.affiliate_micros``, with one ``affiliate_entries`` row per movement), which the user moves
into their real balance through the ledger (kind ``affiliate``).

Two rewards per invitee, each at most once (the entry's ``ref`` is unique): a fixed amount when the
invitee has proven their e-mail address, and a share of the invitee's first top-up. An inviter is
rewarded for at most ``max_rewarded_invites_per_user`` invitees; a conditional UPDATE holds that cap.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from polyrelay.billing import accounts
from polyrelay.store import models


class InvitationSettings(BaseModel):
    """The ``invitations:`` block (docs/platform.md, "Invitations")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    reward_fixed_usd: float = Field(default=0.0, ge=0, le=1_000_000, description="Per invitee whose e-mail is verified.")
    reward_share_of_first_topup: float = Field(default=0.0, ge=0, le=1, description="0.1: a tenth of the first top-up.")
    max_rewarded_invites_per_user: int = Field(default=100, ge=0, description="Invitees that earn their inviter a "
                                                                                  "reward; later ones earn nothing.")


def new_invite_code() -> str:
    return secrets.token_urlsafe(9)  # 12 URL-safe characters


def _reward(session: Session, rules: InvitationSettings, invitee_id: int, kind: str, amount: int, ref: str) -> int:
    """Credit ``amount`` to the invitee's inviter once per ``ref``; the micro-USD credited (0 when none is due)."""
    if not rules.enabled or amount <= 0:
        return 0
    invitee = session.execute(select(models.User.invited_by, models.User.id).where(models.User.id == invitee_id)).first()
    if invitee is None or invitee.invited_by is None or invitee.invited_by == invitee_id:
        return 0
    inviter = invitee.invited_by
    earned_before = session.scalar(select(models.AffiliateEntry.id).where(models.AffiliateEntry.invitee_id == invitee_id)
                                   .limit(1)) is not None
    try:
        with session.begin_nested():
            session.execute(insert(models.AffiliateEntry), [{
                "ref": ref, "created_at": datetime.now(timezone.utc), "user_id": inviter, "invitee_id": invitee_id,
                "kind": kind, "amount_micros": amount}])
            counted = models.User.rewarded_invites + (0 if earned_before else 1)
            credited = session.execute(
                update(models.User)
                .where(models.User.id == inviter, counted <= rules.max_rewarded_invites_per_user)
                .values(affiliate_micros=models.User.affiliate_micros + amount, rewarded_invites=counted)
                .execution_options(synchronize_session=False)
            ).rowcount == 1
            if not credited:  # the inviter is gone or at the cap: take the entry back
                raise _NotDue
    except (IntegrityError, _NotDue):
        return 0
    return amount


class _NotDue(Exception):
    """Rolls back a reward's savepoint."""


def reward_verified_invitee(session: Session, rules: InvitationSettings, invitee_id: int) -> int:
    """The fixed reward, once the invitee has proven their address; call in the transaction that verifies it."""
    amount = round(rules.reward_fixed_usd * 1_000_000)
    return _reward(session, rules, invitee_id, "signup", amount, f"invite-signup-{invitee_id}")


def reward_first_topup(session: Session, user_id: int, credited_micros: int, *, rules: InvitationSettings) -> int:
    """The share of an invitee's first top-up, for the inviter; the micro-USD it credited (0: none due).

    Call it inside the transaction that credits the top-up, for every top-up: only the first one of the
    user ever rewards: the entry's ref names the invitee, so a repeat changes nothing.
    """
    amount = int(credited_micros * rules.reward_share_of_first_topup)
    return _reward(session, rules, user_id, "first_topup", amount, f"invite-topup-{user_id}")


def move_to_balance(session: Session, user_id: int) -> int:
    """Move the whole affiliate balance into the real balance; the micro-USD moved (0 when there was none).

    The conditional UPDATE takes exactly what it read, so two concurrent moves cannot both spend it.
    """
    amount = session.scalar(select(models.User.affiliate_micros).where(models.User.id == user_id)) or 0
    if amount <= 0:
        return 0
    taken = session.execute(
        update(models.User).where(models.User.id == user_id, models.User.affiliate_micros == amount)
        .values(affiliate_micros=0).execution_options(synchronize_session=False)
    ).rowcount == 1
    if not taken:
        return 0
    ref = f"affiliate-{secrets.token_hex(12)}"
    session.execute(insert(models.AffiliateEntry), [{
        "ref": ref, "created_at": datetime.now(timezone.utc), "user_id": user_id, "invitee_id": None, "kind": "move",
        "amount_micros": -amount}])
    accounts.post(session, user_id, "affiliate", amount, ref, "invitation rewards")
    return amount
