"""Settlement: every way a request ends releases its hold exactly once; balances are usable to the last cent;
task submits share the relay's admission and channel health.

The money held for requests in flight is reported by ``GET /api/system`` as ``reserved_micros``
(in-memory, per process); a leak shows there, and as 429s for a user who has the money.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway, wait_until
from tests.fakes import bfl_upstream, midjourney_proxy, openai_upstream
from tests.fakes.server import FakeServer
from tests.test_accounts import money

UPSTREAM_KEY = "sk-upstream-settlement"
ADMIN_KEY = "admin-key-settlement-0123456789"
BUYER_KEY = "sk-settle-buyer-0123456789abcdef"
HI = [{"role": "user", "content": "Hi"}]

# gpt-4o-mini at 0.15 / 0.60 USD per Mtok: without max_tokens a call holds ~620 micro-USD (1024 output
# tokens assumed), so $0.0025 covers four such holds: holds left behind by failed calls soon show as 429s.
MINI = "gpt-4o-mini"
# "tiny" at 0.50 / 2.50 USD per Mtok: the fake's 12 prompt + 6 completion tokens cost 6 + 15 micro-USD.
TINY = "tiny"
CALL_COST, OUTPUT_PART = 21, 15
PRICES = {MINI: {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
          TINY: {"input_per_mtok": 0.5, "output_per_mtok": 2.5}}


# ---- helpers ------------------------------------------------------------------------------------

def _config(upstream: FakeServer, balance_usd: float, **channel: Any) -> dict[str, Any]:
    return {
        "admin_key": ADMIN_KEY,
        "channels": [{"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": [MINI, TINY],
                      **channel}],
        "users": [{"name": "buyer", "balance_usd": balance_usd}],
        "tokens": [{"name": "buyer-key", "key": BUYER_KEY, "user": "buyer"}],
        "prices": PRICES,
    }


def _reserved(gateway: Gateway) -> int:
    """The quota the gateway process holds for requests in flight (``/api/system``'s ``reserved_micros``)."""
    response = httpx.get(gateway.url + "/api/system", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
    assert response.status_code == 200, response.text
    system = response.json()
    value = system.get("reserved_micros")
    assert isinstance(value, int) and not isinstance(value, bool), (
        f"/api/system has no integer reserved_micros; its fields: {sorted(system)}")
    return value


def _chat(gateway: Gateway, model: str = MINI) -> httpx.Response:
    """A chat call without max_tokens, as plain HTTP (the status and body as they are on the wire)."""
    return httpx.post(gateway.v1 + "/chat/completions", json={"model": model, "messages": HI},
                      headers={"Authorization": f"Bearer {BUYER_KEY}"}, timeout=30)


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is ``status`` with OpenAI's error object (what the SDKs parse), not a bare text body."""
    assert response.status_code == status, (response.status_code, response.headers.get("content-type"),
                                            response.text[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def _upstream_calls(server: FakeServer, path: str) -> int:
    return sum(1 for r in server.requests if r.path == path)


@pytest.fixture
def start(gateway_factory: Callable[..., Gateway]) -> Iterator[Callable[[dict[str, Any]], Gateway]]:
    """``gateway_factory``, with the gateway stopped when the test ends (each test here has its own)."""
    started: list[Gateway] = []

    def run(config: dict[str, Any]) -> Gateway:
        started.append(gateway := gateway_factory(config))
        return gateway

    yield run
    for gateway in started:
        gateway.stop()


@pytest.fixture
def upstream() -> Iterator[FakeServer]:
    """An OpenAI fake of the test's own (tests turn its knobs); a held reply is let go at the end."""
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    if (gate := server.knobs.get("hold_reply")) is not None:
        gate.set()
    server.stop()


# ---- 1. settlement that cannot leak ---------------------------------------------------------------

MALFORMED = {
    # An HTML error page labelled JSON, as some proxies send with a 200.
    "html-labelled-json": ("application/json", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "truncated-json": ("application/json", b'{"id": "chatcmpl-fake123", "object": "chat.completion", "choi'),
    "json-array": ("application/json", b'["not", "a", "chat", "completion"]'),
    # JSON without choices, whose usage is not numbers.
    "no-choices-bad-usage": ("application/json",
                             b'{"object": "chat.completion", "usage": {"prompt_tokens": "twelve"}}'),
    # A captive proxy's page, labelled as what it is.
    "html-page": ("text/html; charset=utf-8",
                  b"<!doctype html><html><body>Service temporarily unavailable</body></html>"),
}


@pytest.mark.parametrize("reply", list(MALFORMED))
def test_a_malformed_200_is_a_502_that_charges_and_holds_nothing(
    start: Callable[[dict[str, Any]], Gateway], upstream: FakeServer, reply: str
) -> None:
    upstream.knobs["reply_with"] = MALFORMED[reply]
    gateway = start(_config(upstream, 0.0025))
    for call in range(5):
        response = _chat(gateway)
        _assert_openai_error(response, 502)
        row = gateway.usage_row(response.headers["x-request-id"])
        assert (row.status_code, row.cost_micros) == (502, 0), f"call {call + 1}"
        assert row.error, f"call {call + 1}: the usage row does not say what went wrong"
    assert _upstream_calls(upstream, "/v1/chat/completions") == 5  # each call reached the upstream
    assert _reserved(gateway) == 0
    assert money(gateway, "buyer") == (2500, 2500, 2500, 0)

    # The money is all there: once the upstream is well again, the next call is served and charged.
    del upstream.knobs["reply_with"]
    response = _chat(gateway)
    assert response.status_code == 200, response.text
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.status_code, row.cost_micros) == (200, 5)  # 12 x 0.15 + 6 x 0.60 = 5.4 micro-USD
    balance, ledger, topups, logged = wait_until(
        lambda: (m := money(gateway, "buyer"))[0] == 2495 and m, what="the charge of the normal call")
    assert ledger == balance and topups - logged == balance
    assert _reserved(gateway) == 0


def test_a_caller_who_leaves_before_the_answer_is_logged_499_and_holds_nothing(
    start: Callable[[dict[str, Any]], Gateway], upstream: FakeServer
) -> None:
    gate = upstream.knobs["hold_reply"] = threading.Event()
    gateway = start(_config(upstream, 0.0025))

    async def call_and_leave() -> bool:
        async with httpx.AsyncClient(base_url=gateway.v1, timeout=30) as client:
            request = asyncio.ensure_future(client.post(
                "/chat/completions", json={"model": MINI, "messages": HI},
                headers={"Authorization": f"Bearer {BUYER_KEY}"}))
            reached = await asyncio.to_thread(upstream.knobs["reply_held"].wait, 10)
            request.cancel()  # the caller gives up while the upstream still holds its answer
            with contextlib.suppress(asyncio.CancelledError):
                await request
            return reached

    assert asyncio.run(call_and_leave()), "the call never reached the upstream"
    rows = wait_until(
        lambda: gateway.query("SELECT * FROM usage_logs WHERE token_name = 'buyer-key'"),
        what="the usage row of the call whose caller left (the upstream still holds its answer)")
    assert [row.status_code for row in rows] == [499]
    wait_until(lambda: _reserved(gateway) == 0, what="reserved_micros back to 0")

    # Once the upstream answers again, the next call is served and the books agree.
    del upstream.knobs["hold_reply"]
    gate.set()
    response = _chat(gateway)
    assert response.status_code == 200, response.text
    assert gateway.usage_row(response.headers["x-request-id"]).status_code == 200
    balance, ledger, topups, logged = money(gateway, "buyer")
    assert ledger == balance and topups - logged == balance


def test_an_upstream_timeout_is_a_504_that_holds_nothing(
    start: Callable[[dict[str, Any]], Gateway], upstream: FakeServer
) -> None:
    upstream.knobs["hold_reply"] = threading.Event()  # never let go during the test
    gateway = start(_config(upstream, 0.0025, timeout_s=0.5))
    client = openai.OpenAI(api_key=BUYER_KEY, base_url=gateway.v1, max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MINI, messages=HI)
    _assert_openai_error(info.value.response, 504)
    row = gateway.usage_row(info.value.response.headers["x-request-id"])
    assert (row.status_code, row.cost_micros) == (504, 0) and row.error
    assert _reserved(gateway) == 0
    assert money(gateway, "buyer") == (2500, 2500, 2500, 0)


# ---- 2. balance to the last cent ------------------------------------------------------------------

def test_a_call_without_max_tokens_is_served_while_the_balance_covers_its_real_cost(
    start: Callable[[dict[str, Any]], Gateway], upstream: FakeServer
) -> None:
    gateway = start(_config(upstream, 0.001))
    client = openai.OpenAI(api_key=BUYER_KEY, base_url=gateway.v1, max_retries=0, timeout=30)
    try:
        raw = client.chat.completions.with_raw_response.create(model=TINY, messages=HI)  # no max_tokens
    except openai.RateLimitError as refused:
        pytest.fail(f"$0.001 covers a {CALL_COST} micro-USD call, yet it was refused: {refused}")
    completion = raw.parse()
    assert completion.usage is not None and completion.usage.total_tokens == 18
    row = gateway.usage_row(raw.headers["x-request-id"])
    assert (row.status_code, row.cost_micros) == (200, CALL_COST)
    balance, ledger, topups, logged = wait_until(
        lambda: (m := money(gateway, "buyer"))[0] == 1000 - CALL_COST and m, what="the charge")
    assert ledger == balance and topups - logged == balance
    assert _reserved(gateway) == 0


async def _burst(gateway: Gateway, n: int) -> list[int]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=gateway.v1, timeout=60, limits=limits) as client:

        async def one() -> int:
            response = await client.post("/chat/completions", json={"model": TINY, "messages": HI},
                                         headers={"Authorization": f"Bearer {BUYER_KEY}"})
            return response.status_code

        return await asyncio.gather(*(one() for _ in range(n)))


def _settled(gateway: Gateway, rows: int, served: int) -> tuple[int, int, int, int]:
    """The user's books once ``rows`` usage rows are written and the balance shows ``served`` charges."""
    def done() -> tuple[int, int, int, int] | None:
        logged = gateway.query("SELECT COUNT(*) AS n FROM usage_logs WHERE token_name = 'buyer-key'")[0].n
        books = money(gateway, "buyer")
        return books if logged == rows and books[0] == books[2] - served * CALL_COST else None

    return wait_until(done, what=f"{rows} usage rows and {served} charges")


def test_a_balance_for_50_calls_serves_about_50_and_overdraws_by_one_output_at_most(
    start: Callable[[dict[str, Any]], Gateway], upstream: FakeServer
) -> None:
    gateway = start(_config(upstream, 50 * CALL_COST / 1e6))
    assert money(gateway, "buyer")[0] == 50 * CALL_COST

    statuses = asyncio.run(_burst(gateway, 200))
    assert set(statuses) <= {200, 429}, statuses
    burst = statuses.count(200)
    balance, *_ = _settled(gateway, 200, burst)
    assert balance >= -OUTPUT_PART, f"a burst of 200 overdrew the balance to {balance} after {burst} calls"

    # Then one call at a time until the first refusal uses up what is left.
    client = openai.OpenAI(api_key=BUYER_KEY, base_url=gateway.v1, max_retries=0, timeout=30)
    one_by_one = 0
    for _ in range(60):
        try:
            client.chat.completions.create(model=TINY, messages=HI)
        except openai.RateLimitError as refused:
            assert refused.code == "insufficient_quota"  # type: ignore[attr-defined]
            break
        one_by_one += 1
    else:
        pytest.fail("60 calls in a row were served on a balance for 50")
    served = burst + one_by_one
    assert 48 <= served <= 51, f"{burst} in the burst + {one_by_one} one by one on a balance for 50 calls"
    balance, ledger, topups, logged = _settled(gateway, 200 + one_by_one + 1, served)
    assert -OUTPUT_PART <= balance < CALL_COST, f"refused with {balance} micro-USD left"
    assert ledger == balance and topups - logged == balance
    assert gateway.query("SELECT COUNT(*) AS n FROM ledger WHERE kind = 'charge'")[0].n == served
    assert _reserved(gateway) == 0


# ---- 3. task submits: the same admission and channel health ----------------------------------------

PAINTER = "sk-settle-painter-0123456789abcdef"
IMAGINE, FLUX = 100_000, 40_000  # micro-USD
BFL_KEY = "bfl-upstream-key-settlement"


def _task_config(channels: list[dict[str, Any]], balance_usd: float = 1.0) -> dict[str, Any]:
    return {
        "admin_key": ADMIN_KEY,
        "cooldown_after_failures": 1,
        "cooldown_s": 300,
        "tasks": {"poll_interval_s": 0.1, "lease_s": 5},
        "channels": channels,
        "users": [{"name": "painter", "balance_usd": balance_usd}],
        "tokens": [{"name": "painter-key", "key": PAINTER, "user": "painter"}],
        "prices": {"mj_imagine": {"per_request": IMAGINE / 1e6}, "mj_*": {"per_request": 0.05},
                   "flux-pro-1.1": {"per_image": FLUX / 1e6}},
    }


def _mj_channel(name: str, server: FakeServer, priority: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "midjourney", "base_url": server.url, "keys": [midjourney_proxy.SECRET],
            "models": ["mj_*"], "priority": priority, **extra}


def _imagine(gateway: Gateway, prompt: str) -> httpx.Response:
    return httpx.post(gateway.url + "/mj/submit/imagine", json={"prompt": prompt},
                      headers={"Authorization": f"Bearer {PAINTER}"}, timeout=30)


def _submitted(gateway: Gateway, prompt: str) -> str:
    response = _imagine(gateway, prompt)
    assert response.status_code == 200 and response.json()["code"] == 1, response.text
    return response.json()["result"]


def _channel(gateway: Gateway, name: str) -> Any:
    return gateway.query("SELECT * FROM channels WHERE name = :n", n=name)[0]


@pytest.fixture
def mj_fakes() -> Iterator[tuple[FakeServer, FakeServer]]:
    servers = FakeServer(midjourney_proxy.create_app()).start(), FakeServer(midjourney_proxy.create_app()).start()
    yield servers
    for server in servers:
        server.stop()


def _submits(server: FakeServer) -> int:
    return sum(1 for r in server.requests if r.path.startswith("/mj/submit/"))


def test_a_failing_midjourney_channel_fails_over_and_then_cools_down(
    start: Callable[[dict[str, Any]], Gateway], mj_fakes: tuple[FakeServer, FakeServer]
) -> None:
    broken, working = mj_fakes
    broken.knobs["submit_status"] = 500
    gateway = start(_task_config([_mj_channel("mj-broken", broken, 10), _mj_channel("mj-working", working, 0)]))

    task_id = _submitted(gateway, "a lighthouse at dusk")
    row = gateway.usage_row(f"task-{task_id}")
    assert (row.status_code, row.channel_name, row.attempts, row.cost_micros) == (200, "mj-working", 2, IMAGINE)
    assert (row.model, row.upstream_model) == ("mj_imagine", "mj_imagine")  # no mapping: the billed name
    channel = wait_until(lambda: (c := _channel(gateway, "mj-broken")).failure_count >= 1 and c,
                         what="mj-broken's failure in the channels table")
    assert "500" in channel.last_error and channel.cooldown_until is not None
    assert _submits(broken) == 1

    # Cooling down, the broken channel goes last: the next submits go straight to the working one.
    for prompt in ("a harbour at dawn", "a lighthouse in fog", "a ship at night"):
        row = gateway.usage_row(f"task-{_submitted(gateway, prompt)}")
        assert (row.channel_name, row.attempts) == ("mj-working", 1), prompt
    assert _submits(broken) == 1, "a cooling channel was tried before a healthy one"


def test_refused_midjourney_submits_are_logged_and_cost_nothing(
    start: Callable[[dict[str, Any]], Gateway], mj_fakes: tuple[FakeServer, FakeServer]
) -> None:
    first, second = mj_fakes
    # The balance covers exactly one imagine: a hold left behind by a refusal would refuse the last submit.
    gateway = start(_task_config([_mj_channel("mj-a", first, 10), _mj_channel("mj-b", second, 0)],
                                           balance_usd=IMAGINE / 1e6))

    first.knobs["submit_code"] = (4, "参数错误: the upstream refused the prompt")
    validation = _imagine(gateway, "a lighthouse at dusk")
    assert validation.status_code == 200 and validation.json()["code"] == 4, validation.text
    assert validation.json()["result"] is None
    del first.knobs["submit_code"]

    first.knobs["submit_status"] = second.knobs["submit_status"] = 500
    unavailable = _imagine(gateway, "a lighthouse at dusk")
    assert unavailable.status_code == 502 and unavailable.json()["code"] not in (1, 21, 22), unavailable.text
    del first.knobs["submit_status"], second.knobs["submit_status"]
    assert (_submits(first), _submits(second)) == (2, 1)

    rows = wait_until(
        lambda: len(r := gateway.query("SELECT * FROM usage_logs WHERE token_name = 'painter-key' ORDER BY id")) == 2
        and r, what="the usage rows of both refused submits")
    # The refusal the caller gets as HTTP 200 with code 4 is logged as the 400 it is; the outage as the 502 answered.
    assert [(r.status_code, r.cost_micros) for r in rows] == [(400, 0), (unavailable.status_code, 0)]
    assert "参数错误" in rows[0].error
    assert "500" in rows[1].error and rows[1].attempts == 2
    assert gateway.query("SELECT COUNT(*) AS n FROM ledger WHERE kind = 'charge'")[0].n == 0

    task_id = _submitted(gateway, "a lighthouse at dusk")  # the whole balance is still there
    assert gateway.usage_row(f"task-{task_id}").cost_micros == IMAGINE
    balance, ledger, topups, logged = money(gateway, "painter")
    assert (balance, ledger, topups - logged) == (0, 0, 0)


def test_a_mapped_midjourney_model_is_logged_with_its_upstream_name(
    start: Callable[[dict[str, Any]], Gateway], mj_fakes: tuple[FakeServer, FakeServer]
) -> None:
    mapped = _mj_channel("mj-mapped", mj_fakes[0], 0, model_mapping={"mj_imagine": "mj_imagine_v7"})
    gateway = start(_task_config([mapped]))
    row = gateway.usage_row(f"task-{_submitted(gateway, 'a lighthouse at dusk')}")
    assert (row.channel_name, row.model, row.cost_micros) == ("mj-mapped", "mj_imagine", IMAGINE)  # caller's price
    assert row.upstream_model == "mj_imagine_v7"


@pytest.fixture
def bfl() -> Iterator[FakeServer]:
    server = FakeServer(bfl_upstream.create_app({BFL_KEY})).start()
    yield server
    server.stop()


def test_a_failing_flux_channel_feeds_channel_health_like_chat_channels(
    start: Callable[[dict[str, Any]], Gateway], bfl: FakeServer
) -> None:
    """Another task family: its submits fail over and cool channels down through the same health."""
    channels = [
        {"name": "flux-refused", "type": "flux", "base_url": bfl.url, "keys": ["bfl-revoked-key"],
         "models": ["flux-*"], "priority": 10},
        {"name": "flux-working", "type": "flux", "base_url": bfl.url, "keys": [BFL_KEY], "models": ["flux-*"],
         "priority": 0},
    ]
    gateway = start(_task_config(channels))

    def submit(prompt: str) -> Any:
        response = httpx.post(gateway.url + "/flux/v1/flux-pro-1.1", json={"prompt": prompt},
                              headers={"Authorization": f"Bearer {PAINTER}"}, timeout=30)
        assert response.status_code == 200, response.text
        return gateway.usage_row(f"task-{response.json()['id']}")

    def refused_submits() -> int:
        return sum(1 for r in bfl.requests if r.method == "POST" and r.headers.get("x-key") == "bfl-revoked-key")

    row = submit("a lighthouse")
    assert (row.status_code, row.channel_name, row.attempts, row.cost_micros) == (200, "flux-working", 2, FLUX)
    channel = wait_until(lambda: (c := _channel(gateway, "flux-refused")).failure_count >= 1 and c,
                         what="flux-refused's failure in the channels table")
    assert channel.last_error and channel.cooldown_until is not None
    for prompt in ("a harbour", "a ship"):
        row = submit(prompt)
        assert (row.channel_name, row.attempts) == ("flux-working", 1), prompt
    assert refused_submits() == 1, "a cooling channel was tried before a healthy one"
