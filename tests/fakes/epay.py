"""A fake 易支付 (Epay) gateway, wire-compatible with the common "彩虹易支付" deployments.

- ``GET|POST /submit.php``: the merchant's signed form (pid, type, out_trade_no, notify_url,
  return_url, name, money, sign, sign_type=MD5). The signature is checked like the real
  gateway does (MD5 of the non-empty fields but sign/sign_type, sorted, ``k=v`` joined by ``&``,
  merchant key appended). A refused form gets the real gateway's answer: an HTML page with
  the reason and status 200, and no trade. An accepted one gets the cashier page, whose
  button posts to ``/pay/{trade_no}``.
- ``POST /pay/{trade_no}``: the payer pays. The fake then calls ``notify_url`` server to server,
  a GET with pid, trade_no, out_trade_no, type, name, money, trade_status=TRADE_SUCCESS, sign
  and sign_type (it keeps every answer; the real one repeats until it reads ``success``), and
  redirects the browser (302) to ``return_url`` with the same fields.

``trades`` (knob) maps trade_no → the trade, with its ``notify_url`` as called and the answers.
Knob ``paid_money``: the money the next payment reports (a gateway that settles another amount).
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from tests.fakes.server import KNOBS

PID = "1001"
KEY = "epay-merchant-key-0123456789abcdef"
TYPES = ("alipay", "wxpay", "qqpay")


def sign(fields: dict[str, str], key: str = KEY) -> str:
    signed = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if v != "" and k not in ("sign", "sign_type"))
    return hashlib.md5((signed + key).encode()).hexdigest()


def _page(message: str) -> web.Response:
    # The real gateway answers refusals with a 200 HTML page (its "sysmsg"), not an HTTP error.
    return web.Response(text=f"<!doctype html><title>站点提示信息</title><h3>{html.escape(message)}</h3>",
                        content_type="text/html")


def _refusal(fields: dict[str, str], trades: dict[str, dict[str, Any]]) -> str | None:
    for name in ("pid", "type", "out_trade_no", "notify_url", "name", "money", "sign"):
        if not fields.get(name):
            return f"{name}不能为空"
    if fields["pid"] != PID:
        return "商户不存在"
    if fields.get("sign_type", "MD5") != "MD5" or sign(fields) != fields["sign"]:
        return "签名校验失败，请返回重试！"
    if fields["type"] not in TYPES:
        return "支付方式(type)不存在"
    if not re.fullmatch(r"\d+(\.\d{1,2})?", fields["money"]) or float(fields["money"]) <= 0:
        return "金额不合法"
    for url in ("notify_url", "return_url"):
        if fields.get(url) and not fields[url].startswith(("http://", "https://")):
            return f"{url}不合法"
    if any(t["out_trade_no"] == fields["out_trade_no"] for t in trades.values()):
        return "该订单号已存在，请勿重复提交"
    return None


async def _submit(request: web.Request) -> web.Response:
    fields = dict(request.query)
    if request.method == "POST":
        fields.update(parse_qsl((await request.read()).decode(), keep_blank_values=True))
    trades = request.app[KNOBS].setdefault("trades", {})
    refusal = _refusal(fields, trades)
    if refusal:
        request.app[KNOBS].setdefault("refusals", []).append(refusal)
        return _page(refusal)
    trade_no = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(4)
    trades[trade_no] = {**fields, "trade_no": trade_no, "status": "unpaid", "notify_answers": []}
    return web.Response(content_type="text/html", text=(
        f"<!doctype html><title>收银台</title><p>订单 {html.escape(fields['out_trade_no'])} "
        f"¥{html.escape(fields['money'])}</p><form method='post' action='/pay/{trade_no}'>"
        "<button type='submit'>确认支付</button></form>"))


async def _pay(request: web.Request) -> web.Response:
    knobs = request.app[KNOBS]
    trade = knobs.get("trades", {}).get(request.match_info["trade_no"])
    if trade is None:
        return _page("订单不存在")
    trade["status"] = "paid"
    reported = {"pid": trade["pid"], "trade_no": trade["trade_no"], "out_trade_no": trade["out_trade_no"],
                "type": trade["type"], "name": trade["name"], "money": knobs.pop("paid_money", trade["money"]),
                "trade_status": "TRADE_SUCCESS"}
    query = urlencode({**reported, "sign": sign(reported), "sign_type": "MD5"})
    trade["notify_url_called"] = f"{trade['notify_url']}?{query}"
    async with aiohttp.ClientSession() as session, session.get(trade["notify_url_called"]) as answer:
        trade["notify_answers"].append((answer.status, await answer.text()))
    if not trade.get("return_url"):
        return _page("支付成功")
    raise web.HTTPFound(f"{trade['return_url']}?{query}")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_route("GET", "/submit.php", _submit)
    app.router.add_route("POST", "/submit.php", _submit)
    app.router.add_post("/pay/{trade_no}", _pay)
    return app
