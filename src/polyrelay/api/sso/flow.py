"""The browser's side of single sign-on: ``/api/auth/sso`` (the buttons), ``.../{provider}/start`` (off to the
provider with state, nonce and a PKCE challenge, bound to this browser by a short-lived encrypted cookie) and
``.../{provider}/callback`` (the state checked once, the code exchanged, the user signed in or linked).

A callback answers with a redirect to the console: signed in (the same session cookie as a password sign-in),
or ``#/login?sso_error=CODE`` (``#/account?...`` when linking) with the reason logged here."""

from __future__ import annotations

import dataclasses
import hmac
import logging
import re
import time
from collections import OrderedDict

import orjson
from cryptography.fernet import InvalidToken
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from polyrelay.api.admin.access import Principal, authenticate, endpoint
from polyrelay.api.admin.auth import open_session, secure_cookie, set_session_cookie
from polyrelay.api.admin.common import ApiError, engine_of, json_response, run_db
from polyrelay.api.sso import github, oidc
from polyrelay.api.sso.identity import Identity, Pending
from polyrelay.api.sso.linking import Refused, link, sign_in
from polyrelay.api.sso.remote import ProviderError
from polyrelay.api.sso.settings import SsoProvider, SsoSettings
from polyrelay.store import crypto

log = logging.getLogger("polyrelay")

STATE_COOKIE = "polyrelay_sso"
_STATE_PATH = "/api/auth/sso"
_STATE_TTL_S = 600  # time to sign in at the provider
_REMEMBERED = 10_000  # used states kept per process, so a replayed callback is refused before the provider is asked
_PARAM = re.compile(r"^[\x21-\x7e]{1,2048}$")
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


class _UsedStates:
    """States whose callback already ran (per process; the provider's one-time codes cover the others)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_use(self, state: str) -> bool:
        now = time.monotonic()
        while self._seen and (len(self._seen) >= _REMEMBERED or next(iter(self._seen.values())) < now):
            self._seen.popitem(last=False)
        if state in self._seen:
            return False
        self._seen[state] = now + _STATE_TTL_S
        return True


_used = _UsedStates()


def _settings(request: Request) -> SsoSettings:
    return request.app.state.settings.sso


def _provider(request: Request) -> SsoProvider:
    provider = _settings(request).provider(request.path_params["provider"])
    if provider is None:
        raise ApiError(404, "unknown_provider", "No single sign-on provider has this name.")
    return provider


def _redirect_uri(request: Request, provider: SsoProvider) -> str:
    base = _settings(request).public_url or str(request.base_url).rstrip("/")
    return f"{base}{_STATE_PATH}/{provider.name}/callback"


def _seal(pending: Pending) -> str:
    return crypto.active().cipher.encrypt(orjson.dumps(dataclasses.asdict(pending))).decode("ascii")


def _open(sealed: str | None) -> Pending | None:
    if not sealed or len(sealed) > 4096:
        return None
    try:
        return Pending(**orjson.loads(crypto.active().cipher.decrypt(sealed.encode("ascii"), ttl=_STATE_TTL_S)))
    except (InvalidToken, ValueError, TypeError):
        return None


def _console(linking: bool, error: str | None = None, linked: str | None = None) -> str:
    """Where the browser lands: the account page for a link, else the dashboard, or the sign-in page with the error."""
    page = "account" if linking else ("login" if error else "dashboard")
    query = f"?sso_error={error}" if error else (f"?sso_linked={linked}" if linked else "")
    return f"/#/{page}{query}"


def _leave(request: Request, location: str) -> Response:
    """A redirect to the console that also drops the state cookie: a state is good for one callback."""
    response = RedirectResponse(location, status_code=303, headers={"cache-control": "no-store"})
    response.delete_cookie(STATE_COOKIE, path=_STATE_PATH, httponly=True, samesite="lax", secure=secure_cookie(request))
    return response


@endpoint(admin=False, public=True)
async def sso_providers(request: Request, _: Principal) -> Response:
    """The sign-in buttons: each provider's name, kind and label (nothing secret)."""
    return json_response({"data": [{"name": p.name, "kind": p.kind, "label": p.button}
                                   for p in _settings(request).providers]})


@endpoint(admin=False, public=True)
async def sso_start(request: Request, _: Principal) -> Response:
    """Off to the provider. ``?link=1`` from a signed-in console links the identity to that user instead."""
    provider = _provider(request)
    link_user = None
    if request.query_params.get("link") == "1":
        principal = await authenticate(request)
        if principal.user_id is None:
            raise ApiError(404, "no_user", "The admin key is not a user; sign in as one to link an identity.")
        link_user = principal.user_id
    pending = Pending.new(provider.name, _redirect_uri(request, provider), link_user)
    try:
        if provider.kind == "github":
            target = github.authorization_url(provider, pending)
        else:
            target = await oidc.authorization_url(_settings(request), provider, pending)
    except ProviderError as exc:
        log.warning("sso %s: %s", provider.name, exc)
        return _leave(request, _console(link_user is not None, exc.code))
    response = RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
    response.set_cookie(STATE_COOKIE, _seal(pending), max_age=_STATE_TTL_S, path=_STATE_PATH, httponly=True,
                        samesite="lax", secure=secure_cookie(request))
    return response


@endpoint(admin=False, public=True)
async def sso_callback(request: Request, _: Principal) -> Response:
    provider = _provider(request)
    pending = _open(request.cookies.get(STATE_COOKIE))
    linking = pending is not None and pending.link_user is not None
    params = request.query_params
    state = params.get("state", "")
    if pending is None or pending.provider != provider.name or not hmac.compare_digest(state.encode(),
                                                                                        pending.state.encode()):
        return _leave(request, _console(linking, "invalid_state"))
    if not _used.first_use(pending.state):
        return _leave(request, _console(linking, "invalid_state"))
    if "error" in params:  # the user cancelled, or the provider refused the request
        refused = params["error"] if _ERROR_CODE.fullmatch(params["error"]) else "provider_error"
        return _leave(request, _console(linking, refused))
    code = params.get("code", "")
    if not _PARAM.fullmatch(code):
        return _leave(request, _console(linking, "invalid_request"))
    if provider.kind == "oidc" and "iss" in params and params["iss"] != provider.issuer:  # RFC 9207: mix-up
        return _leave(request, _console(linking, "invalid_issuer"))
    if pending.link_user is not None and not await _still_signed_in_as(request, pending.link_user):
        return _leave(request, _console(True, "invalid_state"))  # signed out, or someone else signed in meanwhile
    try:
        identity = await _identity(request, provider, code, pending)
        if pending.link_user is not None:
            await run_db(request, link, engine_of(request), provider, identity, pending.link_user)
            return _leave(request, _console(True, linked=provider.name))
        try:
            user_id = await run_db(request, sign_in, engine_of(request), provider, identity)
        except IntegrityError:  # the same identity's first sign-in in another tab or process won: it is linked now
            user_id = await run_db(request, sign_in, engine_of(request), provider, identity)
    except ProviderError as exc:
        log.warning("sso %s: %s", provider.name, exc)
        return _leave(request, _console(linking, exc.code))
    except Refused as exc:
        log.info("sso %s: subject %s refused (%s)", provider.name, identity.subject, exc.code)
        return _leave(request, _console(linking, exc.code))
    cookie, _ = await open_session(request, user_id)
    response = _leave(request, _console(False))
    set_session_cookie(request, response, cookie)
    return response


async def _still_signed_in_as(request: Request, user_id: int) -> bool:
    try:
        return (await authenticate(request)).user_id == user_id
    except ApiError:
        return False


async def _identity(request: Request, provider: SsoProvider, code: str, pending: Pending) -> Identity:
    if provider.kind == "github":
        return await github.identity(_settings(request), provider, code, pending)
    return await oidc.identity(_settings(request), provider, code, pending)
