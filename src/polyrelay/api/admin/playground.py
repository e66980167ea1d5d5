"""The playground's key: a signed-in user's own short-lived key, so the console never asks them to paste one.

Keys are stored hashed and shown once, so the console cannot reuse a key the user made. Instead
``POST /api/me/playground-key`` gives the session a key of the user's own named "console playground",
valid for ``_TTL``; each call rotates it (new secret, new expiry), so at most one such key per user
exists and its spend history stays on one row. It is an ordinary key of the user: their balance pays,
limits an administrator imposed on it stay, and it is listed on their keys page, where they can
disable or delete it. The route is a cookie-authenticated write, so it needs ``X-Requested-With``
(``access``): another site cannot mint a key with the user's cookie.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, iso, json_response, reload_snapshot, run_db
from polyrelay.api.admin.fields import commit_conflict
from polyrelay.keys import generate_key, hash_key, key_hint
from polyrelay.store import changes, models
from polyrelay.store.db import bump_records_version

PLAYGROUND_KEY_NAME = "console playground"
_TTL = timedelta(hours=12)


@endpoint(admin=False)
async def my_playground_key(request: Request, principal: Principal) -> Response:
    """A key of your own for the console's playground, valid for 12 hours; each call replaces the previous one."""
    user_id = principal.user_id
    if user_id is None:
        raise ApiError(404, "no_user", "The admin key is not a user; log in as one to use the playground.")
    key = generate_key()
    expires_at = datetime.now(timezone.utc) + _TTL

    def work() -> int:
        with Session(engine_of(request)) as session, session.begin():
            row = session.scalar(select(models.Token).where(models.Token.user_id == user_id,
                                                            models.Token.name == PLAYGROUND_KEY_NAME))
            if row is None:
                row = models.Token(name=PLAYGROUND_KEY_NAME, user_id=user_id, used_micros=0, admin_enabled=True)
                session.add(row)
            row.key_hash, row.key_hint, row.expires_at, row.enabled = hash_key(key), key_hint(key), expires_at, True
            try:
                session.flush()
            except IntegrityError:  # another tab made it at the same moment
                raise commit_conflict(f"A key named '{PLAYGROUND_KEY_NAME}'") from None
            bump_records_version(session, changes.of_row(row))
            return row.id

    token_id = await run_db(request, work)
    await reload_snapshot(request)
    return json_response({"id": token_id, "name": PLAYGROUND_KEY_NAME, "key": key, "expires_at": iso(expires_at)}, 201)
