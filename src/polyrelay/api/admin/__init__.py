"""The admin REST API (``/api/...``): users, tokens, groups, channels, prices, money, logs, ``/api/me``.

Auth: the operator's admin key (``Authorization: Bearer <admin_key>``, from
``POLYRELAY_ADMIN_KEY`` or the config's ``admin_key``), or a console session cookie
from ``POST /api/auth/login``. A session of a user with role ``admin`` may do what the
admin key may; any other user reaches only ``/api/me/...``, which never takes a user id
from the request (and ``/api/tasks/{id}/video`` of its own tasks: the gallery's video
link). Cookie-authenticated writes must carry ``X-Requested-With`` (CSRF).

Every write that changes what the relay reads names its records in the change log in the
same transaction (``bump_records_version``); this process reloads them at once, the others
when NOTIFY wakes them (PostgreSQL) or within ``snapshot_refresh_s``. Errors are
``{"error": {"status", "code", "message"}}``.
Money is integer micro-USD (``*_micros``) in and out.
"""

from polyrelay.api.admin.routes import ROUTES, routes

__all__ = ["ROUTES", "routes"]
