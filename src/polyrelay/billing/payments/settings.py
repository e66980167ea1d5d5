"""The ``payments:`` block of the settings (docs/platform.md, "Payments").

Every threshold (``min_usd``, ``max_usd``, a bonus tier's ``from``) is in credit USD before the
bonus, so one scale serves every currency; ``currency_rate`` turns a paid amount into that scale.
Secrets are ``SecretStr``: printing the settings shows ``**********``, never the value.
"""

from __future__ import annotations

import re

from polyrelay.urls import HttpUrl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# Stripe counts these currencies in whole units, not hundredths; orders here are in hundredths.
ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
                          "xaf", "xof", "xpf"})
_CURRENCY = re.compile(r"[a-z]{3}")


class StripeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret_key: SecretStr = Field(description="sk_live_... or sk_test_... (a restricted key may do: Checkout write).")
    webhook_secret: SecretStr = Field(description="whsec_... of the endpoint /api/payments/stripe/webhook.")
    currency: str = Field(default="usd", description="What Checkout charges in; needs a currency_rate.")
    api_base: HttpUrl = Field(default="https://api.stripe.com", description="Only for tests: a fake Stripe.")

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        value = value.lower()
        if not _CURRENCY.fullmatch(value) or value in ZERO_DECIMAL:
            raise ValueError("must be a three-letter currency with hundredths (not jpy, krw, ...)")
        return value


class EpaySettings(BaseModel):
    """An 易支付 (Epay) merchant: the gateway's base URL (``submit.php`` is under it), merchant id and MD5 key."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    pid: str = Field(min_length=1, max_length=64)
    key: SecretStr
    types: list[str] = Field(default=["alipay", "wxpay"], min_length=1, description="Payment types offered.")

    @field_validator("types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        if not all(re.fullmatch(r"[a-z0-9_]{1,16}", t) for t in value):
            raise ValueError("each type is 1 to 16 of a-z, 0-9, _ (e.g. alipay, wxpay, qqpay)")
        return value


class BonusTier(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_usd: float = Field(alias="from", ge=0, description="Credit USD (before bonus) from which the tier applies.")
    bonus_percent: float = Field(ge=0, le=1000)


class PaymentSettings(BaseModel):
    """Top-up by payment; off unless ``enabled`` and at least one provider is configured."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    currency_rate: dict[str, float] = Field(default={"usd": 1.0}, description="Credit USD per unit of each currency.")
    min_usd: float = Field(default=1.0, gt=0, description="Smallest order, in credit USD before bonus.")
    max_usd: float = Field(default=10_000.0, gt=0, le=1_000_000_000, description="Largest order, likewise.")
    bonus_tiers: list[BonusTier] = []
    order_ttl_s: int = Field(default=7200, ge=60, le=86_400,
                             description="An unpaid order expires after this; Stripe's own minimum is 1800.")
    public_url: HttpUrl | None = Field(default=None, description="How payment providers and browsers reach this "
                                   "gateway (https://relay.example.com); absent: the URL the order was placed on.")
    stripe: StripeSettings | None = None
    epay: EpaySettings | None = None

    @field_validator("currency_rate")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        rates = {currency.lower(): rate for currency, rate in value.items()}
        if not all(_CURRENCY.fullmatch(c) and 0 < r <= 1_000_000 for c, r in rates.items()):
            raise ValueError("keys are three-letter currencies, values credit USD per unit (0 < rate <= 1e6)")
        return rates

    @model_validator(mode="after")
    def _consistent(self) -> PaymentSettings:
        if self.min_usd > self.max_usd:
            raise ValueError("payments.min_usd must not exceed payments.max_usd")
        for currency in ([self.stripe.currency] if self.stripe else []) + (["cny"] if self.epay else []):
            if currency not in self.currency_rate:
                raise ValueError(f"payments.currency_rate needs a rate for '{currency}'")
        self.bonus_tiers = sorted(self.bonus_tiers, key=lambda tier: tier.from_usd)
        return self
