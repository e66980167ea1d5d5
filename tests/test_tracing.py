"""OpenTelemetry traces, as an operator's collector and an upstream see them (docs/operations.md, "Traces").

The gateways export OTLP/HTTP to a fake collector on loopback (``tests/fakes/otlp_collector.py``),
which decodes the protobuf export requests. One gateway traces and propagates, one traces
without propagating, and one runs with tracing off where OpenTelemetry cannot even be
imported (a package on PYTHONPATH that refuses to load stands in for "not installed").
The span helpers themselves are checked with the SDK's in-memory exporter.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from polyrelay.telemetry.spans import Tracer
from polyrelay.telemetry.tracing import TracingSettings
from tests.conftest import Gateway, wait_until
from tests.fakes import bfl_upstream, openai_upstream, otlp_collector
from tests.fakes.otlp_collector import ReceivedSpan
from tests.fakes.server import FakeServer

UPSTREAM_KEY = "sk-upstream-tracing-0123456789"
ALICE = "sk-alice-tracing-0123456789abcdef"
BFL_KEY = "bfl-upstream-tracing-key"
FLUX, FLUX_USD = "flux-pro-1.1", 0.04
HI = [{"role": "user", "content": "Hi"}]
CALLER_STATE = "callervendor=private-tenant-42"
MISSING_MESSAGE = "pip install 'polyrelay[otel]'"


def traceparent() -> tuple[str, str, str]:
    """A caller's fresh W3C traceparent header, with its trace id and span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def chat(gateway: Gateway, model: str, headers: dict[str, str] | None = None) -> httpx.Response:
    response = httpx.post(gateway.v1 + "/chat/completions", json={"model": model, "messages": HI},
                          headers={"authorization": f"Bearer {ALICE}", **(headers or {})}, timeout=20)
    return response


def request_span(collector: FakeServer, request_id: str) -> ReceivedSpan:
    def found() -> ReceivedSpan | None:
        return next((s for s in otlp_collector.spans(collector)
                     if s.attributes.get("polyrelay.request_id") == request_id), None)

    return wait_until(found, what=f"the span of {request_id} at the collector")


def children(collector: FakeServer, parent: ReceivedSpan) -> list[ReceivedSpan]:
    """The attempts under ``parent``, in attempt order (they are exported with it, in the same batch or before)."""
    spans = [s for s in otlp_collector.spans(collector) if s.parent_span_id == parent.span_id]
    return sorted(spans, key=lambda s: s.attributes["polyrelay.attempt"])


def config(upstreams: dict[str, FakeServer], tracing: dict[str, object]) -> dict[str, object]:
    return {
        "cooldown_after_failures": 100,
        "tracing": tracing,
        "channels": [
            {"name": "good", "type": "openai", "base_url": upstreams["good"].url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-m", "gpt-f", "gpt-s"]},
            {"name": "down", "type": "openai", "base_url": upstreams["down"].url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-f"], "priority": 10},
            {"name": "echoes", "type": "openai", "base_url": upstreams["echoes"].url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-echo"]},
            {"name": "bfl", "type": "flux", "base_url": upstreams["flux"].url, "keys": [BFL_KEY], "models": ["flux-*"]},
        ],
        "tasks": {"poll_interval_s": 0.05},
        "users": [{"name": "alice", "unlimited": True}],
        "tokens": [{"name": "alice-laptop", "key": ALICE, "user": "alice"}],
        "prices": {"default": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}, FLUX: {"per_image": FLUX_USD}},
    }


@pytest.fixture(scope="module")
def collector() -> Iterator[FakeServer]:
    server = FakeServer(otlp_collector.create_app()).start()
    yield server
    server.stop()


def _upstreams() -> dict[str, FakeServer]:
    made = {name: FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start() for name in ("good", "down", "echoes")}
    made["flux"] = FakeServer(bfl_upstream.create_app({BFL_KEY})).start()
    made["down"].knobs["fail_with"] = 500
    made["echoes"].knobs["echo"] = 401  # every refusal repeats the key it was sent
    return made


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeServer]]:
    made = _upstreams()
    yield made
    for server in made.values():
        server.stop()


@pytest.fixture(scope="module")
def quiet_upstreams() -> Iterator[dict[str, FakeServer]]:
    """The upstreams of the gateways that must not propagate: their own, so what they saw is theirs alone."""
    made = _upstreams()
    yield made
    for server in made.values():
        server.stop()


@pytest.fixture(scope="module")
def traced(gateway_factory: Callable[..., Gateway], collector: FakeServer,
           upstreams: dict[str, FakeServer]) -> Gateway:
    return gateway_factory(config(upstreams, {"enabled": True, "endpoint": collector.url + "/v1/traces",
                                              "service_name": "polyrelay-traced", "export_delay_s": 0.05}))


@pytest.fixture(scope="module")
def unpropagated(gateway_factory: Callable[..., Gateway], collector: FakeServer,
                 quiet_upstreams: dict[str, FakeServer]) -> Gateway:
    return gateway_factory(config(quiet_upstreams, {
        "enabled": True, "endpoint": collector.url + "/v1/traces", "service_name": "polyrelay-unpropagated",
        "export_delay_s": 0.05, "propagate_upstream": False}))


@pytest.fixture(scope="module")
def no_opentelemetry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which ``import opentelemetry...`` fails, as if the packages were not installed."""
    blocker = tmp_path_factory.mktemp("no-otel")
    (blocker / "opentelemetry").mkdir()
    (blocker / "opentelemetry" / "__init__.py").write_text(
        'raise ImportError("No module named \'opentelemetry\' (blocked by tests/test_tracing.py)")\n')
    return {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}


def test_a_failover_is_one_request_span_with_a_child_per_attempt_in_the_callers_trace(
        traced: Gateway, collector: FakeServer, upstreams: dict[str, FakeServer]) -> None:
    header, trace_id, caller_span = traceparent()
    response = chat(traced, "gpt-f", {"traceparent": header, "tracestate": CALLER_STATE})  # down answers 500, good 200
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    row = traced.usage_row(request_id)
    span = request_span(collector, request_id)
    assert (span.service, span.trace_id, span.parent_span_id) == ("polyrelay-traced", trace_id, caller_span)
    assert span.kind == otlp_collector.SERVER and span.name == "openai chat.completions" and not span.error
    attributes = span.attributes
    assert attributes["polyrelay.family"] == "openai" and attributes["polyrelay.model"] == "gpt-f"
    assert attributes["polyrelay.stream"] is False
    assert attributes["http.response.status_code"] == 200 and attributes["polyrelay.attempts"] == 2
    assert attributes["polyrelay.token.id"] == row.token_id and attributes["polyrelay.user.id"] == row.user_id
    assert attributes["polyrelay.cost_micros"] == row.cost_micros > 0
    assert attributes["polyrelay.channel.name"] == "good"

    first, second = attempts = wait_until(lambda: len(children(collector, span)) == 2 and children(collector, span),
                                          what="two attempt spans")
    assert all(a.trace_id == trace_id and a.kind == otlp_collector.CLIENT for a in attempts)
    assert (first.attributes["polyrelay.attempt"], first.attributes["polyrelay.channel.name"]) == (1, "down")
    assert first.attributes["http.response.status_code"] == 500 and first.error
    assert first.attributes["error.type"] == "500" and first.attributes["polyrelay.channel.type"] == "openai"
    assert (second.attributes["polyrelay.attempt"], second.attributes["polyrelay.channel.name"]) == (2, "good")
    assert second.attributes["http.response.status_code"] == 200 and not second.error
    assert span.start_ns <= first.start_ns <= first.end_ns <= second.start_ns <= second.end_ns <= span.end_ns

    # Each upstream was named the attempt that called it; the caller's tracestate stays with polyrelay.
    down_saw, good_saw = upstreams["down"].last("/v1/chat/completions"), upstreams["good"].last("/v1/chat/completions")
    assert down_saw.headers["traceparent"] == f"00-{trace_id}-{first.span_id}-01"
    assert good_saw.headers["traceparent"] == f"00-{trace_id}-{second.span_id}-01"
    assert "tracestate" not in down_saw.headers and "tracestate" not in good_saw.headers


def test_a_request_without_a_traceparent_starts_its_own_trace(traced: Gateway, collector: FakeServer,
                                                              upstreams: dict[str, FakeServer]) -> None:
    response = chat(traced, "gpt-m", {"traceparent": "00-not-a-valid-header-01"})  # malformed: ignored
    assert response.status_code == 200, response.text
    span = request_span(collector, response.headers["x-request-id"])
    assert span.parent_span_id == "" and len(span.trace_id) == 32 and span.trace_id != "0" * 32
    assert upstreams["good"].last("/v1/chat/completions").headers["traceparent"].startswith(f"00-{span.trace_id}-")


def test_a_streams_span_ends_when_the_stream_ends(traced: Gateway, collector: FakeServer,
                                                 upstreams: dict[str, FakeServer]) -> None:
    gate = threading.Event()
    upstreams["good"].knobs["hold_stream"] = gate  # the first chunk comes at once, the rest when the gate opens
    try:
        with httpx.stream("POST", traced.v1 + "/chat/completions", headers={"authorization": f"Bearer {ALICE}"},
                          json={"model": "gpt-s", "messages": HI, "stream": True}, timeout=20) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            assert next(chunks).startswith(b"data: ")  # the upstream's first chunk, passed on at once
            released = time.time_ns()
            gate.set()
            rest = b"".join(chunks)
        request_id = response.headers["x-request-id"]
    finally:
        upstreams["good"].knobs.pop("hold_stream")
    assert b"[DONE]" in rest
    span = request_span(collector, request_id)
    assert span.attributes["polyrelay.stream"] is True and span.attributes["http.response.status_code"] == 200
    assert span.attributes["gen_ai.usage.output_tokens"] == openai_upstream.COMPLETION_TOKENS
    (attempt,) = wait_until(lambda: children(collector, span), what="the attempt span")
    assert attempt.end_ns < released < span.end_ns  # the attempt ended at the upstream's headers, the request after


def test_a_task_submit_is_traced_on_the_same_spine_and_its_polls_are_not(
        traced: Gateway, collector: FakeServer, upstreams: dict[str, FakeServer]) -> None:
    header, trace_id, caller_span = traceparent()
    response = httpx.post(f"{traced.url}/flux/v1/{FLUX}", json={"prompt": "a lighthouse"}, timeout=20,
                          headers={"authorization": f"Bearer {ALICE}", "traceparent": header})
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    span = request_span(collector, f"task-{task_id}")
    assert (span.trace_id, span.parent_span_id, span.name) == (trace_id, caller_span, f"flux flux.{FLUX}")
    assert span.attributes["polyrelay.cost_micros"] == FLUX_USD * 1e6 and span.attributes["polyrelay.channel.name"] == "bfl"
    (attempt,) = wait_until(lambda: children(collector, span), what="the attempt span")
    assert attempt.attributes["polyrelay.channel.type"] == "flux" and attempt.attributes["http.response.status_code"] == 200
    submitted = upstreams["flux"].last(f"/v1/{FLUX}")
    assert submitted.headers["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"

    def ready() -> bool:
        result = httpx.get(f"{traced.url}/flux/v1/get_result?id={task_id}", headers={"authorization": f"Bearer {ALICE}",
                           "traceparent": header}, timeout=10)
        return result.json()["status"] == "Ready"

    wait_until(ready, what="the task polled to its end")
    polls = [r for r in upstreams["flux"].requests if r.path != f"/v1/{FLUX}"]
    assert polls and not [r for r in polls if "traceparent" in r.headers]


def test_spans_carry_no_secret_even_when_an_upstream_echoes_its_key(traced: Gateway, collector: FakeServer) -> None:
    response = chat(traced, "gpt-echo")  # the only channel refuses with a message repeating the key
    assert response.status_code == 502, response.text
    span = request_span(collector, response.headers["x-request-id"])
    assert span.error and span.attributes["http.response.status_code"] == 502
    (attempt,) = wait_until(lambda: children(collector, span), what="the attempt span")
    assert attempt.attributes["http.response.status_code"] == 401 and attempt.error
    exported = otlp_collector.spans(collector)
    strings = [str(value) for s in exported for value in (*s.attributes.values(), *s.texts, s.name)]
    for secret in (UPSTREAM_KEY, ALICE):
        assert not [text for text in strings if secret.lower() in text.lower()], secret


def test_without_propagation_upstreams_see_no_traceparent(unpropagated: Gateway, collector: FakeServer,
                                                          quiet_upstreams: dict[str, FakeServer]) -> None:
    header, trace_id, caller_span = traceparent()
    response = chat(unpropagated, "gpt-f", {"traceparent": header, "tracestate": CALLER_STATE})
    assert response.status_code == 200, response.text
    span = request_span(collector, response.headers["x-request-id"])
    assert (span.service, span.trace_id, span.parent_span_id) == ("polyrelay-unpropagated", trace_id, caller_span)
    assert len(wait_until(lambda: len(children(collector, span)) == 2 and children(collector, span),
                          what="two attempt spans")) == 2
    for name in ("down", "good"):
        seen = quiet_upstreams[name].last("/v1/chat/completions").headers
        assert "traceparent" not in seen and "tracestate" not in seen


def test_with_tracing_off_the_gateway_serves_without_opentelemetry(
        gateway_factory: Callable[..., Gateway], collector: FakeServer, quiet_upstreams: dict[str, FakeServer],
        no_opentelemetry: dict[str, str]) -> None:
    off = gateway_factory(config(quiet_upstreams, {"enabled": False, "endpoint": collector.url + "/v1/traces",
                                                   "service_name": "polyrelay-off"}), extra_env=no_opentelemetry)
    header, _, _ = traceparent()
    response = chat(off, "gpt-f", {"traceparent": header})  # fails over too: the attempt loop runs untraced
    assert response.status_code == 200, response.text
    row = off.usage_row(response.headers["x-request-id"])
    assert row.attempts == 2 and row.status_code == 200
    assert "traceparent" not in quiet_upstreams["good"].last("/v1/chat/completions").headers  # not passed through
    assert not [s for s in otlp_collector.spans(collector) if s.service == "polyrelay-off"]


def test_tracing_on_without_opentelemetry_stops_the_start_with_a_clear_message(
        tmp_path: Path, no_opentelemetry: dict[str, str]) -> None:
    config_path = tmp_path / "polyrelay.yaml"
    config_path.write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path}/never.db",
                                           "tracing": {"enabled": True}}))
    started = subprocess.run([sys.executable, "-m", "polyrelay", "serve", "--config", str(config_path)],
                             env={**os.environ, **no_opentelemetry}, cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 1
    assert "tracing.enabled is true" in started.stderr and MISSING_MESSAGE in started.stderr, started.stderr
    assert "Traceback" not in started.stderr
    assert not (tmp_path / "never.db").exists()  # refused before touching the database


# The span helpers, with the SDK's in-memory exporter.

def _tracer(exporter: InMemorySpanExporter, **settings: object) -> Tracer:
    return Tracer(TracingSettings(enabled=True, export_delay_s=0.01, **settings), exporter)  # type: ignore[arg-type]


def test_only_a_running_attempt_is_named_upstream() -> None:
    exporter = InMemorySpanExporter()
    tracer = _tracer(exporter)
    trace = tracer.request("openai", "chat.completions", "req_1", "gpt-m", False)
    outside: dict[str, str] = {}
    tracer.inject(outside)
    inside: dict[str, str] = {}
    with trace.attempt(1, 7, "good", "openai") as attempt:
        tracer.inject(inside)
        attempt.ended(200)
    trace.end({"channel_id": 7, "channel_name": "good", "upstream_model": "gpt-m", "token_id": 3, "user_id": None,
               "attempts": 1, "cost_micros": 0, "prompt_tokens": 1, "completion_tokens": 2, "status_code": 200})
    tracer.shutdown()
    child, parent = exporter.get_finished_spans()
    assert outside == {}  # the request span is never current: nothing but an attempt is propagated
    assert list(inside) == ["traceparent"]
    version, trace_id, span_id, flags = inside["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{child.context.trace_id:032x}", f"{child.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert "polyrelay.user.id" not in parent.attributes  # absent values are left out, not sent as empty


def test_propagation_off_names_no_attempt_and_sampling_zero_keeps_nothing() -> None:
    exporter = InMemorySpanExporter()
    tracer = _tracer(exporter, propagate_upstream=False, sample_ratio=0.0)
    trace = tracer.request("openai", "chat.completions", "req_2", "gpt-m", False)
    headers: dict[str, str] = {}
    with trace.attempt(1, 7, "good", "openai") as attempt:
        tracer.inject(headers)
        attempt.ended(0, "timeout")
    tracer.shutdown()
    assert headers == {} and exporter.get_finished_spans() == ()
