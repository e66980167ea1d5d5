"""Upstreams that repeat the credential they were sent, as careless real ones do (issue 14).

Several real upstreams answer a refusal with the key they got ("invalid key Bearer sk-..."),
sometimes normalised to another letter case. The fakes' ``echo`` and ``echo_fail`` knobs use
``echoed`` to write such a message in their own error format, so a test can prove polyrelay
never passes it on.
"""

from __future__ import annotations

from aiohttp import web

# Where the fakes' protocols carry the credential, the scheme ("Bearer ") cut off.
_CREDENTIAL_HEADERS = ("Authorization", "x-api-key", "x-goog-api-key", "api-key", "Api-Key", "mj-api-secret", "x-key")


def credential(request: web.Request) -> str:
    """What ``request`` authenticated with, whichever header (or Gemini's ``key`` parameter) carried it."""
    for name in _CREDENTIAL_HEADERS:
        if value := request.headers.get(name, ""):
            scheme, _, rest = value.partition(" ")
            return rest if rest and scheme.lower() in ("bearer", "basic", "token") else value
    return request.query.get("key", "")


def echoed(request: web.Request, also: str = "") -> str:
    """A refusal that repeats ``request``'s credential exact, lower-cased, upper-cased and as a bearer value,
    then ``also`` (what else the upstream knows of it, e.g. a JWT's issuer)."""
    secret = credential(request)
    text = (f"invalid api key {secret}; normalised: {secret.lower()} / {secret.upper()}; "
            f"you sent 'Authorization: Bearer {secret}'")
    return f"{text}; {also}" if also else text
