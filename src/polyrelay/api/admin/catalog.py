"""What a caller pays and where to call: the public price list, a signed-in user's own, and the base URL.

Read from the relay's in-memory snapshot (enabled channels, prices, groups), so these pages cost
no query. Amounts are what a caller of the group is charged: the model's price times the group's
multiplier, rounded the way settlement rounds (``billing.quota.scaled``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, json_response
from polyrelay.billing.meter import Price
from polyrelay.billing.quota import scaled
from polyrelay.patterns import is_wildcard
from polyrelay.store.snapshot import Snapshot

_DEFAULT_GROUP = "default"
_FULL_RATIO = 1_000_000
_MAX_GROUP = 64  # the column's length


def _served(snapshot: Snapshot, channels: frozenset[str] | None) -> list[str]:
    """Models some enabled channel the group may use serves: declared names, and priced names a pattern covers."""
    usable = [c for c in snapshot.channels if channels is None or c.name in channels]
    names = set(snapshot.model_names()) | {name for name in snapshot.prices if name != _DEFAULT_GROUP}
    return sorted(name for name in names if not is_wildcard(name) and any(c.serves(name) for c in usable))


def _amounts(price: Price, ratio_ppm: int) -> dict[str, int | None]:
    return {f"{name}_micros": None if (value := getattr(price, name)) is None else scaled(value, ratio_ppm)
            for name in Price.field_names()}


def price_list(snapshot: Snapshot, group: str, *, with_unpriced: bool) -> dict[str, Any]:
    """The models a caller of ``group`` can reach and their prices; unpriced ones only if asked (``priced: false``)."""
    ratio_ppm, channels = snapshot.groups.get(group, (_FULL_RATIO, None))
    rows: list[dict[str, Any]] = []
    for model in _served(snapshot, channels):
        price = snapshot.price_for(model)
        if price is not None:
            rows.append({"model": model, "priced": True, **_amounts(price, ratio_ppm)})
        elif with_unpriced:
            rows.append({"model": model, "priced": False})
    return {"group": group, "ratio_ppm": ratio_ppm, "data": rows}


def _groups(snapshot: Snapshot) -> list[dict[str, Any]]:
    names = sorted(set(snapshot.groups) | {_DEFAULT_GROUP})
    return [{"name": name, "ratio_ppm": snapshot.groups.get(name, (_FULL_RATIO, None))[0]} for name in names]


def _snapshot(request: Request) -> Snapshot:
    return request.app.state.relay.snapshot


@endpoint(admin=False, public=True)
async def public_prices(request: Request, _: Principal) -> Response:
    """What a caller pays per model, for one group (`group`, default "default"); unpriced models are left out."""
    if not request.app.state.settings.console.public_prices:
        raise ApiError(404, "not_public", "The operator keeps the price list private; sign in to see your prices.")
    snapshot = _snapshot(request)
    group = request.query_params.get("group") or _DEFAULT_GROUP
    if len(group) > _MAX_GROUP or (group != _DEFAULT_GROUP and group not in snapshot.groups):
        raise ApiError(404, "not_found", "This group does not exist.")
    return json_response({**price_list(snapshot, group, with_unpriced=False), "groups": _groups(snapshot)})


@endpoint(admin=False, public=True)
async def public_info(request: Request, _: Principal) -> Response:
    """The base URL callers use (the `console.public_url` setting, else this request's address) and whether
    the price list is public: what the "how to call" page shows."""
    settings = request.app.state.settings.console
    base = settings.public_url or str(request.base_url)
    return json_response({"base_url": base.rstrip("/"), "public_prices": settings.public_prices})


@endpoint(admin=False)
async def my_prices(request: Request, principal: Principal) -> Response:
    """The models your group can reach and what you pay for them; unpriced ones too (`priced: false`): keys
    with a limit, and users without unlimited credit, cannot call those."""
    snapshot = _snapshot(request)
    user = snapshot.users.get(principal.user_id) if principal.user_id is not None else None
    group = user.group if user is not None else _DEFAULT_GROUP
    return json_response(price_list(snapshot, group, with_unpriced=True))
