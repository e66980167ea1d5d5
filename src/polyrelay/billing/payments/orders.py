"""The order table's rules: making an order, and crediting a paid one exactly once.

Crediting is one transaction: a conditional UPDATE moves the order from pending (and not yet
expired) to paid, and only the caller whose UPDATE changed the row posts the ledger entry
(``request_id`` = ``order-<id>``, unique per kind: a second guard). A replayed or concurrent
duplicate notification finds the order paid and changes nothing. Money that arrives for an
order that can no longer take it (expired, failed, or a different amount, currency or checkout)
is not credited and not dropped: the order moves to ``review`` with a note, for an administrator.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta, timezone
from enum import Enum

from sqlalchemy import ColumnElement, and_, case, func, select, update
from sqlalchemy.orm import Session

from polyrelay.billing import accounts, invitations
from polyrelay.billing.invitations import InvitationSettings
from polyrelay.billing.payments.base import Notice
from polyrelay.billing.payments.quote import Quote, money_text
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version

log = logging.getLogger("polyrelay.payments")

STATUSES = ("pending", "paid", "expired", "failed", "review")
ORDER_NO = re.compile(r"PR[0-9]{14}[0-9a-f]{24}")
MAX_PENDING_PER_USER = 20  # open orders a user may hold at once: each one costs a provider call


class Outcome(Enum):
    CREDITED = "credited"
    DUPLICATE = "duplicate"  # already credited (or already in review): nothing more to do
    REVIEW = "review"  # money that could not be credited; kept for an administrator
    UPDATED = "updated"  # an expiry or failure recorded
    UNKNOWN = "unknown"  # no such order


def new_order_no(now: datetime) -> str:
    """Readable by time, unguessable by its 96 random bits (it appears in URLs and the provider's records)."""
    return f"PR{now:%Y%m%d%H%M%S}{secrets.token_hex(12)}"


def status_of(now: datetime) -> ColumnElement[str]:
    """The status as users see it: a pending order past its expiry is expired, whether or not a row says so."""
    order = models.PaymentOrder
    return case((and_(order.status == "pending", order.expires_at <= now), "expired"), else_=order.status)


def open_orders(session: Session, user_id: int, now: datetime) -> int:
    order = models.PaymentOrder
    return session.scalar(select(func.count()).select_from(order).where(
        order.user_id == user_id, order.status == "pending", order.expires_at > now)) or 0


def create(session: Session, user_id: int, provider: str, method: str, priced: Quote, ttl_s: int,
           now: datetime) -> models.PaymentOrder:
    row = models.PaymentOrder(
        order_no=new_order_no(now), user_id=user_id, provider=provider, method=method, status="pending",
        amount_minor=priced.amount_minor, currency=priced.currency, credit_micros=priced.credit_micros,
        bonus_micros=priced.bonus_micros, note="", created_at=now, expires_at=now + timedelta(seconds=ttl_s))
    session.add(row)
    session.flush()
    return row


def started(session: Session, order_id: int, provider_ref: str | None) -> None:
    """Remember the provider's id of the checkout (Stripe's session id), which its events must name."""
    if provider_ref:
        session.execute(update(models.PaymentOrder).where(models.PaymentOrder.id == order_id)
                        .values(provider_ref=provider_ref[:255]).execution_options(synchronize_session=False))


def failed_to_start(session: Session, order_id: int, reason: str) -> None:
    session.execute(update(models.PaymentOrder).where(models.PaymentOrder.id == order_id)
                    .values(status="failed", note=reason[:512]).execution_options(synchronize_session=False))


def apply(session: Session, provider: str, notice: Notice, rewards: InvitationSettings,
          now: datetime | None = None) -> Outcome:
    """Act on an authentic notice, in the caller's transaction (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    order = session.scalar(select(models.PaymentOrder).where(models.PaymentOrder.order_no == notice.order_no,
                                                             models.PaymentOrder.provider == provider))
    if order is None:
        log.warning("payment notice for unknown order %s from %s (ref %s)", notice.order_no, provider,
                    notice.provider_ref)
        return Outcome.UNKNOWN
    if notice.event != "paid":
        _move(session, order.id, ("pending",), notice.event, f"{provider}: checkout {notice.event}")
        return Outcome.UPDATED
    wrong = _mismatch(order, notice)
    if wrong:
        log.warning("order %s not credited: %s", order.order_no, wrong)
        return Outcome.REVIEW if _to_review(session, order.id, wrong, notice) else Outcome.DUPLICATE
    claimed = session.execute(
        update(models.PaymentOrder)
        .where(models.PaymentOrder.id == order.id, models.PaymentOrder.status == "pending",
               models.PaymentOrder.expires_at > now)
        .values(status="paid", paid_at=now, provider_ref=notice.provider_ref)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if claimed:
        _credit(session, order, order.credit_micros, f"order {order.order_no} paid via {provider} "
                f"({money_text(order.amount_minor)} {order.currency.upper()})", rewards)
        return Outcome.CREDITED
    status = session.scalar(select(models.PaymentOrder.status).where(models.PaymentOrder.id == order.id))
    if status in ("paid", "review"):
        return Outcome.DUPLICATE
    reason = f"paid after the order {'expired' if status == 'pending' else status}"
    log.warning("order %s not credited: %s", order.order_no, reason)
    _to_review(session, order.id, reason, notice)
    return Outcome.REVIEW


def resolve(session: Session, order_id: int, credit_micros: int | None, actor: str, note: str,
            rewards: InvitationSettings, now: datetime | None = None) -> models.PaymentOrder | None:
    """An administrator's decision on an order in review: credit it (``credit_micros``, by default what
    it was to credit; once, as its ``order-<id>`` entry) or, with None, dismiss it (failed, e.g. refunded
    at the provider). None when the order is not in review (any more)."""
    order = session.get(models.PaymentOrder, order_id)
    if order is None:
        return None
    decided = f"{order.note}; {'credited' if credit_micros is not None else 'dismissed'} by {actor}" + \
        (f": {note}" if note else "")
    values: dict[str, object] = {"status": "failed", "note": decided[:512]}
    if credit_micros is not None:
        values.update(status="paid", paid_at=now or datetime.now(timezone.utc))
    moved = session.execute(
        update(models.PaymentOrder).where(models.PaymentOrder.id == order_id, models.PaymentOrder.status == "review")
        .values(**values).execution_options(synchronize_session=False)
    ).rowcount == 1
    if not moved:
        return None
    if credit_micros is not None:
        _credit(session, order, credit_micros, f"order {order.order_no} credited by {actor} after review", rewards)
    session.refresh(order)
    return order


def _credit(session: Session, order: models.PaymentOrder, amount_micros: int, note: str,
            rewards: InvitationSettings) -> None:
    """The order's ledger entry and, in the same transaction, the inviter's share of what was paid (the
    bonus is the gateway's gift, not the invitee's money)."""
    if accounts.post(session, order.user_id, "topup", amount_micros, f"order-{order.id}", note):
        invitations.reward_first_topup(session, order.user_id, max(amount_micros - order.bonus_micros, 0),
                                       rules=rewards)
    bump_records_version(session, changes.user(order.user_id))


def _mismatch(order: models.PaymentOrder, notice: Notice) -> str:
    if (notice.amount_minor, notice.currency) != (order.amount_minor, order.currency):
        paid = f"{money_text(notice.amount_minor or 0)} {(notice.currency or '?').upper()}"
        return f"paid {paid} for an order of {money_text(order.amount_minor)} {order.currency.upper()}"
    if order.provider_ref and notice.provider_ref != order.provider_ref:
        return f"paid through checkout {notice.provider_ref}, not the order's {order.provider_ref}"
    return ""


def _to_review(session: Session, order_id: int, reason: str, notice: Notice) -> bool:
    return _move(session, order_id, ("pending", "expired", "failed"), "review", reason, notice.provider_ref)


def _move(session: Session, order_id: int, old: tuple[str, ...], new: str, note: str,
          provider_ref: str | None = None) -> bool:
    values: dict[str, object] = {"status": new, "note": note[:512]}
    if provider_ref:
        values["provider_ref"] = provider_ref
    return session.execute(
        update(models.PaymentOrder).where(models.PaymentOrder.id == order_id, models.PaymentOrder.status.in_(old))
        .values(**values).execution_options(synchronize_session=False)
    ).rowcount == 1
