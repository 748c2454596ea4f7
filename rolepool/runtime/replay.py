"""Resume an interrupted run: run it again from the start, answering from its stored events.

A resumed run is a new run (`run.started` names the run it continues in `resumed_from`) that runs
the same workflow on the same task in the same workspace, with a `Replay` in front of the worker
and the tools. Every span gets a key that is the same in both runs, built from what the code does
rather than from ids or timing: an agent is `<parent>/<name>#<n>` (the n-th agent of that name
under the run or under the tool call that started it), a model call `<agent>/t<turn>/m<n>` (the
n-th ask of that turn: a prompt refused as too long is asked again in the same turn) and a tool
call `<agent>/t<turn>/c<n>` (the n-th call checked in that turn; call ids are no use, a parser
makes fresh random ones when the reply names none). Steps that run concurrently therefore match
whatever order they start in.

- A model call whose key has a stored reply is answered from it, never sent to a worker; the
  request must hash to the stored `prompt_digest`, else the run stops with `ResumeDiverged`
  (the code, the workflow or its options changed: the stored history no longer answers it). A call
  that failed, or never answered, is asked live (model calls have no side effects).
- A tool call with a stored `tool.finished` gets the stored result and does not run. One with
  `tool.started` but no end was interrupted: it is not run again (it may have taken effect), and
  the model gets a tool error saying so. Only tools that start agents (a workflow's `assign`) run
  again, so that the agents they start replay their own calls one by one.
- Everything past the stored events runs live, and is stored in the new run, so a resumed run can
  itself be resumed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rolepool.core import Completion, Event, Request, ToolCall, ToolResult, UserError
from rolepool.core import events as ev
from rolepool.pools.worker import Worker
from rolepool.runtime.store import EventStore

INTERRUPTED_CALL = (
    "interrupted: this call started before the run was interrupted and is not run again "
    "(it may or may not have taken effect); check its effect before calling it again"
)


_ASKED = {"messages", "tools", "sampling", "role", "agent", "decoding", "worker"}
"""The request fields a model's reply depends on (not its run or span ids)."""


_REPLY = set(Completion.model_fields) & set(ev.ModelCompleted.model_fields)
"""What a stored `model.completed` gives back of the worker's `Completion`: the fields they share
(text, calls, usage, worker, ...), so a field added to both is replayed too."""


class ResumeError(UserError):
    """This run cannot be resumed (not interrupted, already resumed, another workflow)."""


class ResumeDiverged(ResumeError):
    """The resumed run asked something its stored events do not answer: it stops there rather
    than guess. A tool that fails with it does not become a tool error: it ends the run."""


def prompt_digest(request: Request) -> str:
    """A hash of what the model is asked: messages, tools, sampling, role, agent, decoding. Call
    ids count by their order of appearance, not their value: a parser draws them at random."""
    shown = request.model_dump(mode="json", include=_ASKED)
    order: dict[str, str] = {}
    for message in shown["messages"]:
        for call in message["tool_calls"]:
            call["id"] = order.setdefault(call["id"], f"#{len(order)}")
        if message["tool_call_id"] is not None:
            message["tool_call_id"] = order.setdefault(message["tool_call_id"], f"#{len(order)}")
    text = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Origin:
    """The interrupted run a resume continues: its id, task, workflow, workspace and events."""

    run_id: str
    task: str
    workflow: str | None
    workspace: Path | None
    history: list[list[Event]]
    """The events of this run and of the runs it resumes in turn, the first run's first: a
    resume that stopped at a divergence lacks what its own origin had done, so all are read."""


def interrupted_run(store: EventStore, run_id: str, workflow: str | None) -> Origin:
    """The stored run `run_id` (or an unambiguous prefix), if it can be resumed by `workflow`."""
    matches = store.find_run(run_id)
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise ResumeError(f"{found} with id {run_id!r} in {store.path}")
    (run_id,) = matches
    status = store.status(run_id)
    events = store.events(run_id)
    if status != "interrupted" and not _diverged(events):
        why = {
            "running": "it is still running (its owner is alive)",
            "stalled": "its owner process is alive but has stopped beating; stop it first",
            "unknown": "it has no recorded owner (it predates owners), so it may still be running",
        }.get(status, f"it has {status}")
        raise ResumeError(f"run {run_id} cannot be resumed: {why}")
    if by := store.resumed_by(run_id):
        raise ResumeError(f"run {run_id} was already resumed as {by}; resume that run instead")
    first = events[0] if events else None
    if not isinstance(first, ev.RunStarted):
        raise ResumeError(f"run {run_id} has no run.started event to resume from")
    if first.workflow != workflow:
        raise ResumeError(
            f"run {run_id} ran workflow {first.workflow!r}, not {workflow!r}; resume it with the "
            "workflow that started it"
        )
    workspace = Path(first.workspace) if first.workspace else None
    history = [events]
    earlier = first.resumed_from
    while earlier is not None and len(history) < 1000:
        older = store.events(earlier)
        if not older or not isinstance(older[0], ev.RunStarted):
            break
        history.insert(0, older)
        earlier = older[0].resumed_from
    return Origin(run_id, first.task, first.workflow, workspace, history)


def _diverged(events: list[Event]) -> bool:
    """A resume that stopped at a divergence may be resumed in turn (its events hold all it did,
    replayed or live), once the code and options match again."""
    last = events[-1] if events else None
    return isinstance(last, ev.RunFailed) and last.error_type == ResumeDiverged.__name__


@dataclass
class SpanKeys:
    """Keys for a run's spans that are the same in the run and in its resume (module docs)."""

    keys: dict[str, str] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)
    """The current turn of each agent span."""
    seen: Counter[str] = field(default_factory=Counter)

    def see(self, event: Event) -> str | None:
        """The key of the event's span, made when the event opens a span."""
        span, parent = event.span_id, self.keys.get(event.parent_id or "", "?")
        if isinstance(event, ev.RunStarted):
            self.keys[span] = "run"
        elif isinstance(event, ev.AgentStarted):
            self.keys[span] = self._next(f"{parent}/{event.agent}#")
        elif isinstance(event, ev.ModelRequested):
            self.turns[event.parent_id or ""] = event.turn
            self.keys[span] = self._next(f"{parent}/t{event.turn}/m")
        elif isinstance(event, ev.ToolCallParsed | ev.ToolCallInvalid):
            turn = self.turns.get(event.parent_id or "", 0)
            self.keys[span] = self._next(f"{parent}/t{turn}/c")
        return self.keys.get(span)

    def _next(self, prefix: str) -> str:
        n = self.seen[prefix]
        self.seen[prefix] += 1
        return f"{prefix}{n}"


class Replay:
    """Answers a resumed run's model and tool calls from the interrupted run's events."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.answered: dict[str, tuple[str | None, ev.ModelCompleted]] = {}
        """Stored replies by key, with the digest of the prompt they answered."""
        self.parsed: dict[str, ev.ToolCallParsed] = {}
        self.started: set[str] = set()
        self.finished: dict[str, ev.ToolFinished] = {}
        for events in origin.history:  # a later run's record of a call wins
            self._index(events)
        self.live = SpanKeys()
        self.run_id = ""
        """The resumed run's own id, once it has started."""
        self.replayed: set[str] = set()
        """Spans of this run answered from the store: their closing events say `replayed`."""

    def _index(self, events: list[Event]) -> None:
        stored = SpanKeys()
        asked: dict[str, str | None] = {}
        for event in events:
            key = stored.see(event)
            if key is None:
                continue
            if isinstance(event, ev.ModelRequested):
                asked[key] = event.prompt_digest
            elif isinstance(event, ev.ModelCompleted) and event.error is None:
                self.answered[key] = (asked.get(key), event)
            elif isinstance(event, ev.ToolCallParsed):
                self.parsed[key] = event
            elif isinstance(event, ev.ToolStarted):
                self.started.add(key)
            elif isinstance(event, ev.ToolFinished):
                self.finished[key] = event

    def observe(self, event: Event) -> None:
        """See every event of the resumed run as it is emitted (`RunScope.emit`)."""
        if isinstance(event, ev.RunStarted):
            self.run_id = event.run_id
        self.live.see(event)
        if isinstance(event, ev.ModelCompleted | ev.ToolFinished):
            event.replayed = event.span_id in self.replayed

    async def complete(self, worker: Worker, request: Request) -> Completion:
        """The stored reply at this call's key, or the worker's when there is none."""
        key = self.live.keys.get(request.span_id or "", "")
        if key not in self.answered:
            return await worker.complete(request)
        asked, stored = self.answered[key]
        if asked is not None and asked != prompt_digest(request):
            raise self._diverged(
                f"at {key} (agent {request.agent!r}) the prompt differs from the stored one, so "
                "the stored reply does not answer it; did the code, the pool config or the run's "
                "options change?"
            )
        self.replayed.add(request.span_id or "")
        return Completion.model_validate(stored.model_dump(include=_REPLY))

    def tool_result(self, call: ToolCall, span_id: str) -> ToolResult | None:
        """The stored outcome of this call, an interrupted-call error, or None to run it."""
        key = self.live.keys.get(span_id, "")
        parsed = self.parsed.get(key)
        if parsed is None:
            return None
        if (parsed.tool, parsed.arguments) != (call.name, call.arguments):
            raise self._diverged(
                f"at {key} the stored call is {parsed.tool}({parsed.arguments}), now "
                f"{call.name}({call.arguments})"
            )
        done = self.finished.get(key)
        if done is None and key not in self.started:
            return None
        self.replayed.add(span_id)
        if done is None:
            return ToolResult(call_id=call.id, name=call.name, error=INTERRUPTED_CALL)
        content = done.full_result if done.full_result is not None else done.result
        return ToolResult(call_id=call.id, name=call.name, content=content, error=done.error)

    def _diverged(self, what: str) -> ResumeDiverged:
        return ResumeDiverged(
            f"resuming run {self.origin.run_id}: {what}. With the code and options it ran with, "
            f"resume {self.run_id or 'this run'} (it holds all that was done so far)"
        )
