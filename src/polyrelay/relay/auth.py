"""Caller keys: generation, hashing, and the lookup every request starts with."""

from __future__ import annotations

import ipaddress
import time

from polyrelay.errors import RelayError
from polyrelay.keys import hash_key, key_hint
from polyrelay.store.snapshot import Snapshot, TokenRecord

def authenticate(snapshot: Snapshot, key: str | None) -> TokenRecord:
    if not key:
        raise RelayError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    token = snapshot.tokens_by_hash.get(hash_key(key))
    if token is None:
        raise RelayError(401, f"Incorrect API key provided: {key_hint(key)}.", code="invalid_api_key")
    if not token.enabled:
        raise RelayError(401, "This API key is disabled.", code="invalid_api_key")
    if token.expires_at is not None and token.expires_at <= time.time():
        raise RelayError(401, "This API key has expired.", code="expired_api_key")
    if token.user is not None and not token.user.enabled:
        raise RelayError(401, "The account this API key belongs to is disabled.", code="account_disabled")
    return token


def check_client_ip(token: TokenRecord, client_ip: str) -> None:
    """Only for tokens restricted to some IPs/CIDRs (``token.allowed_ips`` is not None)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        address = None
    if address is None or not any(address in network for network in token.allowed_ips or ()):
        raise RelayError(
            403,
            f"This API key may not be used from {client_ip or 'an unknown address'}.",
            type="permission_error",
            code="ip_not_allowed",
        )


def check_model_allowed(token: TokenRecord, model: str) -> None:
    if token.models is not None and model not in token.models:
        raise RelayError(
            403,
            f"This API key is not allowed to use the model '{model}'.",
            type="permission_error",
            code="model_not_allowed",
            param="model",
        )
