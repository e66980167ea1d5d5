"""Stripe Checkout through the official ``stripe`` package: a hosted payment page per order, and its
webhook (``checkout.session.*``) verified with ``stripe.Webhook.construct_event``."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from polyrelay.billing.payments.base import RETURN_PATH, Checkout, CheckoutFailed, Inbound, Notice, OrderView, Refused
from polyrelay.billing.payments.settings import StripeSettings

log = logging.getLogger("polyrelay.payments")

# Stripe refuses a Checkout Session that expires sooner than this; an order due earlier keeps the
# session open a little longer, and a payment in that gap lands in review (orders.apply).
_SHORTEST_SESSION = timedelta(minutes=31)
_TIMEOUT_S = 30
_PAID = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
_EVENTS = {"checkout.session.expired": "expired", "checkout.session.async_payment_failed": "failed"}
_ORDER_NO_MAX = 64
WEBHOOK_PATH = "/api/payments/stripe/webhook"  # set this endpoint, with its secret, in Stripe's dashboard


class StripeCheckout:
    name = "stripe"
    methods = ("card",)

    def __init__(self, settings: StripeSettings, http: aiohttp.ClientSession) -> None:
        import stripe  # deferred: a large package, needed only where Stripe is configured

        # Its INFO lines (three per call, more per retry) repeat what our one warning per refusal says.
        logging.getLogger("stripe").setLevel(logging.WARNING)
        self.currency = settings.currency
        self._webhook_secret = settings.webhook_secret.get_secret_value()
        self._client = stripe.StripeClient(
            settings.secret_key.get_secret_value(), base_addresses={"api": settings.api_base},
            http_client=stripe.AIOHTTPClient(session=http, timeout=_TIMEOUT_S), max_network_retries=2,
        )

    async def checkout(self, order: OrderView, public_url: str) -> Checkout:
        import stripe

        back = f"{public_url}{RETURN_PATH}?order={order.order_no}"
        expires_at = max(order.expires_at, datetime.now(timezone.utc) + _SHORTEST_SESSION)
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [{"quantity": 1, "price_data": {
                "currency": order.currency, "unit_amount": order.amount_minor,
                "product_data": {"name": "polyrelay credit"}}}],
            "client_reference_id": order.order_no,
            "metadata": {"order_no": order.order_no},
            "success_url": back,
            "cancel_url": back,
            "expires_at": int(expires_at.timestamp()),
        }
        try:
            # The order number as idempotency key: a retried create returns the same session.
            session = await self._client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": order.order_no})
        except stripe.StripeError as exc:
            # Stripe's message can quote part of the key (sk_test_****abcd): the log has it, the user does not.
            log.warning("order %s: Stripe refused the checkout: %s (HTTP %s): %s", order.order_no,
                        type(exc).__name__, exc.http_status, exc.user_message)
            raise CheckoutFailed("Stripe refused the checkout; the gateway's log says why.") from None
        if not session.url:
            raise CheckoutFailed("Stripe returned a checkout session without a URL.")
        return Checkout(redirect_url=session.url, provider_ref=session.id)

    def verify(self, inbound: Inbound) -> Notice | None:
        import stripe

        try:
            event = stripe.Webhook.construct_event(inbound.body, inbound.headers.get("stripe-signature"),
                                                   self._webhook_secret)
            kind = event.type
            session = event.data.object.to_dict()
        except (stripe.StripeError, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise Refused(f"not a Stripe event signed with this endpoint's secret ({type(exc).__name__})") from None
        order_no = session.get("client_reference_id")
        if session.get("object") != "checkout.session" or not isinstance(order_no, str) \
                or not 0 < len(order_no) <= _ORDER_NO_MAX:
            return None  # another integration's event on the same account
        ref = str(session.get("id", ""))[:255]
        if kind in _EVENTS:
            return Notice(order_no, _EVENTS[kind], ref)  # type: ignore[arg-type]
        if kind not in _PAID or session.get("payment_status") != "paid":
            return None  # e.g. completed but unpaid: a bank debit still on its way (async_payment_* follows)
        amount, currency = session.get("amount_total"), session.get("currency")
        if isinstance(amount, bool) or not isinstance(amount, int) or not isinstance(currency, str):
            raise Refused("a paid checkout session without amount_total and currency")
        return Notice(order_no, "paid", ref, amount, currency.lower()[:3])
