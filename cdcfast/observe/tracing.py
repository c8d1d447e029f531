"""Optional OpenTelemetry tracing: one trace per batch, read → decode → mask in a parser worker,
write (with its checkpoint) in each writer, linked across processes by the batch's trace context.

Off unless ``CDCFAST_TRACING`` (or the config's ``tracing``) says where spans go:

- ``otlp`` or ``otlp:http://collector:4318/v1/traces``: OTLP over HTTP (needs
  ``opentelemetry-exporter-otlp-proto-http``);
- ``console``: spans printed on stderr;
- ``jsonl:/path/spans.jsonl``: one JSON object per span, appended (for tests and quick looks).

Without the ``opentelemetry-sdk`` package every call here is a no-op (one warning at setup).
Attributes are positions, counts and names: never a key or a value.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

ENV = "CDCFAST_TRACING"

_tracer: Any = None
_provider: Any = None


class Span:
    """What callers hold: attributes can be added while the span is open."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, **attributes: Any) -> None:
        if self._span is not None:
            for key, value in attributes.items():
                self._span.set_attribute(key, value)


def enabled() -> bool:
    return _tracer is not None


def setup(process: str, setting: str | None = None) -> None:
    """Start tracing in this process (named ``process`` in every span) if switched on."""
    global _tracer, _provider
    setting = os.environ.get(ENV, "") if setting is None else setting
    if not setting:
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        print(f"cdcfast: {ENV} is set but opentelemetry-sdk is not installed: tracing stays off", file=sys.stderr)
        return
    kind, _, target = setting.partition(":")
    provider = TracerProvider(resource=Resource.create({"service.name": "cdcfast", "cdcfast.process": process}))
    if kind == "jsonl":
        provider.add_span_processor(SimpleSpanProcessor(_json_lines_exporter(target, process)))
    elif kind == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            print("cdcfast: OTLP tracing needs opentelemetry-exporter-otlp-proto-http: tracing stays off",
                  file=sys.stderr)
            return
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target or None)))
    else:
        raise ValueError(f"{ENV}={setting!r}: expected otlp[:URL], console or jsonl:PATH")
    _provider, _tracer = provider, provider.get_tracer("cdcfast")


def shutdown() -> None:
    """Flush and stop (a process's last call)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


@contextmanager
def span(name: str, parent: str = "", links: Sequence[str] = (), **attributes: Any) -> Iterator[Span]:
    """A span under the current one, or under ``parent`` (a context from :func:`context`), linked to
    the spans of ``links`` (contexts too: e.g. the other batches a write took together)."""
    if _tracer is None:
        yield Span()
        return
    from opentelemetry.trace import Link, get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    context = propagator.extract({"traceparent": parent}) if parent else None
    linked = [Link(get_current_span(propagator.extract({"traceparent": c})).get_span_context()) for c in links if c]
    with _tracer.start_as_current_span(name, context=context, links=linked, attributes=attributes) as current:
        yield Span(current)


def context(span: Span) -> str:
    """The span's W3C ``traceparent``, to carry to another process ("" when tracing is off)."""
    if span._span is None:
        return ""
    from opentelemetry.trace import set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span._span))
    return carrier.get("traceparent", "")


def _json_lines_exporter(path: str, process: str) -> Any:
    """One JSON object per finished span, appended to a file shared by every process."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    lock = threading.Lock()

    class JsonLinesExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            lines = [
                json.dumps({
                    "name": s.name,
                    "process": process,
                    "trace_id": format(s.context.trace_id, "032x"),
                    "span_id": format(s.context.span_id, "016x"),
                    "parent_id": format(s.parent.span_id, "016x") if s.parent is not None else None,
                    "links": [format(link.context.span_id, "016x") for link in s.links],
                    "start_ns": s.start_time,
                    "end_ns": s.end_time,
                    "attributes": dict(s.attributes or {}),
                })
                for s in spans
            ]
            with lock, open(path, "a") as out:
                # One write per call in append mode: lines of different processes never interleave.
                out.write("".join(line + "\n" for line in lines))
            return SpanExportResult.SUCCESS

    return JsonLinesExporter()
