"""A small OpenID Connect issuer that can lie: the real provider (tests/oidc, panva/oidc-provider) signs only
honest id_tokens, so the refusals of dishonest ones are tested here. Discovery, JWKS, an authorize endpoint
that approves at once (as the account in the knob ``account``) and a token endpoint that holds the client to
client_secret_basic, one-time codes, the redirect URI and PKCE (S256), as a real issuer does.

The knob ``forge`` (a dict) overrides claims of the next id_tokens (``aud``, ``nonce``, ``iss``, ``exp``...);
``sign_with`` = "stranger" signs them with a key the JWKS does not hold, "hs256" with the client secret;
``deny`` makes the authorize endpoint answer as when the person cancels.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from tests.fakes.server import KNOBS

CLIENT_ID = "forge-client"
CLIENT_SECRET = "forge-client-secret-0123456789"
_KEY = RSAKey.generate_key(2048, parameters={"kid": "forge-1", "use": "sig", "alg": "RS256"})
_STRANGER = RSAKey.generate_key(2048, parameters={"kid": "forge-1", "use": "sig", "alg": "RS256"})


def create_app() -> web.Application:
    app = web.Application()
    app[KNOBS] = {"account": {"sub": "forge-bob", "email": "bob@example.com", "email_verified": True}, "forge": {}}
    codes: dict[str, dict[str, Any]] = {}

    def issuer(request: web.Request) -> str:
        return f"http://{request.host}"

    async def discovery(request: web.Request) -> web.Response:
        base = issuer(request)
        return web.json_response({
            "issuer": base, "authorization_endpoint": base + "/authorize", "token_endpoint": base + "/token",
            "jwks_uri": base + "/jwks", "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        })

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(KeySet([_KEY]).as_dict(private=False))

    async def authorize(request: web.Request) -> web.Response:
        query = request.query
        if query.get("client_id") != CLIENT_ID or query.get("code_challenge_method") != "S256":
            return web.Response(status=400, text="invalid_request")
        state = query.get("state", "")
        if request.app[KNOBS].get("deny"):  # the person clicked "Cancel" at the provider
            raise web.HTTPFound(f"{query['redirect_uri']}?{urlencode({'error': 'access_denied', 'state': state})}")
        code = secrets.token_urlsafe(24)
        codes[code] = {"redirect_uri": query["redirect_uri"], "nonce": query.get("nonce"),
                       "challenge": query["code_challenge"], "account": dict(request.app[KNOBS]["account"])}
        raise web.HTTPFound(f"{query['redirect_uri']}?{urlencode({'code': code, 'state': state, 'iss': issuer(request)})}")

    async def token(request: web.Request) -> web.Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        grant = codes.pop(str(form.get("code", "")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri") or grant["challenge"] != challenge:
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {"iss": issuer(request), "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": grant["nonce"],
                  **grant["account"], **request.app[KNOBS]["forge"]}
        how = request.app[KNOBS].get("sign_with")
        if how == "hs256":
            id_token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(CLIENT_SECRET), algorithms=["HS256"])
        else:
            id_token = jwt.encode({"alg": "RS256", "kid": "forge-1"}, claims, _STRANGER if how == "stranger" else _KEY)
        return web.json_response({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                  "expires_in": 300, "id_token": id_token})

    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    app.router.add_get("/authorize", authorize)
    app.router.add_post("/token", token)
    return app
