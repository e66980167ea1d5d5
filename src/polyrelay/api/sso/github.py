"""GitHub's OAuth app flow (no id_token): the authorize URL, the code exchange, then who ``GET /user`` says
the token belongs to and its primary e-mail address from ``GET /user/emails`` (verified or not)."""

from __future__ import annotations

from urllib.parse import urlencode

from polyrelay.api.sso.identity import Identity, Pending
from polyrelay.api.sso.remote import ProviderError, call_json, call_json_list
from polyrelay.api.sso.settings import SsoProvider, SsoSettings

_API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def authorization_url(provider: SsoProvider, pending: Pending) -> str:
    # GitHub ignores a nonce (there is no id_token); PKCE is honoured by GitHub since 2025, and is harmless otherwise.
    query = {"client_id": provider.client_id, "redirect_uri": pending.redirect_uri, "scope": provider.scope,
             "state": pending.state, "code_challenge": pending.challenge, "code_challenge_method": "S256",
             "allow_signup": "false"}
    return f"{provider.github_url}/login/oauth/authorize?{urlencode(query)}"


async def identity(settings: SsoSettings, provider: SsoProvider, code: str, pending: Pending) -> Identity:
    answer = await call_json(settings, "token_exchange_failed", "POST", f"{provider.github_url}/login/oauth/access_token",
                             form={"client_id": provider.client_id,
                                   "client_secret": provider.client_secret.get_secret_value(),
                                   "code": code, "redirect_uri": pending.redirect_uri,
                                   "code_verifier": pending.verifier})
    token = answer.get("access_token")
    if not isinstance(token, str) or not token or len(token) > 1024:
        # GitHub answers a bad code with HTTP 200 and {"error": "bad_verification_code", ...}.
        raise ProviderError("token_exchange_failed", f"GitHub refused the code ({str(answer.get('error'))[:64]})")
    headers = {**_API_HEADERS, "Authorization": f"Bearer {token}"}
    user = await call_json(settings, "profile_failed", "GET", f"{provider.github_api_url}/user", headers=headers)
    emails = await call_json_list(settings, "profile_failed", f"{provider.github_api_url}/user/emails", headers)
    user_id, login = user.get("id"), user.get("login")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not isinstance(login, str):
        raise ProviderError("profile_failed", "GitHub's /user has no numeric id and login")
    primary = next((entry for entry in emails if isinstance(entry, dict) and entry.get("primary") is True), None)
    address = primary.get("email") if primary is not None else None
    email = address.strip().lower() if isinstance(address, str) and 0 < len(address.strip()) <= 254 else None
    verified = email is not None and primary is not None and primary.get("verified") is True
    return Identity(str(user_id), email, verified, login[:64])
