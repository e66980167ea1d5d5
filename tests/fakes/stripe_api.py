"""A fake Stripe API for Checkout Sessions, and Stripe's webhook signing, for tests without a network.

``POST /v1/checkout/sessions`` takes what the official ``stripe`` package sends (form-encoded,
nested keys as ``line_items[0][price_data][currency]``, ``Authorization: Bearer <secret key>``,
``Idempotency-Key``) and refuses what Stripe refuses, in Stripe's error shape
(``{"error": {"type", "code", "param", "message"}}``): a wrong key (401), an unknown parameter,
a missing ``success_url`` or line item, an amount under the currency's minimum, an ``expires_at``
outside 30 minutes to 24 hours from now, and an idempotency key reused with other parameters (400).
A repeated key with the same parameters gets the first answer again, as Stripe replays it.

``signature_header`` and ``event`` build webhook deliveries exactly as Stripe signs them:
``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed by the endpoint secret>``.
Knob ``fail_with``: every create answers this HTTP status with an ``api_error``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.server import KNOBS

SECRET_KEY = "sk_test_fake_0123456789abcdefghij"
WEBHOOK_SECRET = "whsec_fake_0123456789abcdefghij"
_MINIMUM = {"usd": 50, "eur": 50, "gbp": 30, "cny": 400}  # Stripe's smallest charge, in hundredths
_TOP = {"mode", "line_items", "client_reference_id", "metadata", "success_url", "cancel_url", "expires_at",
        "customer_email", "payment_method_types", "locale"}
SESSIONS = web.AppKey("sessions", dict)
IDEMPOTENCY = web.AppKey("idempotency", dict)


class _Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.body = {"error": {"type": kind, "message": message, **({"param": param} if param else {}),
                               **({"code": code} if code else {})}}
        self.status = status


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back into objects: ``a[b][0][c]=v`` → ``{"a": {"b": [{"c": "v"}]}}``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        path = re.findall(r"[^\[\]]+", key)
        node: Any = root
        for part, following in zip(path, path[1:]):
            child = [] if following.isdigit() else {}
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(None)
                node[index] = node[index] if node[index] is not None else child
                node = node[index]
            else:
                node = node.setdefault(part, child)
        if isinstance(node, list):
            node.append(value)
        else:
            node[path[-1]] = value
    return root


def _integer(value: Any, param: str, minimum: int = 0) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value) or int(value) < minimum:
        raise _Refusal(400, "invalid_request_error", f"Invalid integer: {value}", param, "parameter_invalid_integer")
    return int(value)


def _check(params: dict[str, Any], now: int) -> dict[str, Any]:
    unknown = sorted(set(params) - _TOP)
    if unknown:
        raise _Refusal(400, "invalid_request_error", f"Received unknown parameter: {unknown[0]}", unknown[0],
                       "parameter_unknown")
    if params.get("mode") not in ("payment", "subscription", "setup"):
        raise _Refusal(400, "invalid_request_error", "Missing required param: mode.", "mode", "parameter_missing")
    if not str(params.get("success_url", "")).startswith(("http://", "https://")):
        raise _Refusal(400, "invalid_request_error", "Not a valid URL", "success_url", "url_invalid")
    items = params.get("line_items")
    if not isinstance(items, list) or not items:
        raise _Refusal(400, "invalid_request_error", "You must provide at least one line item.", "line_items")
    total, currency = 0, None
    for index, item in enumerate(items):
        price = item.get("price_data") if isinstance(item, dict) else None
        if not isinstance(price, dict) or not isinstance(price.get("product_data"), dict) \
                or not price["product_data"].get("name"):
            raise _Refusal(400, "invalid_request_error", "Missing required param: line_items[0][price_data].",
                           f"line_items[{index}][price_data]", "parameter_missing")
        currency = str(price.get("currency", "")).lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _Refusal(400, "invalid_request_error", f"Invalid currency: {currency}",
                           f"line_items[{index}][price_data][currency]")
        total += _integer(price.get("unit_amount"), f"line_items[{index}][price_data][unit_amount]") * \
            _integer(item.get("quantity"), f"line_items[{index}][quantity]", 1)
    if total < _MINIMUM.get(currency or "", 50):
        raise _Refusal(400, "invalid_request_error", "The Checkout Session's total amount due must add up to at "
                       "least $0.50 usd", None, "amount_too_small")
    expires_at = _integer(params.get("expires_at", str(now + 86_400)), "expires_at")
    if not now + 1800 <= expires_at <= now + 86_400:
        raise _Refusal(400, "invalid_request_error", "The `expires_at` timestamp must be between 30 minutes and 24 "
                       "hours from Checkout Session creation.", "expires_at")
    if len(str(params.get("client_reference_id", ""))) > 200:
        raise _Refusal(400, "invalid_request_error", "Too long", "client_reference_id")
    return {"currency": currency, "amount_total": total, "expires_at": expires_at}


async def _create(request: web.Request) -> web.Response:
    knobs = request.app[KNOBS]
    try:
        if (status := knobs.get("fail_with")) is not None:
            raise _Refusal(status, "api_error", "An unknown error occurred")
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(key.encode(), SECRET_KEY.encode()):
            raise _Refusal(401, "invalid_request_error", f"Invalid API Key provided: {key[:8]}****")
        if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            raise _Refusal(400, "invalid_request_error", "Invalid request: unsupported Content-Type")
        raw = await request.read()
        params = _nest(parse_qsl(raw.decode(), keep_blank_values=True))
        idempotency_key = request.headers.get("Idempotency-Key")
        replay = request.app[IDEMPOTENCY].get(idempotency_key) if idempotency_key else None
        if replay is not None:
            if replay[0] != raw:
                raise _Refusal(400, "idempotency_error", "Keys for idempotent requests can only be used with the "
                               "same parameters they were first used with.")
            return web.json_response(replay[1], headers={"Idempotent-Replayed": "true"})
        now = int(time.time())
        checked = _check(params, now)
    except _Refusal as refusal:
        return web.json_response(refusal.body, status=refusal.status)
    session_id = "cs_test_" + secrets.token_hex(24)
    session = {
        "id": session_id, "object": "checkout.session", "livemode": False, "mode": params["mode"],
        "amount_subtotal": checked["amount_total"], "amount_total": checked["amount_total"],
        "currency": checked["currency"], "client_reference_id": params.get("client_reference_id"),
        "metadata": params.get("metadata", {}), "success_url": params["success_url"],
        "cancel_url": params.get("cancel_url"), "created": now, "expires_at": checked["expires_at"],
        "payment_status": "unpaid", "status": "open", "url": f"{request.url.origin()}/c/pay/{session_id}",
    }
    request.app[SESSIONS][session_id] = session
    if idempotency_key:
        request.app[IDEMPOTENCY][idempotency_key] = (raw, session)
    return web.json_response(session)


def create_app() -> web.Application:
    app = web.Application()
    app[SESSIONS] = {}
    app[IDEMPOTENCY] = {}
    app.router.add_post("/v1/checkout/sessions", _create)
    return app


def signature_header(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` as Stripe computes it for ``payload`` (see the module docstring)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def event(kind: str, session: dict[str, Any], **changes: Any) -> bytes:
    """A webhook payload of ``kind`` about ``session`` (a Checkout Session object), with ``changes`` applied."""
    data = {**session, **changes}
    return json.dumps({"id": "evt_" + secrets.token_hex(12), "object": "event", "api_version": "2025-01-01",
                       "created": int(time.time()), "livemode": False, "pending_webhooks": 1, "type": kind,
                       "data": {"object": data}}).encode()
