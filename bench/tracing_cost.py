"""CPU per request of tracing (telemetry/spans.py), in one process, without the network.

One request's span work as the relay does it (a request span, one attempt span made current,
a traceparent injected, the request span ended from a usage row), measured with an exporter
that drops the spans, one that encodes them to OTLP protobuf as the real exporter does (but
sends nothing), and with ``sample_ratio: 0`` (spans created but not recorded); then the checks
a request makes with tracing off. "all threads" includes the batch processor's export thread.
The whole relayed cost, export over HTTP included: ``bench/run.py --tracing``.

    .venv/bin/python bench/tracing_cost.py [--requests 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from polyrelay.telemetry import tracing
from polyrelay.telemetry.spans import Tracer
from polyrelay.telemetry.tracing import TracingSettings

ROW = {"channel_id": 7, "channel_name": "good", "upstream_model": "gpt-m", "token_id": 3, "user_id": 4,
       "attempts": 1, "cost_micros": 72, "prompt_tokens": 12, "completion_tokens": 6, "status_code": 200}


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Encoded(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS


def one_request(tracer: Tracer) -> None:
    trace = tracer.request("openai", "chat.completions", "req_1", "gpt-m", False)
    with trace.attempt(1, 7, "good", "openai") as attempt:
        tracer.inject({})
        attempt.ended(200)
    trace.end(ROW)


def measure(tracer: Tracer, requests: int, rounds: int) -> tuple[float, float]:
    """Best µs per request: CPU of the calling thread, CPU of the process (export thread included)."""
    results = []
    for _ in range(rounds):
        thread0, process0 = time.thread_time(), time.process_time()
        for _ in range(requests):  # two spans each: fewer than the batch queue's 2048, nothing is dropped
            one_request(tracer)
        thread = time.thread_time() - thread0
        tracer._provider.force_flush()
        results.append((thread, time.process_time() - process0))
    tracer.shutdown()
    return min(r[0] for r in results) / requests * 1e6, min(r[1] for r in results) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for name, exporter, ratio in (("spans dropped", Dropped(), 1.0), ("spans encoded to OTLP", Encoded(), 1.0),
                                  ("not sampled", Encoded(), 0.0)):
        tracer = Tracer(TracingSettings(enabled=True, export_delay_s=0.2, sample_ratio=ratio), exporter)
        loop, process = measure(tracer, args.requests, args.rounds)
        print(f"{name:24} {loop:6.1f} µs/request on the event loop's thread, {process:6.1f} µs all threads")

    class Outcome:
        trace = None

    outcome = Outcome()

    def off() -> None:  # what a request checks with tracing off: twice ``tracing.active``, twice its trace
        for _ in (1, 2):
            if tracing.active is not None or outcome.trace is not None:
                raise AssertionError("tracing is off")

    n = 1_000_000
    print(f"{'tracing off':24} {min(timeit.repeat(off, number=n, repeat=5)) / n * 1e9:6.0f} ns/request "
          "(the checks, with this loop's own overhead)")


if __name__ == "__main__":
    main()
