"""Optional OpenTelemetry traces: off by default, and then nothing of OpenTelemetry is even imported.

``start`` builds the tracer when the operator turns tracing on; everything that touches
OpenTelemetry lives in ``telemetry.spans``, imported only then (the packages are the
``otel`` extra). ``active`` is what the hot path checks: with tracing off that one ``None``
check is all a request pays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from polyrelay.telemetry.spans import Tracer

MISSING = ("tracing.enabled is true, but the OpenTelemetry packages are not installed "
           "(pip install 'polyrelay[otel]'): {}")


class TracingSettings(BaseModel):
    """``tracing:`` (see docs/operations.md, "Traces")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    endpoint: str = Field(default="http://127.0.0.1:4318/v1/traces", max_length=2000,
                          description="OTLP/HTTP traces URL of the collector, path included.")
    headers: dict[str, str] = Field(default={}, max_length=32,
                                    description="Sent with every export (a hosted backend's API key); never logged.")
    service_name: str = Field(default="polyrelay", min_length=1, max_length=200)
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="Share of traces started here that are kept; "
                                "a caller's traceparent decides for its own trace.")
    propagate_upstream: bool = Field(default=True, description="Send a traceparent (never the caller's tracestate) "
                                     "to upstreams.")
    export_delay_s: float = Field(default=5.0, gt=0, le=60, description="Spans are batched this long before export.")
    export_timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:4318/v1/traces")
        return value


class TracingUnavailable(Exception):
    """Tracing is on but OpenTelemetry is not installed: the operator's to fix, before serving."""


active: Tracer | None = None


def start(settings: TracingSettings) -> Tracer | None:
    """The process's tracer when tracing is on (also kept as ``active``), else None."""
    global active
    if not settings.enabled:
        return None
    require()
    from polyrelay.telemetry.spans import Tracer

    active = Tracer(settings)
    return active


def require() -> None:
    """Raise ``TracingUnavailable`` unless the OpenTelemetry SDK and its OTLP/HTTP exporter import."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise TracingUnavailable(MISSING.format(exc)) from None


def stop() -> None:
    """Export what is still batched and stop (at shutdown)."""
    global active
    if active is not None:
        active.shutdown()
        active = None


def inject(headers: dict[str, str]) -> None:
    """Add a ``traceparent`` for the upstream attempt now running to ``headers`` (see ``Tracer.inject``)."""
    if active is not None:
        active.inject(headers)
