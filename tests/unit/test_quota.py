"""The quota arithmetic: holds capped at what remains, the minimum a call must find, the group multiplier."""

from __future__ import annotations

import pytest

from polyrelay.billing.meter import Price, Usage
from polyrelay.billing.quota import charge, reserve
from polyrelay.errors import RelayError
from polyrelay.providers.base import Call
from polyrelay.relay.admission import call_cost, fixed_cost
from polyrelay.store.snapshot import TokenRecord, UserRecord


def _token(quota: int | None = None, balance: int | None = None, ratio_ppm: int = 1_000_000) -> TokenRecord:
    user = UserRecord(id=1, name="u", unlimited=balance is None, balance_micros=balance or 0, ratio_ppm=ratio_ppm)
    return TokenRecord(id=1, name="t", quota_micros=quota, used_micros=0, models=None, expires_at=None,
                       enabled=True, user=user)


def test_a_hold_is_capped_at_what_the_account_has_left() -> None:
    token = _token(balance=1_000)
    held = reserve(token, 2_070, minimum=20)
    assert held.micros == 1_000
    assert token.user is not None and token.user.reserved_micros == 1_000 and token.reserved_micros == 1_000


def test_a_call_whose_minimum_is_not_covered_is_refused_with_both_amounts() -> None:
    token = _token(balance=10)
    with pytest.raises(RelayError) as refused:
        reserve(token, 2_070, minimum=20)
    assert refused.value.status == 429 and refused.value.code == "insufficient_quota"
    assert "0.000010 USD available" in refused.value.message and "at least 0.000020 USD" in refused.value.message
    assert token.user is not None and token.user.reserved_micros == 0


def test_an_empty_balance_refuses_even_a_free_call() -> None:
    with pytest.raises(RelayError):
        reserve(_token(balance=0), 0, minimum=0)


def test_the_token_limit_caps_when_it_is_the_smaller() -> None:
    token = _token(quota=500, balance=1_000_000)
    assert reserve(token, 900, minimum=100).micros == 500
    assert token.remaining_micros == 0
    with pytest.raises(RelayError, match="this key has"):
        reserve(token, 900, minimum=100)


def test_concurrent_holds_never_exceed_the_balance() -> None:
    token = _token(balance=1_000)
    held = []
    for _ in range(10):
        try:
            held.append(reserve(token, 300, minimum=100))
        except RelayError:
            break
    assert sum(h.micros for h in held) <= 1_000
    assert [h.micros for h in held] == [300, 300, 300, 100]


def test_settling_releases_the_hold_and_charges_the_cost_once() -> None:
    token = _token(balance=1_000)
    held = reserve(token, 600)
    held.settle(250)
    held.settle(250)
    assert token.user is not None
    assert token.user.reserved_micros == 0 and token.user.balance_micros == 750 and token.used_micros == 250


def test_an_unlimited_key_is_held_the_whole_estimate() -> None:
    token = _token()
    assert reserve(token, 5_000, minimum=1).micros == 5_000


def test_the_group_multiplier_rounds_half_up_once() -> None:
    assert charge(_token(ratio_ppm=500_000), 3) == 2
    assert charge(_token(ratio_ppm=1_500_000), 1_000) == 1_500
    assert charge(_token(), 7) == 7


def _chat(body: bytes, max_tokens: int | None) -> Call:
    return Call(family="openai", endpoint="chat.completions", path="/v1/chat/completions", model="m", body=body,
                content_type="application/json", request_id="r", payload={}, max_output_tokens=max_tokens)


def test_a_chat_minimum_is_its_prompt_and_its_estimate_adds_the_output_limit() -> None:
    price = Price(input_per_mtok=1_000_000, output_per_mtok=2_000_000)  # $1 / $2 per million tokens
    body = b"x" * 300  # ~100 prompt tokens
    estimate, minimum = call_cost(_chat(body, None), 1024)(price)
    assert minimum == 100
    assert estimate == 100 + 2 * 1024
    estimate, minimum = call_cost(_chat(body, 10), 1024)(price)
    assert (estimate, minimum) == (120, 100)


def test_per_request_and_per_image_prices_are_known_up_front() -> None:
    call = _chat(b"{}", None)
    call.images = 3
    assert call_cost(call, 1024)(Price(per_image=40_000)) == (120_000, 120_000)
    assert call_cost(call, 1024)(Price(per_request=5_000)) == (5_000, 5_000)


def test_a_task_submit_costs_its_price_times_the_speed_multiplier() -> None:
    assert fixed_cost(Usage(images=1, source="request"), 2.0)(Price(per_image=50_000)) == (100_000, 100_000)
