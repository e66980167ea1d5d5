"""Top-up by payment (issue 17): Stripe Checkout and Epay against wire-accurate fakes, on both backends.

Orders are placed through the console API as a signed-in user; the gateway creates Stripe
Checkout Sessions with the official ``stripe`` package against ``tests.fakes.stripe_api``, and
hands out Epay forms the fake ``tests.fakes.epay`` gateway accepts, pays and notifies. Webhook
deliveries are signed here exactly as Stripe signs them. What a user would notice is checked: the
balance and the ledger move once per paid order, however often, concurrently or late the
notification comes, and not at all for a forged, tampered, mismatched or expired one.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import stripe
from sqlalchemy import text

from tests.conftest import Gateway
from tests.fakes import epay as epay_fake
from tests.fakes import stripe_api
from tests.fakes.server import FakeServer

ADMIN_KEY = "admin-key-payments-0123456789"
XHR = {"X-Requested-With": "fetch"}
SECRETS = (stripe_api.SECRET_KEY, stripe_api.WEBHOOK_SECRET, epay_fake.KEY)


@dataclass
class Site:
    gateway: Gateway
    admin: httpx.Client
    stripe: FakeServer
    epay: FakeServer

    def user(self, name: str) -> tuple[int, httpx.Client]:
        created = self.admin.post("/api/users", json={"name": name, "password": f"{name}-password"})
        assert created.status_code == 201, created.text
        client = httpx.Client(base_url=self.gateway.url, headers=XHR, timeout=60)
        assert client.post("/api/auth/login", json={"name": name, "password": f"{name}-password"}).status_code == 200
        return created.json()["id"], client

    def balance(self, user_id: int) -> int:
        return self.admin.get(f"/api/users/{user_id}").json()["balance_micros"]

    def ledger(self, user_id: int) -> list[dict[str, Any]]:
        return self.admin.get(f"/api/users/{user_id}/ledger").json()["data"]

    def order(self, order_id: int) -> dict[str, Any]:
        found = self.admin.get("/api/orders", params={"limit": 1000}).json()["data"]
        return next(o for o in found if o["id"] == order_id)

    def deliver(self, payload: bytes, header: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        headers["Stripe-Signature"] = stripe_api.signature_header(payload) if header is None else header
        return httpx.post(self.gateway.url + "/api/payments/stripe/webhook", content=payload, headers=headers,
                          timeout=30)

    def session_of(self, order: dict[str, Any]) -> dict[str, Any]:
        return self.stripe.app[stripe_api.SESSIONS][order["provider_ref"]]


@pytest.fixture(scope="module")
def site(gateway_factory: Callable[..., Gateway]) -> Iterator[Site]:
    stripe_fake = FakeServer(stripe_api.create_app()).start()
    epay_server = FakeServer(epay_fake.create_app()).start()
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "payments": {
            "enabled": True,
            "currency_rate": {"usd": 1.0, "cny": 0.14},
            "min_usd": 1, "max_usd": 1000,
            "bonus_tiers": [{"from": 50, "bonus_percent": 10}],
            "stripe": {"secret_key": stripe_api.SECRET_KEY, "webhook_secret": stripe_api.WEBHOOK_SECRET,
                       "api_base": stripe_fake.url},
            "epay": {"url": epay_server.url, "pid": epay_fake.PID, "key": epay_fake.KEY},
        },
        # Sign-up by invitation, so a paying invitee earns their inviter a share of the first top-up.
        "signup": {"mode": "invite-only", "require_email_verification": False, "deny_disposable": False},
        "invitations": {"reward_share_of_first_topup": 0.1},
    })
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
    yield Site(gateway, admin, stripe_fake, epay_server)
    stripe_fake.stop()
    epay_server.stop()


def place(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/me/orders", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_options_show_providers_rates_and_tiers_and_no_secret(site: Site) -> None:
    _, client = site.user("opal")
    options = client.get("/api/me/topup/options")
    assert options.status_code == 200
    body = options.json()
    assert body["enabled"] is True
    assert {p["name"]: (p["currency"], p["methods"], p["rate"]) for p in body["providers"]} == {
        "stripe": ("usd", ["card"], 1.0), "epay": ("cny", ["alipay", "wxpay"], 0.14)}
    assert body["bonus_tiers"] == [{"from": 50.0, "bonus_percent": 10.0}]
    assert not any(secret in options.text for secret in SECRETS)


def test_a_stripe_order_goes_through_the_official_package_with_its_bonus_fixed_on_the_order(site: Site) -> None:
    _, client = site.user("pia")
    placed = place(client, provider="stripe", amount="60.00")
    order = placed["order"]
    assert re.fullmatch(r"PR\d{14}[0-9a-f]{24}", order["order_no"])
    assert (order["status"], order["amount_minor"], order["currency"]) == ("pending", 6000, "usd")
    assert (order["credit_micros"], order["bonus_micros"]) == (66_000_000, 6_000_000)  # 60 USD + 10 %
    session = site.session_of(order)
    assert placed["checkout"]["redirect_url"] == session["url"]
    assert (session["amount_total"], session["currency"], session["client_reference_id"]) == (
        6000, "usd", order["order_no"])
    sent = site.stripe.last("/v1/checkout/sessions")
    assert sent.headers["Idempotency-Key"] == order["order_no"]  # a retried create cannot make a second session
    assert sent.headers["Authorization"] == f"Bearer {stripe_api.SECRET_KEY}" and sent.headers.get("Stripe-Version")
    fields = dict(parse_qsl(sent.body.decode()))
    assert fields["success_url"].endswith(f"/api/payments/return?order={order['order_no']}")
    assert fields["line_items[0][price_data][unit_amount]"] == "6000"
    assert int(fields["expires_at"]) >= time.time() + 1800


def test_a_paid_event_credits_once_however_often_it_is_delivered(site: Site) -> None:
    user_id, client = site.user("quin")
    order = place(client, provider="stripe", amount=10)["order"]
    payload = stripe_api.event("checkout.session.completed", site.session_of(order), payment_status="paid",
                               status="complete")
    first = site.deliver(payload)
    assert first.status_code == 200 and first.json()["outcome"] == "credited"
    assert site.balance(user_id) == 10_000_000
    for _ in range(2):  # Stripe redelivers; an attacker replays what he caught, with its signature or a new one
        again = site.deliver(payload)
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert site.balance(user_id) == 10_000_000
    entries = site.ledger(user_id)
    assert [(e["kind"], e["amount_micros"], e["request_id"]) for e in entries] == [
        ("topup", 10_000_000, f"order-{order['id']}")]
    paid = site.order(order["id"])
    assert paid["status"] == "paid" and paid["paid_at"] and paid["provider_ref"] == order["provider_ref"]
    assert client.get("/api/me").json()["available_micros"] == 10_000_000  # the relay's snapshot knows at once


def test_an_invitees_first_paid_order_earns_the_inviter_a_share_of_what_was_paid_once(site: Site) -> None:
    inviter_id, inviter = site.user("ivo")
    code = inviter.get("/api/me/invite").json()["code"]
    joined = httpx.post(site.gateway.url + "/api/auth/signup", timeout=30, json={
        "name": "iris", "email": "iris@example.org", "password": "iris-password", "invite_code": code})
    assert joined.status_code == 201, joined.text
    invitee = httpx.Client(base_url=site.gateway.url, headers=XHR, timeout=60)
    assert invitee.post("/api/auth/login", json={"name": "iris", "password": "iris-password"}).status_code == 200
    first = place(invitee, provider="stripe", amount="60.00")["order"]  # 60 USD paid, 6 USD of it bonus
    paid = stripe_api.event("checkout.session.completed", site.session_of(first), payment_status="paid",
                            status="complete")
    assert site.deliver(paid).json()["outcome"] == "credited"
    assert site.deliver(paid).json()["outcome"] == "duplicate"
    second = place(invitee, provider="stripe", amount=10)["order"]
    assert site.deliver(stripe_api.event("checkout.session.completed", site.session_of(second),
                                         payment_status="paid", status="complete")).json()["outcome"] == "credited"
    assert inviter.get("/api/me/invite").json()["affiliate_micros"] == 6_000_000  # a tenth of 60, once
    assert site.balance(inviter_id) == 0  # until the inviter moves it


def test_concurrent_duplicate_deliveries_credit_once(site: Site) -> None:
    user_id, client = site.user("ravi")
    order = place(client, provider="stripe", amount="5.50")["order"]
    payload = stripe_api.event("checkout.session.completed", site.session_of(order), payment_status="paid")
    header = stripe_api.signature_header(payload)
    answers: list[str] = []
    start = threading.Barrier(8)

    def deliver() -> None:
        start.wait()
        answers.append(site.deliver(payload, header).json()["outcome"])

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == ["credited"] + ["duplicate"] * 7
    assert site.balance(user_id) == 5_500_000
    assert len(site.ledger(user_id)) == 1


def test_forged_tampered_stale_or_oversized_events_credit_nothing(site: Site) -> None:
    user_id, client = site.user("sol")
    order = place(client, provider="stripe", amount=20)["order"]
    payload = stripe_api.event("checkout.session.completed", site.session_of(order), payment_status="paid")
    header = stripe_api.signature_header(payload)
    tampered = payload.replace(b'"amount_total": 2000', b'"amount_total": 200000')
    assert tampered != payload
    for body, signature in ((tampered, header),  # the body changed after Stripe signed it
                            (payload, stripe_api.signature_header(payload, "whsec_someone_else")),
                            (payload, ""),
                            (payload, "t=1,v1=deadbeef"),
                            (payload, stripe_api.signature_header(payload, timestamp=int(time.time()) - 3600))):
        refused = site.deliver(body, signature)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_signature"
    huge = site.deliver(b"{" + b" " * 300_000 + b"}")
    assert huge.status_code == 413
    assert site.balance(user_id) == 0 and site.ledger(user_id) == []
    assert site.order(order["id"])["status"] == "pending"


def test_a_different_amount_or_currency_credits_nothing_and_is_kept_for_review(site: Site) -> None:
    user_id, client = site.user("tara")
    for changes in ({"amount_total": 100}, {"currency": "eur"}):
        order = place(client, provider="stripe", amount=30)["order"]
        payload = stripe_api.event("checkout.session.completed", site.session_of(order), payment_status="paid",
                                   **changes)
        answer = site.deliver(payload)
        assert answer.status_code == 200 and answer.json()["outcome"] == "review"  # acknowledged: no retry storm
        reviewed = site.order(order["id"])
        assert reviewed["status"] == "review" and "for an order of 30.00 USD" in reviewed["note"]
    assert site.balance(user_id) == 0 and site.ledger(user_id) == []
    in_review = site.admin.get("/api/orders", params={"status": "review", "user_id": user_id}).json()["data"]
    assert len(in_review) == 2
    assert f"order {order['order_no']} not credited" in site.gateway.logs()


def test_an_administrator_credits_or_dismisses_an_order_in_review_once(site: Site) -> None:
    user_id, client = site.user("tess")
    orders = []
    for _ in range(2):
        order = place(client, provider="stripe", amount=25)["order"]
        site.deliver(stripe_api.event("checkout.session.completed", site.session_of(order), payment_status="paid",
                                      amount_total=2400))
        orders.append(order)
    credit, dismiss = (f"/api/orders/{o['id']}/resolve" for o in orders)
    resolved = site.admin.post(credit, json={"action": "credit", "amount_micros": 24_000_000, "note": "paid 24"})
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "paid" and resolved.json()["note"].endswith("credited by admin:admin: paid 24")
    assert site.admin.post(credit, json={"action": "credit"}).status_code == 409  # once
    assert site.admin.post(dismiss, json={"action": "dismiss", "note": "refunded"}).json()["status"] == "failed"
    assert site.admin.post(dismiss, json={"action": "credit"}).status_code == 409
    assert client.post(credit, json={"action": "credit"}).status_code == 403  # users cannot decide
    assert site.balance(user_id) == 24_000_000
    assert [(e["request_id"], e["amount_micros"]) for e in site.ledger(user_id)] == [
        (f"order-{orders[0]['id']}", 24_000_000)]


def test_money_for_an_expired_order_is_not_credited_but_kept_for_review(site: Site) -> None:
    user_id, client = site.user("uli")
    order = place(client, provider="stripe", amount=15)["order"]
    with site.gateway.db.begin() as connection:  # the order's time runs out
        connection.execute(text("UPDATE payment_orders SET expires_at = created_at WHERE id = :id"),
                           {"id": order["id"]})
    mine = client.get("/api/me/orders", params={"status": "expired"}).json()["data"]
    assert [o["id"] for o in mine] == [order["id"]]
    payload = stripe_api.event("checkout.session.completed", site.session_of(order), payment_status="paid")
    assert site.deliver(payload).json()["outcome"] == "review"
    assert site.balance(user_id) == 0
    late = site.order(order["id"])
    assert late["status"] == "review" and late["note"] == "paid after the order expired"


def test_an_unpaid_completion_waits_for_the_async_payment_and_expiry_is_recorded(site: Site) -> None:
    user_id, client = site.user("vera")
    order = place(client, provider="stripe", amount=8)["order"]
    session = site.session_of(order)
    waiting = site.deliver(stripe_api.event("checkout.session.completed", session, payment_status="unpaid"))
    assert waiting.json()["outcome"] == "ignored" and site.balance(user_id) == 0
    settled = site.deliver(stripe_api.event("checkout.session.async_payment_succeeded", session,
                                            payment_status="paid"))
    assert settled.json()["outcome"] == "credited" and site.balance(user_id) == 8_000_000
    abandoned = place(client, provider="stripe", amount=9)["order"]
    site.deliver(stripe_api.event("checkout.session.expired", site.session_of(abandoned), status="expired"))
    assert site.order(abandoned["id"])["status"] == "expired"


def test_a_refused_checkout_fails_the_order_and_tells_the_user(site: Site) -> None:
    _, client = site.user("wim")
    site.stripe.knobs["fail_with"] = 500
    try:
        refused = client.post("/api/me/orders", json={"provider": "stripe", "amount": 12})
    finally:
        del site.stripe.knobs["fail_with"]
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "payment_provider_error"
    assert not any(secret in refused.text for secret in SECRETS)
    assert [o["status"] for o in client.get("/api/me/orders").json()["data"]] == ["failed"]
    assert "Stripe refused the checkout: APIError (HTTP 500)" in site.gateway.logs()


@pytest.fixture(scope="module")
def shopper(site: Site) -> httpx.Client:
    return site.user("xan")[1]


@pytest.mark.parametrize("body, message", [
    ({"provider": "stripe", "amount": "0.50"}, "from 1.00 to 1000.00 USD"),
    ({"provider": "stripe", "amount": 1000.01}, "from 1.00 to 1000.00 USD"),
    ({"provider": "stripe", "amount": "1.001"}, "at most two decimals"),
    ({"provider": "stripe", "amount": "NaN"}, "positive"),
    ({"provider": "stripe", "amount": "1e999999999"}, "below 10^12"),
    ({"provider": "paypal", "amount": 5}, "'provider' must be one of stripe, epay"),
    ({"provider": "epay", "method": "bitcoin", "amount": 50}, "'method' must be one of alipay, wxpay"),
    ({"provider": "epay", "amount": 5, "bonus": 1}, "Unknown field(s): bonus"),
])
def test_an_order_outside_the_rules_is_refused(shopper: httpx.Client, body: dict[str, Any], message: str) -> None:
    refused = shopper.post("/api/me/orders", json=body)
    assert refused.status_code == 400 and message in refused.json()["error"]["message"], refused.text


def test_the_fake_stripe_refuses_what_stripe_refuses_to_the_official_client(site: Site) -> None:
    def client(key: str) -> stripe.StripeClient:
        return stripe.StripeClient(key, base_addresses={"api": site.stripe.url}, max_network_retries=0)

    line = {"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "x"}}}
    good = {"mode": "payment", "line_items": [line], "success_url": "https://example.com/ok",
            "expires_at": int(time.time()) + 3600}
    assert client(stripe_api.SECRET_KEY).v1.checkout.sessions.create(good).url  # type: ignore[arg-type]
    with pytest.raises(stripe.AuthenticationError):
        client("sk_test_not_the_key").v1.checkout.sessions.create(good)  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError) as soon:
        client(stripe_api.SECRET_KEY).v1.checkout.sessions.create(  # type: ignore[arg-type]
            {**good, "expires_at": int(time.time()) + 60})
    assert soon.value.param == "expires_at"
    with pytest.raises(stripe.InvalidRequestError) as small:
        client(stripe_api.SECRET_KEY).v1.checkout.sessions.create(  # type: ignore[arg-type]
            {**good, "line_items": [{**line, "price_data": {**line["price_data"], "unit_amount": 10}}]})
    assert small.value.code == "amount_too_small"


def _submit(site: Site, checkout: dict[str, Any], **changes: str) -> httpx.Response:
    form = checkout["form"]
    assert form["method"] == "POST" and form["action"] == site.epay.url + "/submit.php"
    return httpx.post(form["action"], data={**form["fields"], **changes}, timeout=30)


def _trade_of(site: Site, order_no: str) -> dict[str, Any]:
    return next(t for t in site.epay.knobs["trades"].values() if t["out_trade_no"] == order_no)


def test_an_epay_order_is_paid_through_the_gateway_notified_and_credited_once(site: Site) -> None:
    user_id, client = site.user("yara")
    placed = place(client, provider="epay", method="alipay", amount="100")
    order = placed["order"]
    assert (order["amount"], order["currency"], order["credit_micros"]) == ("100.00", "cny", 14_000_000)
    fields = placed["checkout"]["form"]["fields"]
    assert (fields["pid"], fields["type"], fields["money"], fields["sign_type"]) == (epay_fake.PID, "alipay",
                                                                                   "100.00", "MD5")
    assert fields["notify_url"] == site.gateway.url + "/api/payments/epay/notify"
    cashier = _submit(site, placed["checkout"])
    assert cashier.status_code == 200 and "确认支付" in cashier.text
    trade = _trade_of(site, order["order_no"])
    paid = httpx.post(f"{site.epay.url}/pay/{trade['trade_no']}", timeout=30)
    assert paid.status_code == 302
    assert trade["notify_answers"] == [(200, "success")]
    assert site.balance(user_id) == 14_000_000
    assert [(e["kind"], e["request_id"]) for e in site.ledger(user_id)] == [("topup", f"order-{order['id']}")]
    assert site.order(order["id"])["provider_ref"] == trade["trade_no"]
    for method in ("GET", "POST"):  # the gateway repeats its notification; the same fields as a form as well
        url, _, query = trade["notify_url_called"].partition("?")
        again = httpx.get(trade["notify_url_called"]) if method == "GET" else httpx.post(
            url, content=query, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (again.status_code, again.text) == (200, "success")
    assert site.balance(user_id) == 14_000_000 and len(site.ledger(user_id)) == 1
    back = httpx.get(paid.headers["location"])  # the browser's return: to the console, crediting nothing
    assert back.status_code == 303 and back.headers["location"] == f"/#/topup?order={order['order_no']}"
    assert urlsplit(paid.headers["location"]).path == "/api/payments/return"


def test_epay_notifications_with_a_wrong_sign_credit_nothing(site: Site) -> None:
    user_id, client = site.user("zeno")
    placed = place(client, provider="epay", method="wxpay", amount=50)
    order = placed["order"]
    _submit(site, placed["checkout"])
    trade = _trade_of(site, order["order_no"])
    notify = site.gateway.url + "/api/payments/epay/notify"
    honest = {"pid": epay_fake.PID, "trade_no": trade["trade_no"], "out_trade_no": order["order_no"],
              "type": "wxpay", "name": trade["name"], "money": "50.00", "trade_status": "TRADE_SUCCESS"}
    forged = [
        {**honest, "money": "5000.00", "sign": epay_fake.sign(honest), "sign_type": "MD5"},  # changed after signing
        {**honest, "sign": epay_fake.sign(honest, "not-the-merchant-key"), "sign_type": "MD5"},
        {**honest, "sign_type": "MD5"},
        {**honest, "pid": "2002", "sign": epay_fake.sign({**honest, "pid": "2002"}), "sign_type": "MD5"},
    ]
    for fields in forged:
        refused = httpx.get(notify, params=fields)
        assert (refused.status_code, refused.text) == (400, "fail")
    assert site.balance(user_id) == 0 and site.order(order["id"])["status"] == "pending"
    site.epay.knobs["paid_money"] = "0.50"  # a gateway that reports another amount than was ordered
    httpx.post(f"{site.epay.url}/pay/{trade['trade_no']}", timeout=30)
    assert trade["notify_answers"] == [(200, "success")]
    assert site.balance(user_id) == 0 and site.order(order["id"])["status"] == "review"


def test_the_fake_epay_refuses_a_form_with_a_wrong_sign(site: Site) -> None:
    _, client = site.user("abe")
    placed = place(client, provider="epay", method="alipay", amount=10)
    refused = _submit(site, placed["checkout"], money="0.01")
    assert refused.status_code == 200 and "签名校验失败" in refused.text
    assert not any(t["out_trade_no"] == placed["order"]["order_no"] for t in site.epay.knobs.get("trades", {}).values())


def test_orders_are_visible_to_their_user_and_the_admin_only(site: Site) -> None:
    ann_id, ann = site.user("ann")
    _, ben = site.user("ben")
    placed = place(ann, provider="stripe", amount=3)["order"]
    assert [o["id"] for o in ann.get("/api/me/orders").json()["data"]] == [placed["id"]]
    assert ben.get("/api/me/orders").json()["data"] == []
    assert ben.get("/api/orders").status_code == 403
    by_user = site.admin.get("/api/orders", params={"user_id": ann_id, "status": "pending"}).json()["data"]
    assert [o["order_no"] for o in by_user] == [placed["order_no"]]
    assert site.admin.get("/api/orders", params={"status": "lost"}).status_code == 400
    landing = httpx.get(site.gateway.url + "/api/payments/return", params={"order": "javascript:alert(1)"})
    assert landing.headers["location"] == "/#/topup"  # only an order number passes into the redirect


def test_no_payment_secret_reaches_the_log(site: Site) -> None:
    logs = site.gateway.logs()
    assert "credited" in logs  # the log does record what happened to each notice
    assert not any(secret in logs for secret in SECRETS)
