"""A scripted workflow whose tools leave a trace in the workspace, and a way to cut a stored run
short as a `kill -9` after its N-th event would, for the resume tests."""

from __future__ import annotations

import json
from pathlib import Path

from rolepool import Agent, FunctionWorker, ToolCall, Workflow, tool
from rolepool.core import RunContext
from rolepool.core import events as ev
from rolepool.core.messages import new_call_id
from rolepool.core.requests import Request
from rolepool.runtime import EventStore
from rolepool.runtime.owner import RunOwner

LOG = "effects.log"


@tool
def record(ctx: RunContext, note: str) -> str:
    """Append a note to the workspace's log: a side effect a resume must not repeat."""
    assert ctx.workspace is not None
    with open(ctx.workspace / LOG, "a") as f:
        f.write(note + "\n")
    return f"recorded {note} " + "x" * 2100  # longer than a stored event's `result`


def _reply(request: Request) -> str:
    """Text replies (the loop parses them, so call ids are drawn at random); each note names
    the role and turn, so the log shows any call that ran twice."""
    role = request.role or "?"
    turn = sum(m.role == "assistant" for m in request.messages) + 1
    if role == "planner":
        if turn == 1:
            return json.dumps(
                [
                    {"name": "assign", "arguments": {"role": "coder", "task": "code it"}},
                    {"name": "assign", "arguments": {"role": "search", "task": "find it"}},
                ]
            )
        if turn == 2:
            return json.dumps({"name": "record", "arguments": {"note": "planner-2"}})
        results = [m.content[:30] for m in request.messages if m.role == "tool"]
        return "plan done: " + " | ".join(results)
    if turn <= 2 and role == "coder" or turn == 1:
        notes = [f"{role}-{turn}-a", f"{role}-{turn}-b"] if turn == 1 else [f"{role}-{turn}"]
        return json.dumps([{"name": "record", "arguments": {"note": n}} for n in notes])
    return f"{role} done after {turn - 1} turns"


def _native(request: Request) -> str | list[ToolCall]:
    """The same replies as calls the worker parsed itself (as an OpenAI-compatible server's),
    with ids that are fresh every time."""
    reply = _reply(request)
    if not reply.startswith(("[", "{")):
        return reply
    calls = json.loads(reply)
    calls = calls if isinstance(calls, list) else [calls]
    return [ToolCall(id=new_call_id(), name=c["name"], arguments=c["arguments"]) for c in calls]


def scripted_worker(native: bool = False) -> FunctionWorker:
    return FunctionWorker(_native if native else _reply, name="scripted")


def scripted_workflow(instructions: str = "Plan.", coder: str = "Code.") -> Workflow:
    return Workflow(
        [
            Agent("planner", "planner", instructions, [record]),
            Agent("coder", "coder", coder, [record]),
            Agent("search", "search", "Search.", [record]),
            Agent("writer", "writer", "Write.", [record]),
        ]
    )


def log_lines(workspace: Path) -> list[str]:
    path = workspace / LOG
    return path.read_text().splitlines() if path.exists() else []


def dead_owner(run_id: str) -> RunOwner:
    """An owner on this host whose process is gone (no process started at time 1.0)."""
    return RunOwner(run_id, pid=1, host=_host(), process_start=1.0, heartbeat=1.0, interval=2.0)


def _host() -> str:
    from rolepool.runtime.owner import this_host

    return this_host()


def cut_run(source: list[ev.EventBase], n: int, db: Path, workspace: Path) -> str:
    """Store the first `n` events of a run in `db` with an owner that is gone, as a kill -9
    after the n-th commit leaves it, and write the effects of the calls that had started by
    then into `workspace`. Returns the run id."""
    kept = source[:n]
    run_id = kept[0].run_id
    with EventStore(db) as store:
        for event in kept:
            store.append(event)
        store.claim_run(dead_owner(run_id))
    started = {e.span_id for e in kept if isinstance(e, ev.ToolStarted) and e.tool == "record"}
    workspace.mkdir(parents=True, exist_ok=True)
    with open(workspace / LOG, "a") as f:
        for event in kept:
            if isinstance(event, ev.ToolCallParsed) and event.span_id in started:
                f.write(event.arguments["note"] + "\n")
    return run_id
