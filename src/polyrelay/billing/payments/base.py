"""The interface every payment provider implements: start a checkout, read a notification."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol


# Where the browser comes back after paying: a landing page that only redirects to the console.
RETURN_PATH = "/api/payments/return"


class Refused(Exception):
    """A notification that is not authentic or not well-formed: nothing is credited, the sender gets a 400."""


class CheckoutFailed(Exception):
    """The provider would not start a checkout; the message is safe to show (it carries no secret)."""


@dataclass(frozen=True, slots=True)
class OrderView:
    """What a provider needs to know of an order to charge it."""

    order_no: str
    amount_minor: int
    currency: str
    method: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Checkout:
    """Where the user's browser goes to pay: a URL to open, or a form to post."""

    redirect_url: str | None = None
    form: dict[str, object] | None = None  # {"action", "method", "fields": {...}}
    provider_ref: str | None = None  # the provider's id of the checkout, when it makes one up front


@dataclass(frozen=True, slots=True)
class Inbound:
    """A notification as it arrived: the raw body, the headers (lower-case names) and the form/query fields."""

    body: bytes
    headers: Mapping[str, str]
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notice:
    """What an authentic notification says about one order."""

    order_no: str
    event: Literal["paid", "expired", "failed"]
    provider_ref: str
    amount_minor: int | None = None
    currency: str | None = None


class Provider(Protocol):
    name: str
    currency: str
    methods: tuple[str, ...]

    async def checkout(self, order: OrderView, public_url: str) -> Checkout:
        """Start paying ``order``; ``public_url`` is how the provider and the browser reach this gateway."""
        ...

    def verify(self, inbound: Inbound) -> Notice | None:
        """The notice of an authentic notification (None: authentic, but about nothing this gateway acts on);
        raises ``Refused`` before reading anything else when the signature does not hold."""
        ...
