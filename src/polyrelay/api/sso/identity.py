"""What a finished provider flow proves, and what the browser carries between start and callback."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """An account at a provider: its stable subject, and the e-mail address it claims (verified or not)."""

    subject: str
    email: str | None
    email_verified: bool
    username: str  # a name to start from when a user is provisioned


@dataclass(frozen=True, slots=True)
class Pending:
    """One started flow, kept in the browser's short-lived encrypted cookie until its callback."""

    provider: str
    state: str
    nonce: str
    verifier: str  # PKCE code_verifier; the provider only ever saw its S256 challenge
    redirect_uri: str
    link_user: int | None  # set when a signed-in user links another identity

    @classmethod
    def new(cls, provider: str, redirect_uri: str, link_user: int | None) -> "Pending":
        return cls(provider, secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48),
                   redirect_uri, link_user)

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
