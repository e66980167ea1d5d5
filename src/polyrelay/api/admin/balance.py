"""Fetch a channel's balance from its upstream now (``relay.balance``), instead of noting it by hand."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from polyrelay.api.admin.access import Principal, endpoint
from polyrelay.api.admin.common import ApiError, engine_of, json_response, not_found, path_int
from polyrelay.relay import balance


@endpoint()
async def fetch_channel_balance(request: Request, _: Principal) -> Response:
    """Ask the channel's upstream what is left and store it as ``balance_micros`` with
    ``balance_updated_at``; 400 when the channel has no balance protocol, 502 when the upstream would not tell."""
    channel_id = path_int(request)
    state = request.app.state
    try:
        result = await balance.refresh(engine_of(request), state.db_executor, state.http, channel_id,
                                       state.settings.channel_balance)
    except balance.NoProtocol as error:
        raise ApiError(400, "no_balance_protocol", str(error)) from None
    except balance.BalanceError as error:
        raise ApiError(502, "upstream_error", f"The upstream's balance could not be fetched: {error}") from None
    if result is None:
        raise not_found(f"Channel {channel_id}")
    return json_response(result)
