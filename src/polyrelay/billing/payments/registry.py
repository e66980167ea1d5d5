"""The providers the settings configure, by name."""

from __future__ import annotations

import aiohttp

from polyrelay.billing.payments.base import Provider
from polyrelay.billing.payments.epay import Epay
from polyrelay.billing.payments.settings import PaymentSettings
from polyrelay.billing.payments.stripe_checkout import StripeCheckout


def providers(settings: PaymentSettings, http: aiohttp.ClientSession) -> dict[str, Provider]:
    """Every configured provider; none while payments are not enabled."""
    found: dict[str, Provider] = {}
    if not settings.enabled:
        return found
    if settings.stripe is not None:
        found["stripe"] = StripeCheckout(settings.stripe, http)
    if settings.epay is not None:
        found["epay"] = Epay(settings.epay)
    return found
