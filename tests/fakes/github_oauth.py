"""A fake GitHub for the OAuth app flow: ``/login/oauth/authorize`` and ``/login/oauth/access_token`` (github.com)
and ``/user`` and ``/user/emails`` (api.github.com), answering as GitHub does — including its refusals: an
unknown client or a redirect URI off the registered callback, a wrong secret or a bad, used or expired code
(HTTP 200 with an ``error`` field), a PKCE verifier that does not match, a missing or bad token (401 "Bad
credentials") and /user/emails without the ``user:email`` scope (404).

The authorize page is where a person would click "Authorize"; here the account in the knob ``login`` does so
at once. Accounts are in ``ACCOUNTS``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from tests.fakes.server import KNOBS

CLIENT_ID = "Iv1.0123456789abcdef"
CLIENT_SECRET = "github-client-secret-0123456789abcdef"
CALLBACK_PATH = "/api/auth/sso/github/callback"  # the app's registered callback, on loopback (any port)
_CODE_TTL_S = 600  # GitHub: "codes expire after 10 minutes"
_DOCS = "https://docs.github.com/rest"

ACCOUNTS: dict[str, dict[str, Any]] = {
    "octocat": {"id": 583231, "name": "The Octocat",
                "emails": [{"email": "Octo@Example.com", "primary": True, "verified": True, "visibility": "public"},
                           {"email": "octo@work.example", "primary": False, "verified": True, "visibility": None}]},
    "sneaky": {"id": 9000001, "name": "Claims Octo",
               "emails": [{"email": "octo@example.com", "primary": True, "verified": False, "visibility": None}]},
}


@dataclass
class _Grant:
    login: str
    redirect_uri: str
    scope: str
    challenge: str | None
    expires: float


def _redirect_ok(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.path.startswith(CALLBACK_PATH)


def create_app() -> web.Application:
    app = web.Application()
    app[KNOBS] = {"login": "octocat"}
    codes: dict[str, _Grant] = {}
    tokens: dict[str, tuple[str, str]] = {}  # token -> (login, scope)

    async def authorize(request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("client_id") != CLIENT_ID:
            return web.Response(status=404, text="Not Found")  # GitHub shows its 404 page for an unknown app
        redirect_uri, state = query.get("redirect_uri", ""), query.get("state", "")
        if not _redirect_ok(redirect_uri):  # GitHub does not redirect to an unregistered URI
            return web.Response(status=400, text="The redirect_uri is not associated with this application.")
        if query.get("code_challenge_method", "S256") != "S256":
            raise web.HTTPFound(f"{redirect_uri}?{urlencode({'error': 'invalid_request', 'state': state})}")
        code = secrets.token_hex(10)
        codes[code] = _Grant(request.app[KNOBS]["login"], redirect_uri, query.get("scope", ""),
                             query.get("code_challenge"), time.monotonic() + _CODE_TTL_S)
        raise web.HTTPFound(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}")

    def token_answer(request: web.Request, data: dict[str, str]) -> web.Response:
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(data)
        return web.Response(text=urlencode(data), content_type="application/x-www-form-urlencoded")

    async def access_token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return token_answer(request, {"error": "incorrect_client_credentials",
                                          "error_description": "The client_id and/or client_secret passed are incorrect."})
        grant = codes.pop(str(form.get("code", "")), None)  # one use, right or wrong
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (grant is None or grant.expires < time.monotonic() or form.get("redirect_uri") != grant.redirect_uri
                or (grant.challenge is not None and challenge != grant.challenge)):
            return token_answer(request, {"error": "bad_verification_code",
                                          "error_description": "The code passed is incorrect or expired."})
        token = "gho_" + secrets.token_hex(18)
        tokens[token] = (grant.login, grant.scope)
        return token_answer(request, {"access_token": token, "token_type": "bearer", "scope": grant.scope})

    def bearer(request: web.Request) -> tuple[str, str]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in tokens:
            raise web.HTTPUnauthorized(text='{"message": "Bad credentials", "documentation_url": "%s", "status": "401"}'
                                       % _DOCS, content_type="application/json")
        return tokens[token]

    async def user(request: web.Request) -> web.Response:
        login, _ = bearer(request)
        account = ACCOUNTS[login]
        public = next((e["email"] for e in account["emails"] if e["visibility"] == "public"), None)
        return web.json_response({"login": login, "id": account["id"], "node_id": f"MDQ6VXNlcj{account['id']}",
                                  "type": "User", "site_admin": False, "name": account["name"], "email": public})

    async def emails(request: web.Request) -> web.Response:
        login, scope = bearer(request)
        if "user:email" not in scope.replace(",", " ").split() and "user" not in scope.split():
            return web.json_response({"message": "Not Found", "documentation_url": _DOCS, "status": "404"}, status=404)
        return web.json_response(ACCOUNTS[login]["emails"])

    app.router.add_get("/login/oauth/authorize", authorize)
    app.router.add_post("/login/oauth/access_token", access_token)
    app.router.add_get("/user", user)
    app.router.add_get("/user/emails", emails)
    return app
