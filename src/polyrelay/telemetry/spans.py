"""Everything that touches OpenTelemetry; imported only when tracing is on (``tracing.start``).

One SERVER span per relayed request (or task submit), a child of the caller's W3C
``traceparent`` when it sent one, ended at settlement (for a stream: when the stream
ends); one CLIENT child per upstream attempt, current while the attempt runs so that
``inject`` can hand the upstream a ``traceparent`` naming it. The caller's context is
kept in polyrelay's own context variable, never made OpenTelemetry's current context: the
only current spans are attempts, so nothing but an upstream attempt is ever given a
``traceparent``. Attribute values are ids, names, numbers and error codes; never a key,
a body or an error message (an upstream's message may repeat the key it was sent).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from polyrelay.telemetry.tracing import TracingSettings

_W3C = TraceContextTextMapPropagator()
_CALLER_HEADERS = (b"traceparent", b"tracestate")
_caller: ContextVar[Context | None] = ContextVar("polyrelay_caller_trace", default=None)

# The usage row's fields (``relay.settlement.usage_row``) a request span carries, by attribute name.
_ROW_ATTRIBUTES = (
    ("polyrelay.channel.id", "channel_id"),
    ("polyrelay.channel.name", "channel_name"),
    ("polyrelay.upstream_model", "upstream_model"),
    ("polyrelay.token.id", "token_id"),
    ("polyrelay.user.id", "user_id"),
    ("polyrelay.attempts", "attempts"),
    ("polyrelay.cost_micros", "cost_micros"),
    ("gen_ai.usage.input_tokens", "prompt_tokens"),
    ("gen_ai.usage.output_tokens", "completion_tokens"),
    ("http.response.status_code", "status_code"),
)


class Tracer:
    """The process's tracer provider and OTLP/HTTP exporter, and the helpers the relay uses."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        if exporter is None:
            exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers),
                                        timeout=settings.export_timeout_s)
        self._provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                                        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        self._provider.add_span_processor(BatchSpanProcessor(
            exporter, schedule_delay_millis=settings.export_delay_s * 1000,
            export_timeout_millis=settings.export_timeout_s * 1000))
        self._tracer = self._provider.get_tracer("polyrelay")
        self.propagate_upstream = settings.propagate_upstream

    def accept_callers(self, app: ASGIApp) -> ASGIApp:
        """``app``, with each request's W3C ``traceparent``/``tracestate`` kept as the parent of its span."""

        async def traced(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"]
                       if name in _CALLER_HEADERS}
            token = _caller.set(_W3C.extract(carrier) if carrier else None)  # a malformed one starts a new trace
            try:
                await app(scope, receive, send)
            finally:
                _caller.reset(token)

        return traced

    def request(self, family: str, endpoint: str, request_id: str, model: str, stream: bool) -> RequestTrace:
        """The span of one request, begun now; end it with ``RequestTrace.end``."""
        span = self._tracer.start_span(f"{family} {endpoint}", context=_caller.get(), kind=SpanKind.SERVER,
                                       attributes={"polyrelay.family": family, "polyrelay.endpoint": endpoint,
                                                   "polyrelay.request_id": request_id, "polyrelay.model": model,
                                                   "polyrelay.stream": stream})
        return RequestTrace(self._tracer, span)

    def inject(self, headers: dict[str, str]) -> None:
        """Name the upstream attempt now running in ``headers["traceparent"]``, when propagation is on.

        Only the ``traceparent`` (random ids and the sampled flag) leaves: the caller's
        ``tracestate`` is vendor data meant for its own tracing system, not for third parties.
        """
        if not self.propagate_upstream or not trace.get_current_span().get_span_context().is_valid:
            return
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        headers["traceparent"] = carrier["traceparent"]

    def shutdown(self) -> None:
        self._provider.shutdown()  # exports what is still batched


class Attempt:
    """One upstream attempt's span, told how the attempt ended."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def ended(self, status: int, error_type: str = "") -> None:
        """``status``: the upstream's HTTP status (0: it never answered); ``error_type``: why it failed."""
        if status:
            self.span.set_attribute("http.response.status_code", status)
        if error_type:
            self.span.set_attribute("error.type", error_type)
            self.span.set_status(Status(StatusCode.ERROR))


class RequestTrace:
    """The span of one request and the attempts under it."""

    __slots__ = ("_tracer", "_span", "_context")

    def __init__(self, tracer: trace.Tracer, span: Span) -> None:
        self._tracer = tracer
        self._span = span
        self._context = trace.set_span_in_context(span)

    @contextmanager
    def attempt(self, number: int, channel_id: int, channel_name: str, channel_type: str) -> Iterator[Attempt]:
        """A child span for one upstream attempt, current while the block runs (so ``Tracer.inject`` names it)."""
        with self._tracer.start_as_current_span(
            "upstream attempt", context=self._context, kind=SpanKind.CLIENT,
            attributes={"polyrelay.attempt": number, "polyrelay.channel.id": channel_id,
                        "polyrelay.channel.name": channel_name, "polyrelay.channel.type": channel_type},
            record_exception=False, set_status_on_exception=False,  # an exception's text may hold a key
        ) as span:
            yield Attempt(span)

    def end(self, row: Mapping[str, Any]) -> None:
        """End the span with what the usage row says happened (``relay.settlement.usage_row``)."""
        span = self._span
        attributes = {attribute: value for attribute, field in _ROW_ATTRIBUTES
                      if (value := row[field]) is not None and value != ""}
        status = row["status_code"]
        if status >= 500:  # a server span's error, as OpenTelemetry's HTTP conventions define it
            attributes["error.type"] = str(status)
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attributes)  # at once: one lock, not one per attribute
        span.end()
