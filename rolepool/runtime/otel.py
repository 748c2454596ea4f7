"""OpenTelemetry export, the wiring: which runs export (`attach_otel`, `enable_otel`), stored runs
replayed (`export_events`), and the tracer provider built from the standard OTEL_* variables.

How events become spans is `otel_spans.py`; its `OTelExporter` is re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from rolepool.core import ConfigError, Event
from rolepool.core.version import VERSION
from rolepool.runtime import run as run_module
from rolepool.runtime.otel_spans import PROVIDER, OTelExporter
from rolepool.runtime.stream import EventStream

__all__ = [
    "PROVIDER",
    "OTelExporter",
    "attach_otel",
    "disable_otel",
    "enable_otel",
    "export_events",
    "provider_from_env",
]


def _tracer(provider: trace.TracerProvider | None) -> trace.Tracer:
    return (provider or trace.get_tracer_provider()).get_tracer("rolepool", VERSION)


def attach_otel(
    stream: EventStream,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    record_content: bool = False,
) -> OTelExporter:
    """Export one run's spans. Without a provider, OTel's global one (set by the application)."""
    exporter = OTelExporter(_tracer(tracer_provider), record_content=record_content)
    stream.add_listener(exporter)
    return exporter


def export_events(
    events: Iterable[Event],
    tracer_provider: trace.TracerProvider | None = None,
    *,
    record_content: bool = False,
) -> None:
    """Export a stored run after the fact (`store.events(run_id)`): same spans as live."""
    exporter = OTelExporter(_tracer(tracer_provider), record_content=record_content)
    for event in sorted(events, key=lambda e: e.seq):
        exporter.handle(event)


_enabled: list[Callable[[], None]] = []


def enable_otel(
    tracer_provider: trace.TracerProvider | None = None, *, record_content: bool = False
) -> trace.TracerProvider:
    """Export every run created from now on (the `--otel` switch). Off by default.

    The provider: the one given, else the application's global SDK provider if it set one,
    else one built from the standard OTEL_* environment variables (`provider_from_env`).
    Calling it again replaces the previous setting; `disable_otel()` turns it off.
    """
    if tracer_provider is None:
        current = trace.get_tracer_provider()
        tracer_provider = current if isinstance(current, TracerProvider) else provider_from_env()
    disable_otel()
    provider = tracer_provider

    def hook(stream: EventStream) -> None:
        attach_otel(stream, provider, record_content=record_content)

    _enabled.append(run_module.on_new_run(hook))
    return provider


def disable_otel() -> None:
    """Stop attaching to new runs (runs already going keep exporting until they end)."""
    while _enabled:
        _enabled.pop()()


def provider_from_env(environ: dict[str, str] | None = None) -> TracerProvider:
    """A provider configured like any OTel SDK: OTEL_TRACES_EXPORTER (`otlp`, the spec's default,
    `console`, `none`, comma-separated), OTEL_SERVICE_NAME (default `rolepool`), and for OTLP the
    exporter's own OTEL_EXPORTER_OTLP_* variables (endpoint, headers, protocol)."""
    env = os.environ if environ is None else environ
    attrs = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "rolepool"}
    provider = TracerProvider(resource=Resource.create(attrs))
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    for name in names:
        if name == "none":
            continue
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(env)))
        else:
            raise ConfigError(
                f"unknown exporter {name!r}; rolepool supports otlp, console and none",
                where="OTEL_TRACES_EXPORTER",
            )
    return provider


def _otlp_exporter(env: Any) -> SpanExporter:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported; use http/protobuf",
            where="OTEL_EXPORTER_OTLP_PROTOCOL",
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            "OTLP export needs the otel extra: pip install 'rolepool[otel]' "
            "(or set OTEL_TRACES_EXPORTER=console)",
            where="OTEL_TRACES_EXPORTER",
        ) from exc
    return OTLPSpanExporter()
