"""Runtime overhead per agent turn: rolepool against PydanticAI and the OpenAI Agents SDK.

    python bench/overhead.py                  # 20 runs x 20 turns per measurement, 7 repetitions
    python bench/overhead.py --turns 10 --runs 50 --reps 11

Every framework runs the same tool-calling loop: a model that answers instantly asks for the async
tool `step(n)` on each of the first K-1 turns and gives a plain answer on turn K. The model is
rolepool's test worker (`FunctionWorker`), PydanticAI's `FunctionModel`, and an Agents SDK `Model`
subclass that returns a prepared `ModelResponse`; nothing touches the network. So the time of a run
is the framework's own work: building requests, parsing, validating and running the call, feeding
the result back, events and tracing. Reported per turn (run time / K).

rolepool is measured with no store, with the durable SQLite store (the default in the product), and
with the store plus OTel export (`enable_otel` with an in-memory exporter). PydanticAI is measured
plain and instrumented with the same OTel provider; the Agents SDK with its tracing disabled and
enabled (spans built, no processor exporting them: its default exporter would need the network).
Modes alternate within each repetition; medians over repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import Budget, add_budget_arg, alternate_async, median, table, write_result
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TASK = "Take the steps, then say done."


async def step(n: int) -> str:
    """Take step n of the task."""
    return f"step {n} done"


# -- rolepool -----------------------------------------------------------------------------------


def rolepool_modes(turns: int, runs: int, db: Path, provider: TracerProvider) -> dict[str, Any]:
    from rolepool import Agent, EventStore, FunctionWorker, ToolCall
    from rolepool.runtime.otel import disable_otel, enable_otel

    def reply(request: Any) -> Any:
        done = sum(1 for m in request.messages if m.role == "tool")
        if done < turns - 1:
            return ToolCall(id=f"c{done}", name="step", arguments={"n": done})
        return "done"

    worker = FunctionWorker(reply)
    agent = Agent("bench", tools=[step], max_turns=turns + 1)
    store = EventStore(db)

    async def batch(store_option: Any) -> float:
        started = time.perf_counter()
        for _ in range(runs):
            result = await agent.run(TASK, worker=worker, store=store_option)
            assert result.turns == turns and result.output == "done", result
        return (time.perf_counter() - started) / (runs * turns)

    async def with_otel() -> float:
        enable_otel(provider)
        try:
            return await batch(store)
        finally:
            disable_otel()

    return {
        "rolepool": lambda: batch(False),
        "rolepool + store": lambda: batch(store),
        "rolepool + store + OTel": with_otel,
    }


# -- PydanticAI ---------------------------------------------------------------------------------


def pydantic_ai_modes(turns: int, runs: int, provider: TracerProvider) -> dict[str, Any]:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel

    def reply(messages: list[Any], info: AgentInfo) -> ModelResponse:
        done = sum(1 for m in messages for p in m.parts if isinstance(p, ToolReturnPart))
        if done < turns - 1:
            return ModelResponse(parts=[ToolCallPart("step", {"n": done}, tool_call_id=f"c{done}")])
        return ModelResponse(parts=[TextPart("done")])

    plain = Agent(FunctionModel(reply), tools=[step])
    settings = InstrumentationSettings(tracer_provider=provider)
    traced = Agent(InstrumentedModel(FunctionModel(reply), settings), tools=[step])

    def batch(agent: Any) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            started = time.perf_counter()
            for _ in range(runs):
                result = await agent.run(TASK)
                assert result.output == "done", result.output
            return (time.perf_counter() - started) / (runs * turns)

        return run

    return {"PydanticAI": batch(plain), "PydanticAI + OTel": batch(traced)}


# -- OpenAI Agents SDK --------------------------------------------------------------------------


def agents_sdk_modes(turns: int, runs: int) -> dict[str, Any]:
    from agents import Agent, RunConfig, Runner, function_tool, set_trace_processors
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    set_trace_processors([])  # spans are still built when tracing is on; nothing is sent

    class PreparedModel(Model):
        """Answers at once: a call to `step` for the first K-1 turns, then the final text."""

        async def get_response(self, system_instructions, input, *args, **kwargs):  # noqa: A002
            done = sum(1 for item in input if _item_type(item) == "function_call_output")
            if done < turns - 1:
                output: list[Any] = [
                    ResponseFunctionToolCall(
                        arguments=json.dumps({"n": done}),
                        call_id=f"c{done}",
                        name="step",
                        type="function_call",
                        id=f"fc{done}",
                        status="completed",
                    )
                ]
            else:
                output = [
                    ResponseOutputMessage(
                        id="m",
                        content=[
                            ResponseOutputText(text="done", type="output_text", annotations=[])
                        ],
                        role="assistant",
                        status="completed",
                        type="message",
                    )
                ]
            return ModelResponse(output=output, usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the bench does not stream")

    agent = Agent(name="bench", model=PreparedModel(), tools=[function_tool(step)])

    def batch(tracing: bool) -> Callable[[], Awaitable[float]]:
        config = RunConfig(tracing_disabled=not tracing)

        async def run() -> float:
            started = time.perf_counter()
            for _ in range(runs):
                result = await Runner.run(agent, TASK, max_turns=turns + 1, run_config=config)
                assert result.final_output == "done", result.final_output
            return (time.perf_counter() - started) / (runs * turns)

        return run

    return {"Agents SDK": batch(False), "Agents SDK + tracing": batch(True)}


def _item_type(item: Any) -> str | None:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


# -- report -------------------------------------------------------------------------------------


def report(samples: dict[str, list[float]], args: argparse.Namespace) -> tuple[dict, str]:
    med = {name: median(values) * 1e6 for name, values in samples.items()}
    reps = min(len(v) for v in samples.values())
    ours = med["rolepool + store"]
    peers = [name for name in ("PydanticAI", "Agents SDK") if name in med]
    ratios = {peer: ours / med[peer] for peer in peers}
    rows = [
        [
            name,
            f"{med[name]:.0f}",
            f"{min(samples[name]) * 1e6:.0f}",
            f"{ours / med[name]:.2f}" if name in peers else "",
        ]
        for name in samples
    ]
    met = all(r <= 0.5 for r in ratios.values()) and bool(ratios)
    markdown = (
        table(["framework", "µs/turn (median)", "µs/turn (best)", "rolepool+store / this"], rows)
        + f"\n\n{args.turns} turns per run, {args.runs} runs per measurement, {reps} "
        f"repetitions, modes alternating. Goal: rolepool with the durable store at most half the "
        f"per-turn overhead of each peer: **{'met' if met else 'not met'}** ("
        + ", ".join(f"{r:.2f}x {p}" for p, r in ratios.items())
        + "). OTel costs rolepool "
        f"{med['rolepool + store + OTel'] - ours:.0f} µs/turn; the store costs "
        f"{ours - med['rolepool']:.0f} µs/turn."
    )
    results = {
        "turns": args.turns,
        "runs": args.runs,
        "reps": reps,
        "us_per_turn_median": {k: round(v, 1) for k, v in med.items()},
        "us_per_turn_samples": {k: [round(x * 1e6, 1) for x in v] for k, v in samples.items()},
        "ratio_rolepool_store_to_peer": {k: round(v, 3) for k, v in ratios.items()},
        "goal_half_of_peers_met": met,
    }
    return results, markdown


async def main(args: argparse.Namespace) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tempfile.TemporaryDirectory() as tmp:
        modes = rolepool_modes(args.turns, args.runs, Path(tmp) / "events.db", provider)
        modes |= pydantic_ai_modes(args.turns, args.runs, provider)
        modes |= agents_sdk_modes(args.turns, args.runs)

        def clearing(fn: Callable[[], Awaitable[float]]) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                try:
                    return await fn()
                finally:
                    exporter.clear()  # spans would otherwise pile up across repetitions

            return run

        samples = await alternate_async(
            {k: clearing(v) for k, v in modes.items()}, args.reps, budget=Budget(args.budget)
        )
    results, markdown = report(samples, args)
    write_result("overhead", "Runtime overhead per agent turn", results, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="model calls per run (K)")
    parser.add_argument("--runs", type=int, default=20, help="runs per measurement")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (medians over these)")
    add_budget_arg(parser)
    asyncio.run(main(parser.parse_args()))
