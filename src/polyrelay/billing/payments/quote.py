"""What an order credits: the paid amount at the currency's rate, plus the bonus of its tier."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from polyrelay.billing.payments.settings import PaymentSettings

_HUNDREDTH = Decimal("0.01")
_LARGEST = Decimal(10**12)  # no currency's payment comes near; keeps hundredths inside a BigInteger
_MICROS_PER_MINOR = Decimal(10_000)  # 1e6 micro-USD per credit USD / 100 hundredths per unit


class QuoteError(ValueError):
    """Why an amount cannot be ordered; safe to show the user."""


@dataclass(frozen=True, slots=True)
class Quote:
    amount_minor: int  # hundredths of ``currency``
    currency: str
    credit_micros: int  # what the order credits, bonus included
    bonus_micros: int
    bonus_percent: float


def parse_amount(raw: object) -> Decimal:
    """A positive amount with at most two decimals, from a JSON number or string; refused otherwise."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)) or (isinstance(raw, str) and len(raw) > 32):
        raise QuoteError("'amount' must be a number or a decimal string such as \"10.00\".")
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise QuoteError("'amount' must be a number or a decimal string such as \"10.00\".") from None
    # The bound first: quantizing 1e999999 would overflow the decimal context.
    if not amount.is_finite() or not 0 < amount < _LARGEST or amount != amount.quantize(_HUNDREDTH):
        raise QuoteError("'amount' must be positive, below 10^12, with at most two decimals.")
    return amount


def quote(settings: PaymentSettings, currency: str, amount: Decimal) -> Quote:
    """Price ``amount`` of ``currency`` within the configured bounds; the bonus tier is the highest one reached."""
    rate = settings.currency_rate.get(currency)
    if rate is None:
        raise QuoteError(f"Payments in '{currency}' are not offered.")
    rate_decimal = Decimal(str(rate))
    base_usd = amount * rate_decimal
    if not Decimal(str(settings.min_usd)) <= base_usd <= Decimal(str(settings.max_usd)):
        low, high = (Decimal(str(v)) / rate_decimal for v in (settings.min_usd, settings.max_usd))
        raise QuoteError(f"The amount must be from {low.quantize(_HUNDREDTH)} to "
                         f"{high.quantize(_HUNDREDTH, rounding=ROUND_FLOOR)} {currency.upper()}.")
    percent = 0.0
    for tier in settings.bonus_tiers:  # sorted by from_usd
        if base_usd >= Decimal(str(tier.from_usd)):
            percent = tier.bonus_percent
    amount_minor = int(amount * 100)
    base_micros = int((amount_minor * rate_decimal * _MICROS_PER_MINOR).to_integral_value(ROUND_FLOOR))
    bonus_micros = int((base_micros * Decimal(str(percent)) / 100).to_integral_value(ROUND_FLOOR))
    return Quote(amount_minor, currency, base_micros + bonus_micros, bonus_micros, percent)


def money_text(amount_minor: int) -> str:
    """Hundredths as the decimal text providers take: 1234 → "12.34"."""
    return f"{Decimal(amount_minor).scaleb(-2):.2f}"
