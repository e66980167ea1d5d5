"""Top-up by payment: a user's options, orders and order list; the admin's order list; and the public
side — the providers' notifications (authenticated by signature before anything else is read) and
the landing page the browser returns to (it only redirects to the console; it never credits)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import (
    ApiError, engine_of, iso, json_response, not_found, paging, path_int, query_int, read_body, read_raw,
    reload_snapshot, run_db,
)
from polyrelay.api.admin.fields import MAX_MICROS, check_unknown, field_int, field_str, field_text
from polyrelay.billing.payments import orders
from polyrelay.billing.payments.base import RETURN_PATH, CheckoutFailed, Inbound, Notice, OrderView, Provider, Refused
from polyrelay.billing.payments.epay import NOTIFY_PATH
from polyrelay.billing.payments.quote import QuoteError, money_text, parse_amount, quote
from polyrelay.billing.payments.settings import PaymentSettings
from polyrelay.billing.payments.stripe_checkout import WEBHOOK_PATH
from polyrelay.store import models

log = logging.getLogger("polyrelay.payments")

_STRIPE_BODY_BYTES = 256 * 1024  # a checkout.session event is a few kB
_EPAY_BODY_BYTES = 16 * 1024  # a dozen short form fields


def _settings(request: Request) -> PaymentSettings:
    return request.app.state.settings.payments


def _providers(request: Request) -> dict[str, Provider]:
    """The configured providers, built at start (app.py) on the pooled HTTP client."""
    providers: dict[str, Provider] = request.app.state.payment_providers
    return providers


def _user(principal: Principal) -> int:
    if principal.user_id is None:
        raise ApiError(404, "no_user", "The admin key is not a user; log in as one to top up.")
    return principal.user_id


def order_json(row: models.PaymentOrder, status: str) -> dict[str, Any]:
    return {"id": row.id, "order_no": row.order_no, "user_id": row.user_id, "provider": row.provider,
            "method": row.method, "status": status, "amount": money_text(row.amount_minor),
            "amount_minor": row.amount_minor, "currency": row.currency, "credit_micros": row.credit_micros,
            "bonus_micros": row.bonus_micros, "provider_ref": row.provider_ref, "note": row.note,
            "created_at": iso(row.created_at), "expires_at": iso(row.expires_at), "paid_at": iso(row.paid_at)}


@endpoint(admin=False)
async def my_topup_options(request: Request, principal: Principal) -> Response:
    """What a top-up can be paid with: providers and their methods and currencies, rates, bounds, bonus tiers."""
    _user(principal)
    settings, providers = _settings(request), _providers(request)
    return json_response({
        "enabled": bool(providers),
        "providers": [{"name": p.name, "currency": p.currency, "methods": list(p.methods),
                       "rate": settings.currency_rate[p.currency]} for p in providers.values()],
        "min_usd": settings.min_usd, "max_usd": settings.max_usd, "order_ttl_s": settings.order_ttl_s,
        "bonus_tiers": [{"from": t.from_usd, "bonus_percent": t.bonus_percent} for t in settings.bonus_tiers],
    })


@endpoint(admin=False)
async def my_create_order(request: Request, principal: Principal) -> Response:
    """Order a top-up of `amount` (in the provider's currency) and get where to pay it: a URL or a form to post."""
    user_id = _user(principal)
    data = await read_body(request)
    check_unknown(data, {"provider", "method", "amount"})
    providers = _providers(request)
    if not providers:
        raise ApiError(403, "payments_disabled", "Top-up by payment is not enabled on this gateway.")
    provider = providers[field_str(data, "provider", max_len=16, choices=tuple(providers))]
    method = field_str(data, "method", max_len=16, choices=provider.methods) if "method" in data \
        else provider.methods[0]
    settings = _settings(request)
    try:
        priced = quote(settings, provider.currency, parse_amount(data.get("amount")))
    except QuoteError as exc:
        raise ApiError(400, "invalid_amount", str(exc)) from None
    now = datetime.now(timezone.utc)

    def make() -> tuple[int, OrderView]:
        with Session(engine_of(request)) as session, session.begin():
            if orders.open_orders(session, user_id, now) >= orders.MAX_PENDING_PER_USER:
                raise ApiError(429, "too_many_orders", f"You have {orders.MAX_PENDING_PER_USER} unpaid orders open; "
                                                       "pay one or wait until they expire.")
            row = orders.create(session, user_id, provider.name, method, priced, settings.order_ttl_s, now)
            return row.id, OrderView(row.order_no, row.amount_minor, row.currency, row.method, row.expires_at)

    order_id, view = await run_db(request, make)
    public_url = settings.public_url or str(request.base_url).rstrip("/")
    try:
        checkout = await provider.checkout(view, public_url)
    except CheckoutFailed as exc:
        await run_db(request, _write, request, orders.failed_to_start, order_id, str(exc))
        raise ApiError(502, "payment_provider_error", str(exc)) from None
    await run_db(request, _write, request, orders.started, order_id, checkout.provider_ref)
    order = await run_db(request, _orders, request, [models.PaymentOrder.id == order_id], 1, 0)
    return json_response({"order": order[0], "checkout": {"redirect_url": checkout.redirect_url,
                                                          "form": checkout.form}}, 201)


def _write(request: Request, change: Any, *args: Any) -> None:
    with Session(engine_of(request)) as session, session.begin():
        change(session, *args)


def _orders(request: Request, where: list[Any], limit: int, offset: int) -> list[dict[str, Any]]:
    status = orders.status_of(datetime.now(timezone.utc))
    query = (select(models.PaymentOrder, status).where(*where).order_by(models.PaymentOrder.id.desc())
             .limit(limit).offset(offset))
    with Session(engine_of(request)) as session:
        return [order_json(row, effective) for row, effective in session.execute(query)]


def _filters(request: Request) -> list[Any]:
    where: list[Any] = []
    status = request.query_params.get("status")
    if status:
        if status not in orders.STATUSES:
            raise ApiError(400, "invalid_query", f"'status' must be one of {', '.join(orders.STATUSES)}.")
        where.append(orders.status_of(datetime.now(timezone.utc)) == status)
    return where


@endpoint(admin=False)
async def my_orders(request: Request, principal: Principal) -> Response:
    """Your top-up orders, newest first; `status` filters (pending, paid, expired, failed, review)."""
    user_id = _user(principal)
    limit, offset = paging(request)
    where = [models.PaymentOrder.user_id == user_id, *_filters(request)]
    return json_response({"data": await run_db(request, _orders, request, where, limit, offset)})


@endpoint()
async def list_orders(request: Request, _: Principal) -> Response:
    """Every top-up order, newest first; filter by `user_id` and `status` (review: money to look at)."""
    limit, offset = paging(request)
    where = _filters(request)
    if request.query_params.get("user_id"):
        where.append(models.PaymentOrder.user_id == query_int(request, "user_id", minimum=1))
    return json_response({"data": await run_db(request, _orders, request, where, limit, offset)})


@endpoint()
async def resolve_order(request: Request, principal: Principal) -> Response:
    """Decide an order in review: `{"action": "credit"}` (optionally `amount_micros`, default its credit) or `"dismiss"`.

    Credit posts the order's own ledger entry (`order-<id>`), so it can happen once; dismiss marks it failed
    (refunded at the provider, say). `note` is added to the order's note. 409 when the order is not in review."""
    order_id = path_int(request)
    data = await read_body(request)
    check_unknown(data, {"action", "amount_micros", "note"})
    action = field_str(data, "action", choices=("credit", "dismiss"))
    credit = field_int(data, "amount_micros", minimum=1, maximum=MAX_MICROS) if "amount_micros" in data else None
    if action == "dismiss" and credit is not None:
        raise ApiError(400, "invalid_field", "'amount_micros' goes with the action credit only.")
    note = field_text(data, "note", max_len=200)

    def work() -> dict[str, Any]:
        with Session(engine_of(request)) as session, session.begin():
            row = session.get(models.PaymentOrder, order_id)
            if row is None:
                raise not_found(f"Order {order_id}")
            amount = (credit or row.credit_micros) if action == "credit" else None
            decided = orders.resolve(session, order_id, amount, f"admin:{principal.name}", note,
                                     request.app.state.settings.invitations)
            if decided is None:
                raise ApiError(409, "not_in_review", f"Order {order_id} is not in review.")
            return order_json(decided, decided.status)

    result = await run_db(request, work)
    await reload_snapshot(request)
    log.info("order %s resolved by %s: %s", result["order_no"], principal.name, action)
    return json_response(result)


async def _settle(request: Request, provider: str, notice: Notice) -> orders.Outcome:
    def work() -> orders.Outcome:
        with Session(engine_of(request)) as session, session.begin():
            return orders.apply(session, provider, notice, request.app.state.settings.invitations)

    outcome: orders.Outcome = await run_db(request, work)
    log.info("payment notice %s for order %s: %s", provider, notice.order_no, outcome.value)
    if outcome is orders.Outcome.CREDITED:
        await reload_snapshot(request)  # this process's relay sees the balance now; the others via the change log
    return outcome


@endpoint(admin=False, public=True)
async def stripe_webhook(request: Request, _: Principal) -> Response:
    provider = _providers(request).get("stripe")
    if provider is None:
        raise ApiError(404, "not_found", "Stripe payments are not configured.")
    body = await read_raw(request, _STRIPE_BODY_BYTES)
    try:
        notice = provider.verify(Inbound(body, request.headers))
    except Refused as exc:
        log.warning("stripe webhook refused: %s", exc)
        raise ApiError(400, "invalid_signature", "The event's Stripe-Signature does not verify.") from None
    outcome = await _settle(request, "stripe", notice) if notice is not None else None
    return json_response({"received": True, "outcome": outcome.value if outcome else "ignored"})


@endpoint(admin=False, public=True)
async def epay_notify(request: Request, _: Principal) -> Response:
    """Answers the plain text Epay expects: ``success`` once handled (it stops repeating), else ``fail``."""
    provider = _providers(request).get("epay")
    if provider is None:
        return PlainTextResponse("fail", 404)
    fields = dict(request.query_params)
    if request.method == "POST":
        body = await read_raw(request, _EPAY_BODY_BYTES)
        fields.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if len(request.url.query) > _EPAY_BODY_BYTES or any("\x00" in k + v for k, v in fields.items()):
        return PlainTextResponse("fail", 400)
    try:
        notice = provider.verify(Inbound(b"", request.headers, fields))
    except Refused as exc:
        log.warning("epay notify refused: %s", exc)
        return PlainTextResponse("fail", 400)
    if notice is not None:
        await _settle(request, "epay", notice)
    return PlainTextResponse("success")


async def payment_return(request: Request) -> Response:
    """The browser's way back from a provider: to the console's top-up page, showing the order."""
    order_no = request.query_params.get("order") or request.query_params.get("out_trade_no") or ""
    target = f"/#/topup?order={order_no}" if orders.ORDER_NO.fullmatch(order_no) else "/#/topup"
    return RedirectResponse(target, 303)


def public_routes() -> list[BaseRoute]:
    """Not in the admin API's schema: their callers are payment providers and browsers, not API clients."""
    return [Route(WEBHOOK_PATH, stripe_webhook, methods=["POST"]),
            Route(NOTIFY_PATH, epay_notify, methods=["GET", "POST"]),
            Route(RETURN_PATH, payment_return, methods=["GET"])]
