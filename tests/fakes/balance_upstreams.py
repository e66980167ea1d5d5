"""The balance endpoints of four upstreams on one server (run it under ``FakeServer``), answering and
refusing like they do. Each checks ``Authorization: Bearer <key>`` against the key it was created with.

- OpenRouter ``GET /api/v1/credits`` → ``{"data": {"total_credits", "total_usage"}}`` (USD numbers);
  a bad key: 401 ``{"error": {"code": 401, "message": "No auth credentials found"}}``.
- DeepSeek ``GET /user/balance`` → ``{"is_available", "balance_infos": [{"currency", "total_balance",
  "granted_balance", "topped_up_balance"}]}`` (amounts as strings); a bad key: 401
  ``{"error": {"message": "Authentication Fails, Your api key: ****abcd is invalid", "type": "authentication_error"}}``.
- SiliconFlow ``GET /v1/user/info`` → ``{"code": 20000, "message": "OK", "status": true, "data": {..., "balance",
  "chargeBalance", "totalBalance"}}`` (CNY strings); a bad key: 401 ``"Invalid token"``.
- one-api / new-api relays ``GET /v1/dashboard/billing/subscription`` → ``{"object": "billing_subscription",
  "hard_limit_usd", ...}`` and ``GET /v1/dashboard/billing/usage?start_date=YYYY-MM-DD&end_date=YYYY-MM-DD``
  → ``{"object": "list", "total_usage"}`` (US cents); both dates are required (400 otherwise); a bad
  key: 401 ``{"error": {"message": "无效的令牌", "type": "new_api_error"}}``.

Knobs: ``openrouter`` ``(credits, usage)``; ``deepseek`` a list of ``(currency, total)``; ``siliconflow``
the total; ``relay`` ``(hard_limit_usd, total_usage_cents)``; ``echo_key``: a refusal quotes the whole
key it was sent (as careless relays do), to show the gateway scrubs it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web

from tests.fakes.server import KNOBS

DEFAULTS: dict[str, Any] = {"openrouter": (100.5, 25.75), "deepseek": [("CNY", "110.00")], "siliconflow": "88.88",
                            "relay": (50.0, 1234)}
KEY = web.AppKey("key", str)


def _refused(request: web.Request, body: Any) -> web.Response | None:
    sent = request.headers.get("Authorization", "")
    if sent == f"Bearer {request.app[KEY]}":
        return None
    if request.app[KNOBS].get("echo_key"):
        body = {"error": {"message": f"invalid key {sent.removeprefix('Bearer ')}"}}
    return web.json_response(body, status=401)


def _knob(request: web.Request, name: str) -> Any:
    return request.app[KNOBS].get(name, DEFAULTS[name])


async def _openrouter(request: web.Request) -> web.Response:
    if refused := _refused(request, {"error": {"code": 401, "message": "No auth credentials found"}}):
        return refused
    credits, usage = _knob(request, "openrouter")
    return web.json_response({"data": {"total_credits": credits, "total_usage": usage}})


async def _deepseek(request: web.Request) -> web.Response:
    key = request.app[KEY]
    if refused := _refused(request, {"error": {"message": f"Authentication Fails, Your api key: ****{key[-4:]} "
                                               "is invalid", "type": "authentication_error", "param": None,
                                               "code": "invalid_request_error"}}):
        return refused
    infos = [{"currency": currency, "total_balance": total, "granted_balance": "0.00", "topped_up_balance": total}
             for currency, total in _knob(request, "deepseek")]
    return web.json_response({"is_available": bool(infos), "balance_infos": infos})


async def _siliconflow(request: web.Request) -> web.Response:
    if refused := _refused(request, "Invalid token"):
        return refused
    total = _knob(request, "siliconflow")
    return web.json_response({"code": 20000, "message": "OK", "status": True, "data": {
        "id": "userid", "name": "fake", "image": "", "email": "", "isAdmin": False, "balance": total,
        "status": "normal", "introduction": "", "role": "", "chargeBalance": "0.00", "totalBalance": total}})


async def _subscription(request: web.Request) -> web.Response:
    if refused := _refused(request, {"error": {"message": "无效的令牌", "type": "new_api_error"}}):
        return refused
    limit, _ = _knob(request, "relay")
    return web.json_response({"object": "billing_subscription", "has_payment_method": True, "soft_limit_usd": limit,
                              "hard_limit_usd": limit, "system_hard_limit_usd": limit, "access_until": 0})


async def _usage(request: web.Request) -> web.Response:
    if refused := _refused(request, {"error": {"message": "无效的令牌", "type": "new_api_error"}}):
        return refused
    try:
        start, end = (date.fromisoformat(request.query[name]) for name in ("start_date", "end_date"))
    except (KeyError, ValueError):
        return web.json_response({"error": {"message": "start_date and end_date are required (YYYY-MM-DD)"}},
                                 status=400)
    if end <= start:
        return web.json_response({"error": {"message": "end_date must be after start_date"}}, status=400)
    _, used_cents = _knob(request, "relay")
    return web.json_response({"object": "list", "total_usage": used_cents})


def create_app(key: str) -> web.Application:
    app = web.Application()
    app[KEY] = key
    app.router.add_get("/api/v1/credits", _openrouter)
    app.router.add_get("/user/balance", _deepseek)
    app.router.add_get("/v1/user/info", _siliconflow)
    app.router.add_get("/v1/dashboard/billing/subscription", _subscription)
    app.router.add_get("/v1/dashboard/billing/usage", _usage)
    return app
