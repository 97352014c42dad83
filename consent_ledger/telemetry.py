"""OpenTelemetry SDK set-up for entry points. Libraries use only the API (consent_ledger.app.instruments).

Exporters are chosen by configuration: "none", "console" or "otlp" (needs the `otlp` extra; the standard
OTEL_EXPORTER_OTLP_* variables point it at a collector).
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

EXPORTERS = ("none", "console", "otlp")


def configure_telemetry(exporter: str = "none", *, service_name: str = "consent-ledger") -> Callable[[], None]:
    """Install tracer and meter providers with the chosen exporter; returns a shutdown function."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown telemetry exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if exporter == "none":
        return lambda: None
    resource = Resource.create({"service.name": service_name})
    if exporter == "console":
        span_exporter, metric_exporter = ConsoleSpanExporter(), ConsoleMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter, metric_exporter = OTLPSpanExporter(), OTLPMetricExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exporter, 60_000)]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return shutdown
