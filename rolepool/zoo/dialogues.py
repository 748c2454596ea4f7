"""Multi-turn conversations: a call, its tool result, then a `finish` built from the result or a
next call. The next step is always determined by what the result says, so the scored turn has
exactly one right answer.

Results have the shapes the workflow shows the models: `search_docs` lines `[id] title — snippet`
and `read_doc` text as the built-in tools format them, a planner's step answers as the other roles
finish (`"search: <answer>"`) or as a failed step's error, and every result cut at RESULT_CHARS
with the runtime's marker, as `rolepool run` cuts results for the built-in pool."""

from __future__ import annotations

import random
from typing import Any, Protocol

from rolepool.core import ToolError, ToolResult
from rolepool.core.messages import tool_message
from rolepool.tools.results import format_result
from rolepool.zoo.toolset import WORKER_ROLES
from rolepool.zoo.turns import (
    NO_TOOL_REPLY,
    REFUSAL_REPLY,
    Call,
    Turns,
    assistant_calls,
    tool_result,
)
from rolepool.zoo.values import Values


class Requests(Protocol):
    """What a dialogue needs of the corpus's generator (`corpus.Generator`): its seeded random
    source, its values, and user requests for one call or for parallel assignments."""

    rng: random.Random
    values: Values

    def request(self, tool: str) -> tuple[str, dict[str, Any], dict[str, str]]: ...

    def parallel_request(self) -> tuple[str, list[Call]]: ...


RESULT_CHARS = 200
"""Longest tool result the reference models were trained on (longer ones are cut with the
runtime's marker); `rolepool run` cuts results to this on the built-in pool, whose models have a
512-token context."""


def continue_dialogue(gen: Requests, role: str) -> tuple[Turns, dict[str, Any]]:
    """User request -> call(s) -> result(s) -> ... ; the last assistant turn is the scored one."""
    build = {"planner": _planner, "coder": _coder, "search": _search, "writer": _writer}[role]
    turns, last = build(gen)
    return turns, {"expected": [{"name": n, "arguments": a} for n, a in last]}


def _finish(answer: str) -> list[Call]:
    return [("finish", {"answer": answer})]


def _exchange(turns: Turns, calls: list[Call], results: list[str], start: int) -> None:
    turns.append(assistant_calls(calls, start))
    for i, ((name, _), content) in enumerate(zip(calls, results, strict=True)):
        turns.append(tool_result(start + i, name, format_result(content, max_chars=RESULT_CHARS)))


def _planner(gen: Requests) -> tuple[Turns, list[Call]]:
    if gen.rng.random() < 0.6:
        text, calls = gen.parallel_request()
    else:
        text, args, _ = gen.request("assign")
        calls = [("assign", args)]
    steps = [step_outcome(gen, a["role"]) for _, a in calls]
    turns: Turns = [{"role": "user", "content": text}]
    _exchange(turns, calls, [shown for shown, _ in steps], 0)
    last = _finish("; ".join(summary for _, summary in steps))
    turns.append(assistant_calls(last, len(calls)))
    return turns, last


def step_outcome(gen: Requests, role: str) -> tuple[str, str]:
    """What the planner reads back from one step, and how its answer sums the step up: the
    step's answer as `role: answer` (a tool's outcome, or the agent's reply when no tool fit or
    the task was another role's), or a failed step's error, summed up as `role: failed`."""
    values, rng = gen.values, gen.rng
    if rng.random() < 0.15:
        reason = rng.choice(STEP_FAILURES).format(role=role, detail=values.phrase(1, 3))
        error = ToolError(f"the {role} step failed: {reason}", tool="assign")
        failed = ToolResult(call_id="", name="assign", error=f"{type(error).__name__}: {error}")
        return tool_message(failed).content, f"{role}: failed"  # as the loop shows a tool error
    if rng.random() < 0.2:  # the step's agent answered without a tool, or sent it elsewhere
        target = rng.choice([r for r in (*WORKER_ROLES, "planner") if r != role])
        answer = rng.choice((NO_TOOL_REPLY, REFUSAL_REPLY.format(role=role, target=target)))
    else:
        answer = {
            "coder": lambda: rng.choice(
                (f"The output is {values.code()[1]}.", f"It failed: {rng.choice(CODE_ERRORS)}")
            ),
            "search": lambda: rng.choice(
                (
                    f"{values.doc_id()} says: {_sentence(gen)}.",
                    f"No documents match {values.phrase(1, 3)}.",
                )
            ),
            "writer": lambda: f"Added the section {values.title()}.",
        }[role]()
    return f"{role}: {answer}", f"{role}: {answer}"


def _sentence(gen: Requests) -> str:
    """A sentence of a document: words, half the time capitalised as prose is."""
    text = gen.values.phrase(2, 6)
    return text[0].upper() + text[1:] if gen.rng.random() < 0.5 else text


STEP_FAILURES = (
    "no worker could serve role '{role}': {detail}",
    "ModelBehaviorError: the {role} agent's replies were invalid {detail}",
    "WorkerError: worker 'moe' died: {detail}",
)
CODE_ERRORS = (
    "ZeroDivisionError: division by zero",
    "NameError: name 'x' is not defined",
    "SyntaxError: invalid syntax",
)


def _coder(gen: Requests) -> tuple[Turns, list[Call]]:
    values = gen.values
    tool = gen.rng.choice(("run_python", "run_python", "read_file", "write_file"))
    text, args, facts = gen.request(tool)
    if tool == "run_python":
        result = facts["output"]
        failed = result.startswith("ERROR: ")
        answer = f"It failed: {result[7:]}" if failed else f"The output is {result}."
    elif tool == "read_file":
        result = values.phrase(2, 5)
        answer = f"{args['path']} says: {result}"
    else:
        result = f"Wrote {len(args['content'])} characters to {args['path']}."
        answer = f"Saved {args['path']}."
    turns: Turns = [{"role": "user", "content": text}]
    _exchange(turns, [(tool, args)], [result], 0)
    last = _finish(answer)
    turns.append(assistant_calls(last, 1))
    return turns, last


def _search(gen: Requests) -> tuple[Turns, list[Call]]:
    rng, values = gen.rng, gen.values
    turns: Turns = []
    index = 0
    if rng.random() < 0.3:
        text, args, _ = gen.request("read_doc")
        doc_id, title = args["doc_id"], values.title()
        turns.append({"role": "user", "content": text})
    else:
        text, args, _ = gen.request("search_docs")
        turns.append({"role": "user", "content": text})
        if rng.random() < 0.12:
            _exchange(turns, [("search_docs", args)], ["No results."], 0)
            last = _finish(f"No documents match {args['query']}.")
            turns.append(assistant_calls(last, 1))
            return turns, last
        n = rng.randint(1, min(args.get("top_k", 5), 5))
        hits = [(values.doc_id(), values.title(), values.phrase(4, 12)) for _ in range(n)]
        listing = "\n".join(f"[{d}] {t} — {snippet}" for d, t, snippet in hits)
        _exchange(turns, [("search_docs", args)], [listing], 0)
        index, (doc_id, title, _) = 1, hits[0]
        if rng.random() < 0.5:
            last = [("read_doc", {"doc_id": doc_id})]
            turns.append(assistant_calls(last, index))
            return turns, last
    sentences = [_sentence(gen) for _ in range(rng.randint(1, 5))]
    content = f"[{doc_id}] {title}\n\n# {title}\n\n" + " ".join(f"{s}." for s in sentences)
    _exchange(turns, [("read_doc", {"doc_id": doc_id})], [content], index)
    last = _finish(f"{doc_id} says: {sentences[0]}.")
    turns.append(assistant_calls(last, index + 1))
    return turns, last


def _writer(gen: Requests) -> tuple[Turns, list[Call]]:
    text, args, _ = gen.request("write_section")
    words = len(args["body"].split())
    turns: Turns = [{"role": "user", "content": text}]
    _exchange(
        turns, [("write_section", args)], [f"Added section '{args['title']}' ({words} words)."], 0
    )
    last = _finish(f"Added the section {args['title']}.")
    turns.append(assistant_calls(last, 1))
    return turns, last
