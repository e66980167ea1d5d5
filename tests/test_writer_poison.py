"""No usage row can poison the batching writer (issue 14).

Each test sends one poison through a real gateway (an authenticated caller's 300-character
or NUL model name; an admin's price or group ratio typed straight into the database, past
the admin API's validation; a log text the database refuses), then checks what a user and
an operator would notice: the poison is booked as far as it can be, a later normal request
is charged (usage row, ledger entry, balance), ``GET /api/system`` counts the dead letter
when one was needed, and the gateway stops cleanly on SIGTERM without endless retry lines.
PostgreSQL refuses what SQLite forgives, so every test runs on both.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI
from sqlalchemy import text

from tests.conftest import Gateway, wait_until
from tests.fakes import openai_upstream
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-poison"
ADMIN_KEY = "admin-key-poison-0123456789"
PAYER_KEY = "sk-payer-poison-0123456789"  # a user with a balance: the caller whose later request must be charged
WHALE_KEY = "sk-whale-poison-0123456789"  # an unlimited user, served whatever a typo makes a request cost
PER_CALL = 10_000  # micro-USD: the default price, 0.01 USD per request
BIGINT_MAX = 2**63 - 1
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def upstream() -> Iterator[FakeServer]:
    """The test's own OpenAI fake: stopping the gateway holds one of its replies."""
    server = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    yield server
    if (gate := server.knobs.get("hold_reply")) is not None:
        gate.set()
    server.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway], upstream: FakeServer) -> Gateway:
    return gateway_factory({
        "admin_key": ADMIN_KEY,
        "channels": [{"name": "main", "base_url": upstream.url, "keys": [UPSTREAM_KEY]}],  # serves every model
        "users": [{"name": "payer", "balance_usd": 1.0},
                  {"name": "whale", "unlimited": True, "group": "whales"}],
        "groups": {"whales": {"ratio": 1.0}},
        "tokens": [{"name": "payer-key", "key": PAYER_KEY, "user": "payer"},
                   {"name": "whale-key", "key": WHALE_KEY, "user": "whale"}],
        "prices": {"default": {"per_request": PER_CALL / 1_000_000}, "pricey": {"per_request": 10.0}},
    })


def chat(gateway: Gateway, key: str, model: str) -> str:
    """One chat completion through the official SDK; returns the gateway's request id."""
    client = OpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=20)
    response = client.chat.completions.with_raw_response.create(model=model, messages=HI)  # type: ignore[arg-type]
    assert response.http_response.status_code == 200
    return response.headers["x-request-id"]


def money(gateway: Gateway, user: str) -> tuple[int, int]:
    """(users.balance_micros, sum of the user's ledger entries)."""
    row = gateway.query("SELECT u.balance_micros AS balance, (SELECT COALESCE(SUM(l.amount_micros), 0) FROM ledger l "
                        "WHERE l.user_id = u.id) AS ledger FROM users u WHERE u.name = :n", n=user)[0]
    return int(row.balance), int(row.ledger)


def charge_of(gateway: Gateway, request_id: str) -> int:
    rows = gateway.query("SELECT amount_micros FROM ledger WHERE request_id = :r AND kind = 'charge'", r=request_id)
    return int(rows[0].amount_micros) if rows else 0


def system(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(gateway.url + "/api/system", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
    assert response.status_code == 200
    return response.json()


def admin_typo(gateway: Gateway, sql: str, table: str, **params: Any) -> None:
    """Write a value straight into the database, then make one ordinary admin change to the same table
    (``prices`` or ``groups``, which processes reload whole on any change), so the gateway has the typo
    before it answers."""
    with gateway.db.begin() as connection:
        connection.execute(text(sql), params)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    if table == "prices":
        response = httpx.put(f"{gateway.url}/api/prices/unrelated-model", json={"per_request_micros": 1},
                             headers=admin, timeout=20)
    else:
        response = httpx.post(f"{gateway.url}/api/groups", json={"name": "unrelated-group"}, headers=admin,
                              timeout=20)
    assert response.status_code in (200, 201), response.text


def assert_a_later_request_is_charged(gateway: Gateway) -> None:
    balance_before, _ = money(gateway, "payer")
    request_id = chat(gateway, PAYER_KEY, "gpt-4o-mini")
    assert gateway.usage_row(request_id).cost_micros == PER_CALL
    assert charge_of(gateway, request_id) == -PER_CALL  # committed with the row
    balance, ledger = money(gateway, "payer")
    assert balance == ledger == balance_before - PER_CALL


def assert_stops_cleanly(gateway: Gateway, upstream: FakeServer, dead_letter_lines: int = 0) -> None:
    """SIGTERM while a request is in flight: the request is answered and charged (its row is written
    by the stop's flush), the process ends within seconds, and each dead letter was logged once
    rather than a retry line per flush."""
    gate = upstream.knobs["hold_reply"] = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(chat, gateway, PAYER_KEY, "gpt-4o-mini")
        assert upstream.knobs["reply_held"].wait(10), "the last request never reached the upstream"
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        gate.set()
        last = in_flight.result(timeout=20)
    # uvicorn ends by re-raising the signal once its shutdown (the writer's last flush) is done.
    assert gateway.process.wait(timeout=15) == -signal.SIGTERM
    assert time.monotonic() - started < 10
    assert gateway.query("SELECT cost_micros FROM usage_logs WHERE request_id = :r", r=last)[0].cost_micros == PER_CALL
    assert charge_of(gateway, last) == -PER_CALL
    logs = gateway.logs()
    assert logs.count("kept in dead_letters") == dead_letter_lines, logs
    assert logs.count("usage flush") <= (1 if dead_letter_lines else 0), logs  # one line per refused batch
    assert "Traceback" not in logs, logs


def test_an_overlong_model_name_is_cut_to_its_column_and_charged(gateway: Gateway, upstream: FakeServer) -> None:
    request_id = chat(gateway, PAYER_KEY, "m" * 300)
    row = gateway.usage_row(request_id)
    assert row.model == row.upstream_model == "m" * 256  # usage_logs.model is String(256)
    assert row.cost_micros == PER_CALL and charge_of(gateway, request_id) == -PER_CALL
    assert_a_later_request_is_charged(gateway)
    assert system(gateway)["dead_letters"] == 0
    assert_stops_cleanly(gateway, upstream)


def test_a_nul_byte_in_the_model_name_is_dropped_and_charged(gateway: Gateway, upstream: FakeServer) -> None:
    request_id = chat(gateway, PAYER_KEY, "gpt-4o\x00-mini")
    row = gateway.usage_row(request_id)
    assert row.model == "gpt-4o-mini"  # PostgreSQL text cannot hold NUL; SQLite gets the same value
    assert row.cost_micros == PER_CALL and charge_of(gateway, request_id) == -PER_CALL
    assert_a_later_request_is_charged(gateway)
    assert system(gateway)["dead_letters"] == 0
    assert_stops_cleanly(gateway, upstream)


def test_a_price_past_bigint_is_booked_at_the_maximum_and_a_balance_past_it_is_kept_aside(gateway: Gateway, upstream: FakeServer) -> None:
    admin_typo(gateway, "INSERT INTO prices (model, per_request, input_per_mtok) VALUES ('typo', :m, :m)", "prices",
               m=BIGINT_MAX)
    first = chat(gateway, WHALE_KEY, "typo")
    assert gateway.usage_row(first).cost_micros == BIGINT_MAX  # the cost was past BIGINT: clamped
    assert charge_of(gateway, first) == -BIGINT_MAX
    assert money(gateway, "whale") == (-BIGINT_MAX, -BIGINT_MAX)
    assert system(gateway)["dead_letters"] == 0

    second = chat(gateway, WHALE_KEY, "typo")  # the balance cannot go below -2^63: this charge cannot be booked
    letter = wait_until(lambda: gateway.query("SELECT * FROM dead_letters WHERE request_id = :r", r=second),
                        what="the dead letter")[0]
    assert not letter.committed and "usage_logs" not in letter.error
    kept = json.loads(letter.row)
    assert kept["usage_log"]["cost_micros"] == BIGINT_MAX and kept["ledger"]["amount_micros"] == -BIGINT_MAX
    assert not gateway.query("SELECT 1 FROM usage_logs WHERE request_id = :r", r=second)
    assert charge_of(gateway, second) == 0
    assert money(gateway, "whale") == (-BIGINT_MAX, -BIGINT_MAX)  # the books still agree
    assert_a_later_request_is_charged(gateway)
    assert system(gateway)["dead_letters"] == 1
    assert_stops_cleanly(gateway, upstream, dead_letter_lines=1)


def test_a_huge_group_ratio_is_booked_at_the_maximum(gateway: Gateway, upstream: FakeServer) -> None:
    admin_typo(gateway, "UPDATE groups SET ratio_ppm = :r WHERE name = 'whales'", "groups", r=BIGINT_MAX)
    request_id = chat(gateway, WHALE_KEY, "pricey")  # 10 USD x 9.2e12 is past BIGINT
    assert gateway.usage_row(request_id).cost_micros == BIGINT_MAX
    assert charge_of(gateway, request_id) == -BIGINT_MAX
    assert money(gateway, "whale") == (-BIGINT_MAX, -BIGINT_MAX)
    assert_a_later_request_is_charged(gateway)
    assert system(gateway)["dead_letters"] == 0
    assert_stops_cleanly(gateway, upstream)


_REFUSE = {
    "sqlite": ["CREATE TRIGGER refuse_model BEFORE INSERT ON usage_logs WHEN NEW.model = 'refused-model' "
               "BEGIN SELECT RAISE(ABORT, 'model refused'); END"],
    "postgresql": ["CREATE FUNCTION refuse_model() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "IF NEW.model = 'refused-model' THEN RAISE EXCEPTION 'model refused' USING ERRCODE = "
                   "'check_violation'; END IF; RETURN NEW; END $$",
                   "CREATE TRIGGER refuse_model BEFORE INSERT ON usage_logs FOR EACH ROW EXECUTE FUNCTION refuse_model()"],
}


def test_a_row_whose_text_the_database_refuses_still_books_its_money(
    gateway: Gateway, upstream: FakeServer, backend: str
) -> None:
    """A refusal bounding cannot foresee (here a trigger on the model name): the row is written with its
    free text blanked, so the charge stands, and the original is kept as a dead letter."""
    with gateway.db.begin() as connection:
        for statement in _REFUSE[backend]:
            connection.execute(text(statement))
    balance_before, _ = money(gateway, "payer")
    request_id = chat(gateway, PAYER_KEY, "refused-model")
    row = gateway.usage_row(request_id)
    assert (row.model, row.token_name, row.cost_micros) == ("", "", PER_CALL)
    assert charge_of(gateway, request_id) == -PER_CALL
    balance, ledger = money(gateway, "payer")
    assert balance == ledger == balance_before - PER_CALL
    letter = gateway.query("SELECT * FROM dead_letters WHERE request_id = :r", r=request_id)[0]
    assert letter.committed and "model refused" in letter.error
    assert json.loads(letter.row)["usage_log"]["model"] == "refused-model"
    assert_a_later_request_is_charged(gateway)
    assert system(gateway)["dead_letters"] == 1
    assert_stops_cleanly(gateway, upstream, dead_letter_lines=1)
