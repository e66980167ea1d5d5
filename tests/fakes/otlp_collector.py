"""A fake OpenTelemetry collector: the OTLP/HTTP traces receiver (``POST /v1/traces``).

As the real collector's receiver does, it takes ``application/x-protobuf`` (and gzip, when the
body says so), answers an ``ExportTraceServiceResponse``, refuses other media types with 415
and a body that is not an ``ExportTraceServiceRequest`` with 400. The spans it received are
kept, decoded, in ``app[SPANS]`` (``spans(server)``).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.fakes.server import FakeServer

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int  # Span.SpanKind: SPAN_KIND_SERVER, SPAN_KIND_CLIENT...
    start_ns: int
    end_ns: int
    error: bool  # the span's status is ERROR
    attributes: dict[str, Any]
    texts: tuple[str, ...]  # every other string the span carries (status message, events, links)


SPANS = web.AppKey("spans", list)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _decoded(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                texts = (span.status.message, *(e.name for e in span.events),
                         *(str(_value(a.value)) for e in span.events for a in e.attributes),
                         *(str(_value(a.value)) for link in span.links for a in link.attributes))
                spans.append(ReceivedSpan(
                    str(resource.get("service.name", "")), span.trace_id.hex(), span.span_id.hex(),
                    span.parent_span_id.hex(), span.name, span.kind, span.start_time_unix_nano,
                    span.end_time_unix_nano, span.status.code == Status.STATUS_CODE_ERROR,
                    {a.key: _value(a.value) for a in span.attributes}, texts))
    return spans


async def traces(request: web.Request) -> web.Response:
    if request.content_type != PROTOBUF:
        return web.Response(status=415, text=f"unsupported content type {request.content_type!r}")
    body = await request.read()
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        body = gzip.decompress(body)
    export = ExportTraceServiceRequest()
    try:
        export.ParseFromString(body)
    except DecodeError as exc:
        return web.Response(status=400, text=f"not an ExportTraceServiceRequest: {exc}")
    request.app[SPANS].extend(_decoded(export))
    return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF)


def create_app() -> web.Application:
    app = web.Application()
    app[SPANS] = []
    app.router.add_post("/v1/traces", traces)
    return app


def spans(server: FakeServer) -> list[ReceivedSpan]:
    return list(server.app[SPANS])


SERVER, CLIENT = Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT
