"""The route table: every admin route in one place, plus the OpenAPI schema and docs page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from polyrelay import compression
from polyrelay.api.admin import docs as admin_docs
from polyrelay.api.admin.alerts import list_alerts
from polyrelay.api.admin.auth import login, logout
from polyrelay.api.admin.balance import fetch_channel_balance
from polyrelay.api.admin.channel_stats import channel_stats
from polyrelay.api.admin.catalog import my_prices, public_info, public_prices
from polyrelay.api.admin.channel_models import channel_upstream_models
from polyrelay.api.admin.channels import (
    create_channel,
    delete_channel,
    disable_channel,
    enable_channel,
    get_channel,
    list_channels,
    test_channel,
    update_channel,
)
from polyrelay.api.admin.common import ApiError, error_response, json_response
from polyrelay.api.admin.health import channel_events, health
from polyrelay.api.admin.groups import create_group, delete_group, get_group, list_groups, update_group
from polyrelay.api.admin.logs import logs, logs_aggregate, logs_csv
from polyrelay.api.admin.invite import account_settings, my_invite, my_invite_move
from polyrelay.api.admin.me import (
    me,
    my_create_token,
    my_delete_token,
    my_get_token,
    my_ledger,
    my_logs,
    my_logs_aggregate,
    my_logs_csv,
    my_password,
    my_redeem,
    my_stats,
    my_tasks,
    my_tokens,
    my_update_token,
)
from polyrelay.api.admin.payments import (
    list_orders,
    my_create_order,
    my_orders,
    my_topup_options,
    public_routes,
    resolve_order,
)
from polyrelay.api.admin.playground import my_playground_key
from polyrelay.api.admin.prices import delete_price, get_price, list_prices, put_price
from polyrelay.api.admin.redemptions import create_codes, delete_code, list_codes
from polyrelay.api.admin.signup import (
    forgot_password,
    resend_verification,
    reset_password,
    signup,
    signup_options,
    verify_email,
)
from polyrelay.api.admin.stats import stats
from polyrelay.api.admin.system import system
from polyrelay.api.admin.passkeys import add_passkey, delete_passkey, passkey_options
from polyrelay.api.admin.two_factor import (
    begin_totp, confirm_totp, disable_totp, renew_recovery_codes, reset_user_2fa, sign_in_passkey_options,
    sign_in_second_factor, status,
)
from polyrelay.api.admin.tasks import list_all_tasks, task_video
from polyrelay.api.admin.tokens import create_token, delete_token, get_token, list_tokens, update_token
from polyrelay.api.sso.flow import sso_callback, sso_providers, sso_start
from polyrelay.api.sso.identities import my_delete_identity, my_identities
from polyrelay.api.admin.users import (
    adjust,
    create_user,
    delete_user,
    get_user,
    list_users,
    topup,
    update_user,
    user_ledger,
)


async def openapi(request: Request) -> Response:
    return _compressed(request, json_response(admin_docs.schema(ROUTES)))


async def docs(request: Request) -> Response:
    return _compressed(request, HTMLResponse(admin_docs.html(ROUTES)))


def _compressed(request: Request, response: Response) -> Response:
    return compression.compress_response(request, response, request.app.state.settings.console.compress_min_bytes)


# (method, path, handler, tag)
ROUTES: list[tuple[str, str, Callable[[Request], Awaitable[Response]], str]] = [
    ("POST", "/api/auth/login", login, "auth"),
    ("POST", "/api/auth/logout", logout, "auth"),
    ("GET", "/api/users", list_users, "users"),
    ("POST", "/api/users", create_user, "users"),
    ("GET", "/api/users/{id}", get_user, "users"),
    ("PATCH", "/api/users/{id}", update_user, "users"),
    ("DELETE", "/api/users/{id}", delete_user, "users"),
    ("POST", "/api/users/{id}/topup", topup, "users"),
    ("POST", "/api/users/{id}/adjust", adjust, "users"),
    ("GET", "/api/users/{id}/ledger", user_ledger, "users"),
    ("GET", "/api/tokens", list_tokens, "tokens"),
    ("POST", "/api/tokens", create_token, "tokens"),
    ("GET", "/api/tokens/{id}", get_token, "tokens"),
    ("PATCH", "/api/tokens/{id}", update_token, "tokens"),
    ("DELETE", "/api/tokens/{id}", delete_token, "tokens"),
    ("GET", "/api/groups", list_groups, "groups"),
    ("POST", "/api/groups", create_group, "groups"),
    ("GET", "/api/groups/{name}", get_group, "groups"),
    ("PATCH", "/api/groups/{name}", update_group, "groups"),
    ("DELETE", "/api/groups/{name}", delete_group, "groups"),
    ("GET", "/api/channels", list_channels, "channels"),
    ("POST", "/api/channels", create_channel, "channels"),
    ("GET", "/api/channels/{id}", get_channel, "channels"),
    ("PATCH", "/api/channels/{id}", update_channel, "channels"),
    ("DELETE", "/api/channels/{id}", delete_channel, "channels"),
    ("POST", "/api/channels/{id}/test", test_channel, "channels"),
    ("POST", "/api/channels/{id}/enable", enable_channel, "channels"),
    ("POST", "/api/channels/{id}/disable", disable_channel, "channels"),
    ("GET", "/api/channels/{id}/events", channel_events, "channels"),
    ("GET", "/api/health", health, "console"),
    ("GET", "/api/alerts", list_alerts, "console"),
    ("POST", "/api/channels/{id}/balance", fetch_channel_balance, "channels"),
    ("GET", "/api/stats/channels", channel_stats, "console"),
    ("GET", "/api/prices", list_prices, "prices"),
    ("GET", "/api/prices/{model}", get_price, "prices"),
    ("PUT", "/api/prices/{model}", put_price, "prices"),
    ("DELETE", "/api/prices/{model}", delete_price, "prices"),
    ("GET", "/api/logs", logs, "logs"),
    ("GET", "/api/logs/aggregate", logs_aggregate, "logs"),
    ("GET", "/api/logs/export.csv", logs_csv, "logs"),
    ("GET", "/api/redemptions", list_codes, "redemptions"),
    ("POST", "/api/redemptions", create_codes, "redemptions"),
    ("DELETE", "/api/redemptions/{id}", delete_code, "redemptions"),
    ("GET", "/api/stats", stats, "console"),
    ("GET", "/api/tasks", list_all_tasks, "console"),
    ("GET", "/api/tasks/{task_id}/video", task_video, "console"),
    ("GET", "/api/system", system, "console"),
    ("GET", "/api/me", me, "me"),
    ("GET", "/api/me/tokens", my_tokens, "me"),
    ("POST", "/api/me/tokens", my_create_token, "me"),
    ("GET", "/api/me/tokens/{id}", my_get_token, "me"),
    ("PATCH", "/api/me/tokens/{id}", my_update_token, "me"),
    ("DELETE", "/api/me/tokens/{id}", my_delete_token, "me"),
    ("GET", "/api/me/logs", my_logs, "me"),
    ("GET", "/api/me/logs/aggregate", my_logs_aggregate, "me"),
    ("GET", "/api/me/logs/export.csv", my_logs_csv, "me"),
    ("GET", "/api/me/ledger", my_ledger, "me"),
    ("POST", "/api/me/redeem", my_redeem, "me"),
    ("POST", "/api/me/password", my_password, "me"),
    ("GET", "/api/me/stats", my_stats, "me"),
    ("GET", "/api/me/tasks", my_tasks, "me"),
    ("GET", "/api/auth/signup", signup_options, "auth"),
    ("POST", "/api/auth/signup", signup, "auth"),
    ("POST", "/api/auth/verify", verify_email, "auth"),
    ("POST", "/api/auth/verify/resend", resend_verification, "auth"),
    ("POST", "/api/auth/password/forgot", forgot_password, "auth"),
    ("POST", "/api/auth/password/reset", reset_password, "auth"),
    ("GET", "/api/me/invite", my_invite, "me"),
    ("POST", "/api/me/invite/move", my_invite_move, "me"),
    ("GET", "/api/settings/accounts", account_settings, "console"),
    ("GET", "/api/me/topup/options", my_topup_options, "payments"),
    ("POST", "/api/me/orders", my_create_order, "payments"),
    ("GET", "/api/me/orders", my_orders, "payments"),
    ("GET", "/api/orders", list_orders, "payments"),
    ("POST", "/api/orders/{id}/resolve", resolve_order, "payments"),
    ("GET", "/api/auth/sso", sso_providers, "auth"),
    ("GET", "/api/auth/sso/{provider}/start", sso_start, "auth"),
    ("GET", "/api/auth/sso/{provider}/callback", sso_callback, "auth"),
    ("GET", "/api/me/identities", my_identities, "me"),
    ("DELETE", "/api/me/identities/{id}", my_delete_identity, "me"),
    ("GET", "/api/me/prices", my_prices, "me"),
    ("POST", "/api/me/playground-key", my_playground_key, "me"),
    ("POST", "/api/channels/{id}/models", channel_upstream_models, "channels"),
    ("GET", "/api/public/prices", public_prices, "public"),
    ("GET", "/api/public/info", public_info, "public"),
    ("POST", "/api/auth/second-factor", sign_in_second_factor, "auth"),
    ("POST", "/api/auth/second-factor/passkey-options", sign_in_passkey_options, "auth"),
    ("GET", "/api/me/2fa", status, "me"),
    ("POST", "/api/me/2fa/totp", begin_totp, "me"),
    ("POST", "/api/me/2fa/totp/confirm", confirm_totp, "me"),
    ("POST", "/api/me/2fa/totp/disable", disable_totp, "me"),
    ("POST", "/api/me/2fa/recovery-codes", renew_recovery_codes, "me"),
    ("POST", "/api/me/2fa/passkeys/options", passkey_options, "me"),
    ("POST", "/api/me/2fa/passkeys", add_passkey, "me"),
    ("DELETE", "/api/me/2fa/passkeys/{id}", delete_passkey, "me"),
    ("DELETE", "/api/users/{id}/2fa", reset_user_2fa, "users"),
]


def routes() -> list[BaseRoute]:
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for method, path, handler, _tag in ROUTES:
        by_path.setdefault(path, {})[method] = handler
    result: list[BaseRoute] = [Route("/openapi.json", openapi, methods=["GET"]), Route("/docs", docs, methods=["GET"]),
                               *public_routes()]
    for path, handlers in by_path.items():
        result.append(Route(path.replace("{model}", "{model:path}"), _dispatch(handlers), methods=list(handlers)))
    return result


def _dispatch(handlers: dict[str, Callable[[Request], Awaitable[Response]]]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        handler = handlers.get(request.method)
        if handler is None:
            return error_response(ApiError(405, "method_not_allowed", f"{request.method} is not allowed here."))
        return _compressed(request, await handler(request))

    return dispatch
