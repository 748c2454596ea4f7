"""Time to first token, reasoning, cached tokens and the response id of a streamed HTTP answer
reach the model.completed event, the OTel span and the GenAI metric
`gen_ai.server.time_to_first_token` (issue 20.3)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rolepool import Agent, Completion, ScriptedWorker
from rolepool.core import events as ev
from rolepool.runtime import EventStore
from rolepool.runtime.otel_spans import TTFT_METRIC, OTelExporter

pytestmark = pytest.mark.anyio


async def test_streamed_answer_fields_reach_event_span_and_metric(tmp_path):
    answer = Completion(
        text="done",
        model="qwen3",
        worker="vllm",
        time_to_first_token=0.125,
        reasoning="think first",
        response_id="chatcmpl-1",
        cached_prompt_tokens=7,
    )
    store = EventStore(tmp_path / "e.db")
    result = await Agent("a").run("go", worker=ScriptedWorker([answer]), store=store)
    events = sorted(store.events(result.run_id), key=lambda e: e.seq)
    (completed,) = [e for e in events if isinstance(e, ev.ModelCompleted)]
    assert completed.time_to_first_token == 0.125 and completed.reasoning == "think first"
    assert completed.response_id == "chatcmpl-1" and completed.cached_prompt_tokens == 7

    memory, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    exporter = OTelExporter(
        tracer_provider.get_tracer("t"),
        record_content=True,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    for event in events:
        exporter.handle(event)
    (chat,) = [s for s in memory.get_finished_spans() if s.name.startswith("chat")]
    assert chat.attributes["gen_ai.response.id"] == "chatcmpl-1"
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 7
    assert chat.attributes["rolepool.time_to_first_token"] == 0.125
    assert chat.attributes["rolepool.reasoning"] == "think first"
    metrics = [
        m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    ]
    (ttft,) = [m for m in metrics if m.name == TTFT_METRIC]
    (point,) = ttft.data.data_points
    assert point.count == 1 and point.sum == 0.125 and ttft.unit == "s"
    assert point.attributes["gen_ai.response.model"] == "qwen3"


async def test_run_viewer_shows_reasoning_and_time_to_first_token(tmp_path):
    from rolepool.runtime.viewer import render_run_html

    answer = Completion(
        text="done", time_to_first_token=0.2, reasoning="<b>thinking</b>", cached_prompt_tokens=4
    )
    store = EventStore(tmp_path / "e.db")
    result = await Agent("a").run("go", worker=ScriptedWorker([answer]), store=store)
    page = render_run_html(list(store.events(result.run_id)))
    assert "reasoning" in page and "&lt;b&gt;thinking&lt;/b&gt;" in page
    assert "first token 200" in page and "4 cached" in page
