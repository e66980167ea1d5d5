"""OpenID Connect, authorization code flow with PKCE: discovery, the authorization URL, the code exchange
and the id_token check (signature against the issuer's JWKS, iss, aud/azp, exp, iat, nonce) with joserfc."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from polyrelay.api.sso.identity import Identity, Pending
from polyrelay.api.sso.remote import ProviderError, call_json
from polyrelay.api.sso.settings import SsoProvider, SsoSettings

_CACHE_S = 3600.0  # how long a discovery document and its keys are trusted before they are read again
_LEEWAY_S = 60  # clock skew allowed on exp/iat
# Asymmetric only: a symmetric (HS*) id_token would be checked with the client secret, which the provider
# shares with whoever registered the client; "none" is never accepted.
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


@dataclass(frozen=True, slots=True)
class Issuer:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    keys: KeySet
    basic_auth: bool  # client_secret_basic; else client_secret_post
    read_at: float


_issuers: dict[str, Issuer] = {}  # by provider name; per process


async def _discover(settings: SsoSettings, provider: SsoProvider, *, fresh: bool = False) -> Issuer:
    cached = _issuers.get(provider.name)
    if cached is not None and not fresh and time.monotonic() - cached.read_at < _CACHE_S:
        return cached
    assert provider.issuer is not None
    document = await call_json(settings, "discovery_failed", "GET", provider.issuer + "/.well-known/openid-configuration")
    if document.get("issuer") != provider.issuer:  # OpenID Connect Discovery 1.0, section 4.3
        raise ProviderError("discovery_failed", f"the issuer says it is {str(document.get('issuer'))[:200]!r}")
    endpoints = {}
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = document.get(key)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise ProviderError("discovery_failed", f"the discovery document has no usable {key}")
        endpoints[key] = value
    keys = await call_json(settings, "discovery_failed", "GET", endpoints["jwks_uri"])
    try:
        key_set = KeySet.import_key_set(keys)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProviderError("discovery_failed", f"the issuer's JWKS is not usable ({type(exc).__name__})") from None
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]  # the spec's default
    basic = not isinstance(methods, list) or "client_secret_basic" in methods or "client_secret_post" not in methods
    userinfo = document.get("userinfo_endpoint")
    issuer = Issuer(provider.issuer, endpoints["authorization_endpoint"], endpoints["token_endpoint"],
                    endpoints["jwks_uri"], userinfo if isinstance(userinfo, str) and userinfo.startswith(("https://", "http://")) else None,
                    key_set, basic, time.monotonic())
    _issuers[provider.name] = issuer
    return issuer


async def authorization_url(settings: SsoSettings, provider: SsoProvider, pending: Pending) -> str:
    issuer = await _discover(settings, provider)
    query = {
        "response_type": "code", "client_id": provider.client_id, "redirect_uri": pending.redirect_uri,
        "scope": provider.scope, "state": pending.state, "nonce": pending.nonce,
        "code_challenge": pending.challenge, "code_challenge_method": "S256",
    }
    separator = "&" if "?" in issuer.authorization_endpoint else "?"
    return issuer.authorization_endpoint + separator + urlencode(query)


async def identity(settings: SsoSettings, provider: SsoProvider, code: str, pending: Pending) -> Identity:
    """Exchange ``code`` (with the PKCE verifier) and return who the verified id_token names."""
    issuer = await _discover(settings, provider)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier}
    secret = provider.client_secret.get_secret_value()
    headers = {}
    if issuer.basic_auth:  # RFC 6749 2.3.1: both parts form-encoded, then Basic
        pair = f"{quote(provider.client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    else:
        form |= {"client_id": provider.client_id, "client_secret": secret}
    answer = await call_json(settings, "token_exchange_failed", "POST", issuer.token_endpoint, form=form,
                             headers=headers)
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or len(id_token) > 64 * 1024:
        raise ProviderError("invalid_id_token", "the token answer has no id_token")
    try:
        token = jwt.decode(id_token, issuer.keys, algorithms=_ALGORITHMS)
    except JoseError:
        # The issuer may have rotated its keys since they were read: read them once more, then give up.
        issuer = await _discover(settings, provider, fresh=True)
        token = _decode(id_token, issuer.keys)
    claims = _checked(token.claims, issuer.issuer, provider.client_id, pending.nonce)
    if "email" not in claims and issuer.userinfo_endpoint and isinstance(answer.get("access_token"), str):
        # Many issuers put scope claims in the UserInfo answer only (OIDC Core 5.4).
        claims = {**claims, **await _userinfo(settings, issuer.userinfo_endpoint, answer["access_token"], claims["sub"])}
    email = claims.get("email")
    email = email.strip().lower() if isinstance(email, str) and 0 < len(email.strip()) <= 254 else None
    username = claims.get("preferred_username") or (email or "").split("@")[0] or "user"
    return Identity(str(claims["sub"]), email, claims.get("email_verified") is True, str(username))


async def _userinfo(settings: SsoSettings, url: str, access_token: str, subject: str) -> dict[str, Any]:
    info = await call_json(settings, "profile_failed", "GET", url, headers={"Authorization": f"Bearer {access_token}"})
    if info.get("sub") != subject:  # OIDC Core 5.3.4: otherwise the answer is about someone else
        raise ProviderError("profile_failed", "the UserInfo answer is about another subject")
    return {key: info[key] for key in ("email", "email_verified", "preferred_username") if key in info}


def _decode(id_token: str, keys: KeySet) -> jwt.Token:
    try:
        return jwt.decode(id_token, keys, algorithms=_ALGORITHMS)
    except JoseError as exc:
        raise ProviderError("invalid_id_token", f"the id_token's signature does not verify ({exc.error})") from None


def _checked(claims: dict[str, Any], issuer: str, client_id: str, nonce: str) -> dict[str, Any]:
    registry = jwt.JWTClaimsRegistry(
        leeway=_LEEWAY_S, iss={"essential": True, "value": issuer}, aud={"essential": True, "value": client_id},
        sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise ProviderError("invalid_id_token", f"the id_token is not valid here ({exc.error}: {exc.description})") from None
    audience = claims["aud"]
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:  # OIDC Core 3.1.3.7
        raise ProviderError("invalid_id_token", "the id_token names other audiences and is not authorized for us")
    if not isinstance(claims["sub"], str) or not 0 < len(claims["sub"]) <= 255:
        raise ProviderError("invalid_id_token", "the id_token's sub is not a string of 1 to 255 characters")
    return claims
