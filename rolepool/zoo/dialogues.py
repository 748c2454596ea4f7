"""Multi-turn conversations: a call, its tool result, then a `finish` built from the result or a
next call. The next step is always determined by what the result says, so the scored turn has
exactly one right answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rolepool.zoo.corpus import _assistant_calls, _tool_result

if TYPE_CHECKING:
    from rolepool.zoo.corpus import Generator

Turns = list[dict[str, Any]]
Call = tuple[str, dict[str, Any]]


def continue_dialogue(gen: Generator, role: str) -> tuple[Turns, dict[str, Any]]:
    """User request -> call(s) -> result(s) -> ... ; the last assistant turn is the scored one."""
    build = {"planner": _planner, "coder": _coder, "search": _search, "writer": _writer}[role]
    turns, last = build(gen)
    return turns, {"expected": [{"name": n, "arguments": a} for n, a in last]}


def _finish(answer: str) -> list[Call]:
    return [("finish", {"answer": answer})]


def _exchange(turns: Turns, calls: list[Call], results: list[str], start: int) -> None:
    turns.append(_assistant_calls(calls, start))
    for i, ((name, _), content) in enumerate(zip(calls, results, strict=True)):
        turns.append(_tool_result(start + i, name, content))


def _planner(gen: Generator) -> tuple[Turns, list[Call]]:
    if gen.rng.random() < 0.6:
        text, calls = gen.parallel_request()
    else:
        text, args, _ = gen.request("assign")
        calls = [("assign", args)]
    results = [f"{a['role']}: {gen.values.phrase(1, 3)}" for _, a in calls]
    turns: Turns = [{"role": "user", "content": text}]
    _exchange(turns, calls, results, 0)
    last = _finish("; ".join(results))
    turns.append(_assistant_calls(last, len(calls)))
    return turns, last


def _coder(gen: Generator) -> tuple[Turns, list[Call]]:
    v = gen.values
    tool = gen.rng.choice(("run_python", "run_python", "read_file", "write_file"))
    text, args, facts = gen.request(tool)
    if tool == "run_python":
        result = facts["output"]
        failed = result.startswith("ERROR: ")
        answer = f"It failed: {result[7:]}" if failed else f"The output is {result}."
    elif tool == "read_file":
        result = v.phrase(2, 5)
        answer = f"{args['path']} says: {result}"
    else:
        result = f"Wrote {len(args['content'])} characters to {args['path']}."
        answer = f"Saved {args['path']}."
    turns: Turns = [{"role": "user", "content": text}]
    _exchange(turns, [(tool, args)], [result], 0)
    last = _finish(answer)
    turns.append(_assistant_calls(last, 1))
    return turns, last


def _search(gen: Generator) -> tuple[Turns, list[Call]]:
    rng, v = gen.rng, gen.values
    turns: Turns = []
    index = 0
    if rng.random() < 0.3:
        text, args, _ = gen.request("read_doc")
        doc_id = args["doc_id"]
        turns.append({"role": "user", "content": text})
    else:
        text, args, _ = gen.request("search_docs")
        turns.append({"role": "user", "content": text})
        if rng.random() < 0.12:
            _exchange(turns, [("search_docs", args)], ["No results."], 0)
            last = _finish(f"No documents match {args['query']}.")
            turns.append(_assistant_calls(last, 1))
            return turns, last
        hits = [(v.doc_id(), v.title()) for _ in range(min(args.get("top_k", 5), 3))]
        listing = "\n".join(f"[{d}] {t}" for d, t in hits)
        _exchange(turns, [("search_docs", args)], [listing], 0)
        index, doc_id = 1, hits[0][0]
        if rng.random() < 0.5:
            last = [("read_doc", {"doc_id": doc_id})]
            turns.append(_assistant_calls(last, index))
            return turns, last
    content = v.phrase(2, 6)
    _exchange(turns, [("read_doc", {"doc_id": doc_id})], [content], index)
    last = _finish(f"{doc_id} says: {content}")
    turns.append(_assistant_calls(last, index + 1))
    return turns, last


def _writer(gen: Generator) -> tuple[Turns, list[Call]]:
    text, args, _ = gen.request("write_section")
    words = len(args["body"].split())
    turns: Turns = [{"role": "user", "content": text}]
    _exchange(
        turns, [("write_section", args)], [f"Added section '{args['title']}' ({words} words)."], 0
    )
    last = _finish(f"Added the section {args['title']}.")
    turns.append(_assistant_calls(last, 1))
    return turns, last
