"""易支付 (Epay), the MD5-signed form protocol many Chinese payment aggregators speak.

The browser posts a signed form to ``{url}/submit.php``; after payment the gateway calls
``notify_url`` server to server (a GET with the order's fields, ``trade_status=TRADE_SUCCESS``
and a fresh signature; it repeats until answered with the text ``success``) and sends the
browser to ``return_url`` with the same fields. The signature is the MD5 of the non-empty
fields except ``sign`` and ``sign_type``, sorted by name and joined as ``k=v&k=v``, with the
merchant key appended.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from polyrelay.billing.payments.base import RETURN_PATH, Checkout, Inbound, Notice, OrderView, Refused
from polyrelay.billing.payments.quote import money_text
from polyrelay.billing.payments.settings import EpaySettings

CURRENCY = "cny"  # Epay merchants are paid in yuan
_PRODUCT_NAME = "polyrelay credit"
NOTIFY_PATH = "/api/payments/epay/notify"


def sign(fields: Mapping[str, str], key: str) -> str:
    """The Epay signature of ``fields`` under the merchant ``key`` (lower-case hex MD5)."""
    signed = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if v != "" and k not in ("sign", "sign_type"))
    return hashlib.md5((signed + key).encode()).hexdigest()


class Epay:
    name = "epay"
    currency = CURRENCY

    def __init__(self, settings: EpaySettings) -> None:
        self.methods = tuple(settings.types)
        self._submit_url = settings.url + "/submit.php"
        self._pid = settings.pid
        self._key = settings.key.get_secret_value()

    async def checkout(self, order: OrderView, public_url: str) -> Checkout:
        # Both URLs without a query: Epay appends its own fields to them.
        fields = {"pid": self._pid, "type": order.method, "out_trade_no": order.order_no,
                  "notify_url": public_url + NOTIFY_PATH, "return_url": public_url + RETURN_PATH, "name": _PRODUCT_NAME,
                  "money": money_text(order.amount_minor)}
        fields.update(sign=sign(fields, self._key), sign_type="MD5")
        return Checkout(form={"action": self._submit_url, "method": "POST", "fields": fields})

    def verify(self, inbound: Inbound) -> Notice | None:
        fields = inbound.fields
        presented = fields.get("sign", "")
        if not presented or not hmac.compare_digest(sign(fields, self._key).encode(), presented.lower().encode()):
            raise Refused("the Epay signature does not match")
        if fields.get("pid") != self._pid:
            raise Refused("the notification is for another merchant")
        if fields.get("trade_status") != "TRADE_SUCCESS":
            return None
        order_no, trade_no = fields.get("out_trade_no", ""), fields.get("trade_no", "")
        if not order_no or not trade_no:
            raise Refused("out_trade_no and trade_no are required")
        try:
            paid = Decimal(fields.get("money", ""))
        except InvalidOperation:
            raise Refused("money is not a number") from None
        if not paid.is_finite() or not 0 < paid < 10**12 or paid != paid.quantize(Decimal("0.01")):
            raise Refused("money is not an amount in yuan with at most two decimals")
        return Notice(order_no[:64], "paid", trade_no[:255], int(paid * 100), CURRENCY)
