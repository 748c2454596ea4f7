"""Run a suite's cases through the real agent loop on each worker, and record one result line per
case x worker as it finishes.

A case runs exactly as production would run its turn: `run_agent` with the case's conversation,
its tools and the default validation retries. The tools are the case's schemas with a recording
function and `ends_run=True`, so the run ends after the first turn whose calls are all valid (the
turn being scored), and nothing is ever executed for real. What the model did is read back from
the run's events (`model.completed`, `tool.call.parsed`, `tool.call.invalid`): the same record a
user's trace holds, so an eval scores what the runtime saw.

All cases of all workers are in flight together (bounded per worker), so each in-process worker
batches its requests. Events go to `DIR/events.db`, never the user's store: an eval makes
thousands of runs, and keeping them beside the results lets `rolepool trace show RUN --db
DIR/events.db` open the trace behind any line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from rolepool.core import (
    Decoding,
    Event,
    Message,
    RequestRefused,
    RolepoolError,
    ToolCall,
    Usage,
    UserError,
    WorkerError,
    WorkerInfo,
)
from rolepool.core.events import ModelCompleted, ModelRequested, ToolCallInvalid, ToolCallParsed
from rolepool.evals.bfcl.multi_turn import Conversation
from rolepool.evals.bfcl.schema import tool_accepted
from rolepool.evals.cases import Attempt, Case, Prediction
from rolepool.evals.result_line import AttemptRecord, CallRecord, ErrorKind, ResultLine
from rolepool.evals.results import ResultsFile
from rolepool.evals.role_expert_load import merge_counts
from rolepool.evals.scoring import score_case
from rolepool.pools.worker import Worker
from rolepool.runtime import EventStore, Limits, LoopInputs, execute, new_scope, run_agent
from rolepool.tools.parsing import parse_tool_calls
from rolepool.tools.tool import Tool


@dataclass(frozen=True)
class Target:
    """One worker to evaluate, under the name the results and report use."""

    name: str
    worker: Worker | None  # None: a replay, scored without a model
    decoding: str = "free"
    """The request decoding mode the cases run with (`rolepool.evals.decoding`)."""


def case_tools(case: Case) -> list[Tool]:
    """The case's schemas as tools that only acknowledge a call and end the run."""

    def record(**arguments: Any) -> str:
        return "recorded"

    tools = []
    for spec in case.tools:
        try:
            tools.append(
                Tool.from_schema(
                    spec.name,
                    spec.description,
                    spec.parameters or {"type": "object", "properties": {}},
                    record,
                    ends_run=True,
                )
            )
        except RolepoolError as exc:
            raise UserError(f"suite {case.suite!r}, case {case.id!r}: bad tool: {exc}") from None
    return tools


def check_cases(cases: Sequence[Case]) -> None:
    """Fail before any model runs if a case's tools cannot be built. A tool its loader already
    built once (`tool_accepted`) is not built again."""
    for case in cases:
        if not all(tool_accepted(t.name, t.description, t.parameters) for t in case.tools):
            case_tools(case)


def prediction_from_events(events: Sequence[Event], error: str | None = None) -> Prediction:
    """The attempts of the scored turn: one per model call, up to the first valid one."""
    turns: list[_Turn] = []
    for event in events:
        turn = turns[-1] if turns else None
        if isinstance(event, ModelRequested) and turn is not None and turn.valid:
            break
        if isinstance(event, ModelCompleted):
            if event.error:  # a refused prompt the loop asks again, shortened (or the run's end)
                continue
            turns.append(_Turn(event.text, parse_tool_calls(event.text).calls))
        elif turn is not None and isinstance(event, ToolCallParsed):
            turn.calls.append(
                ToolCall(id=event.call_id, name=event.tool, arguments=event.arguments)
            )
        elif turn is not None and isinstance(event, ToolCallInvalid):
            if event.kind == "parse":
                turn.parse_error = "; ".join(event.errors) or "unparseable"
            else:
                turn.invalid.extend(event.errors or [f"invalid call to {event.tool!r}"])
                turn.calls.append(_invalid_call(turn, event))
    attempts = [
        Attempt(text=t.text, calls=t.calls, parse_error=t.parse_error, invalid=t.invalid)
        for t in turns
    ]
    return Prediction(attempts=attempts, error=error)


@dataclass
class _Turn:
    text: str
    parsed: list[ToolCall]  # the loop's parser on the text: where invalid calls' arguments are
    calls: list[ToolCall] = field(default_factory=list)
    parse_error: str | None = None
    invalid: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.parse_error is None and not self.invalid


def _invalid_call(turn: _Turn, event: ToolCallInvalid) -> ToolCall:
    """An invalid call's arguments are not in its event: take them from the turn's text, parsed
    by the loop's own parser; calls are checked (and evented) in the order they were parsed."""
    position = len(turn.calls)
    if position < len(turn.parsed) and turn.parsed[position].name == event.tool:
        return turn.parsed[position]
    return ToolCall(name=event.tool or "", arguments={})


async def run_case(
    case: Case, target: Target, *, store: EventStore | None, limits: Limits | None = None
) -> ResultLine:
    """Run one case on one worker and return its result line (scores included)."""
    events: list[Event] = []
    scope = new_scope(store=store if store is not None else False, limits=limits)
    scope.stream.add_listener(events.append)
    spec = LoopInputs(
        name=f"eval-{case.role or 'any'}",
        role=case.role or "assistant",
        instructions="",
        tools=tuple(case_tools(case)),
        decoding=Decoding(mode=target.decoding),  # type: ignore[arg-type]
    )
    messages = [Message.model_validate(m.model_dump()) for m in case.messages]
    task = next((m.content for m in reversed(messages) if m.role == "user"), case.id)

    async def body(run_scope: Any) -> Any:
        return await run_agent(spec, messages, target.worker, run_scope)

    conversation = Conversation(case) if case.multi_turn is not None else None
    if conversation is not None:  # BFCL multi-turn: turn by turn against BFCL's backends

        async def body(run_scope: Any) -> Any:  # noqa: F811
            return await conversation.run(target.worker, run_scope)

    started, t0 = time.time(), time.perf_counter()
    error: str | None = None
    kind: ErrorKind | None = None
    try:
        await execute(scope, task, body, label=spec.name)
    except RolepoolError as exc:
        error = f"{type(exc).__name__}: {exc}"
        kind = _error_kind(exc)
    wall = time.perf_counter() - t0
    if conversation is not None:
        prediction = conversation.prediction(events, error)
    else:
        prediction = prediction_from_events(events, error)
    line = result_line(
        case, target, prediction, events, started=started, wall=wall, run_id=scope.run_id
    )
    if conversation is not None:
        line.scores = conversation.scores(events, error)
    line.error_kind = kind  # a replay's line has no error_kind key: only a run can fail
    if target.decoding != "free":  # free lines keep the format they always had
        line.decoding = target.decoding
    return line


def _error_kind(exc: RolepoolError) -> ErrorKind:
    """`refused`: the case cannot be served by this model (a prompt over its context) and running
    it again will not change that; `worker`: the worker failed and a re-run retries the case;
    `run`: the model's own behaviour ended the run (scored as it is)."""
    if isinstance(exc, RequestRefused):
        return "refused"
    return "worker" if isinstance(exc, WorkerError) else "run"


def result_line(
    case: Case,
    target: Target,
    prediction: Prediction,
    events: Sequence[Event] = (),
    *,
    started: float | None = None,
    wall: float = 0.0,
    run_id: str | None = None,
    architecture: str | None = None,
) -> ResultLine:
    """The record of one case: scores from `prediction`, the rest from the run's events."""
    completed = [e for e in events if isinstance(e, ModelCompleted)]
    final = prediction.final
    info = _info(target.worker)
    first = completed[0] if completed else None
    return ResultLine(
        suite=case.suite,
        case=case.id,
        worker=target.name,
        model=(first.model if first and first.model else info.model if info else ""),
        architecture=architecture
        or (first.architecture if first and first.architecture != "unknown" else None)
        or (info.architecture if info else "unknown"),
        role=case.role,
        category=case.category,
        scores=score_case(case, prediction),
        calls=[CallRecord.of(c) for c in (final.calls if final else [])],
        attempts=[AttemptRecord.of(a) for a in prediction.attempts],
        error=prediction.error,
        turns=len({e.turn for e in completed}),  # a prompt asked again is one turn
        latency=sum(e.latency for e in completed),
        wall=wall,
        started=started,
        ended=None if started is None else started + wall,
        usage=Usage(
            prompt_tokens=sum(e.usage.prompt_tokens for e in completed),
            completion_tokens=sum(e.usage.completion_tokens for e in completed),
        ),
        expert_load=merge_counts([e.expert_load for e in completed]),
        run_id=run_id,
    )


def _info(worker: Worker | None) -> WorkerInfo | None:
    if worker is None:
        return None
    try:
        return worker.info
    except Exception:  # a worker whose info needs a server we cannot reach yet
        return None


@dataclass
class EvalCounts:
    """What a `run_eval` call did: lines recorded, and the cases its workers failed."""

    recorded: int = 0
    worker_errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # prompts over a model's context


async def run_eval(
    cases: Sequence[Case],
    targets: Sequence[Target],
    results: ResultsFile,
    *,
    store: EventStore | None,
    concurrency: int = 64,
    limits: Limits | None = None,
    on_result: Callable[[ResultLine], None] | None = None,
) -> EvalCounts:
    """Run every (case, target) pair that `results` does not hold yet.

    Each line is appended the moment its case finishes; a cancelled case writes nothing, so an
    interrupted eval leaves only complete lines and resumes where it stopped. A case whose worker
    failed (`WorkerError`: a server down, a timeout) is recorded as a failure with
    `error_kind: "worker"`, and the next run retries it; a case the worker refused
    (`RequestRefused`: a prompt over the model's context) is a failure for good (`"refused"`)."""
    done = results.done()
    todo: dict[str, list[Case]] = {
        t.name: [c for c in cases if (c.suite, c.id, t.name) not in done] for t in targets
    }
    counts = EvalCounts()

    async def one(case: Case, target: Target, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            line = await run_case(case, target, store=store, limits=limits)
        results.append(line)
        counts.recorded += 1
        if line.error_kind == "worker":
            counts.worker_errors.append(f"{target.name} on {case.id}: {line.error}")
        elif line.error_kind == "refused":
            counts.refused.append(f"{target.name} on {case.id}: {line.error}")
        if on_result is not None:
            on_result(line)

    for target in targets:
        # One model at a time: loading builds a meta-device skeleton for the parameter counts,
        # and torch's default-device switch is not safe while another thread loads weights.
        load = getattr(target.worker, "load", None)
        if todo[target.name] and load is not None:
            await load()
    async with anyio.create_task_group() as tg:
        for target in targets:
            limiter = anyio.CapacityLimiter(concurrency)
            for case in todo[target.name]:
                tg.start_soon(one, case, target, limiter)
    return counts
