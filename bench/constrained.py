"""Schema-constrained decoding: tokens/s constrained vs free through TransformersWorker at
concurrency 1 and 32 on the shipped dense and MoE models, grammar compile time per tool set, and
the two grammar engines' mask time per token (the figures behind choosing llguidance).

    python bench/constrained.py                 # dense-s1 and moe-s1, 5 repetitions
    python bench/constrained.py --reps 5 --model dense-s2

Requests are the built-in roles' tools with a request each role was trained on, so the models
write real calls. Modes: `free`; `auto` (the call held to its schema once the model opens it);
`required` (every token of the reply masked: the worst case); `required` again with the masks
filled on the decoder's helper thread during the forward (`Decoder.overlap_masks`). Each
repetition runs the modes in
a rotated order; tokens/s is completion tokens over wall time, the median over repetitions, and
the ratio to free is taken within each repetition. Goal: constrained at most 10% slower than
free at concurrency 32. Engines: both compile the same call grammar (one of the tools, that
tool's schema) and drive it with random logits for up to 300 tokens; mask time per step covers
filling the masks of every row and applying them to the logits (xgrammar only if installed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import torch
from _common import table, write_result

from rolepool.core import Decoding, Message, Request, Sampling, ToolSpec
from rolepool.pools.grammar import GrammarCompiler, call_format_of
from rolepool.pools.transformers_worker import TransformersWorker
from rolepool.zoo import toolset as zoo_tools

ASKS = [
    ("coder", "Use python to run: print the sum of 2 and 40"),
    ("coder", "Read the file notes/todo.txt"),
    ("search", "Search the docs for kv cache eviction."),
    ("search", "Search the docs for expert routing."),
    ("writer", "Write a section called Results saying the tests pass"),
    ("planner", "Plan this: have the coder test the parser."),
]
OVERLAP = "required, masks filled during the forward"
MODES = ("free", "auto", "required", OVERLAP)
BFCL = Path(__file__).resolve().parents[2] / "shared" / "data" / "bfcl" / "BFCL_v4_multiple.json"


def requests(n: int, mode: str) -> list[Request]:
    out = []
    for i in range(n):
        role, text = ASKS[i % len(ASKS)]
        out.append(
            Request(
                messages=[
                    Message(role="system", content=f"You are the {role} agent."),
                    Message(role="user", content=text),
                ],
                tools=zoo_tools.role_specs(role),
                sampling=Sampling(max_tokens=64),
                decoding=Decoding(mode=mode.split(",")[0]),  # type: ignore[arg-type]
                role=role,
            )
        )
    return out


async def tokens_per_s(
    worker: TransformersWorker, batch: list[Request], concurrency: int
) -> tuple[float, float]:
    """Completion tokens per second over the batch, and completion tokens per request."""
    tokens = 0
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(request: Request) -> None:
        nonlocal tokens
        async with limiter:
            made = (await worker.complete(request)).usage.completion_tokens
        tokens += made  # after the await: `tokens += await ...` would read tokens before it

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for request in batch:
            tg.start_soon(one, request)
    return tokens / (time.perf_counter() - start), tokens / len(batch)


async def throughput(model: str, reps: int) -> dict[str, Any]:
    worker = TransformersWorker(model, name=model)
    await worker.load()
    out: dict[str, Any] = {}
    for concurrency, n in ((1, 12), (32, 96)):
        batches = {mode: requests(n, mode) for mode in MODES}
        for mode in MODES:  # warm-up: grammars compiled, caches grown
            await tokens_per_s(worker, batches[mode][: min(n, 6)], concurrency)
        runs: dict[str, list[float]] = {mode: [] for mode in MODES}
        lengths: dict[str, float] = {}
        for rep in range(reps):
            order = MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]
            for mode in order:
                worker._decoder.overlap_masks = mode == OVERLAP  # type: ignore[union-attr]
                speed, lengths[mode] = await tokens_per_s(worker, batches[mode], concurrency)
                runs[mode].append(speed)
            worker._decoder.overlap_masks = False  # type: ignore[union-attr]
        ratios = {
            mode: statistics.median(a / f for a, f in zip(runs[mode], runs["free"], strict=True))
            for mode in MODES
        }
        out[f"c{concurrency}"] = {
            "tokens_per_s": {m: statistics.median(v) for m, v in runs.items()},
            "runs": runs,
            "ratio_vs_free": ratios,
            "tokens_per_request": lengths,
        }
    await worker.aclose()
    return out


def tool_sets() -> dict[str, list[ToolSpec]]:
    sets = {role: zoo_tools.role_specs(role) for role in ("planner", "coder", "search", "writer")}
    if BFCL.is_file():
        cases = [json.loads(line) for line in BFCL.read_text().splitlines() if line.strip()]
        big = max(cases, key=lambda c: len(json.dumps(c["function"])))
        sets[f"bfcl {big['id']}"] = [
            ToolSpec(name=f["name"].replace(".", "_"), parameters=_json_schema(f["parameters"]))
            for f in big["function"]
        ]
    return sets


def _json_schema(value: Any) -> Any:
    """BFCL's schema dialect ("dict", "float", "tuple", "any") as JSON Schema."""
    if isinstance(value, list):
        return [_json_schema(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _json_schema(v) for k, v in value.items() if k != "optional"}
    kind = {"dict": "object", "float": "number", "tuple": "array", "any": None}
    if out.get("type") in kind:
        if kind[out["type"]] is None:
            out.pop("type")
        else:
            out["type"] = kind[out["type"]]
    return out


def compile_times(tokenizer: Any, eos: list[int], reps: int) -> dict[str, dict[str, Any]]:
    out = {}
    for name, tools in tool_sets().items():
        cold = []
        for _ in range(reps):
            compiler = GrammarCompiler(tokenizer, eos, call_format_of(tokenizer))
            start = time.perf_counter()
            compiler.grammar(Decoding(mode="auto"), tools)
            cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        compiler.grammar(Decoding(mode="auto"), tools)
        cached = time.perf_counter() - start
        chars = len(json.dumps([t.parameters for t in tools]))
        out[name] = {
            "tools": len(tools),
            "schema_chars": chars,
            "compile_ms": 1000 * statistics.median(cold),
            "cached_ms": 1000 * cached,
        }
    return out


def engine_masks(tokenizer: Any, eos: list[int]) -> dict[str, Any]:
    """Median mask time per step (every row filled, then applied) for each engine."""
    from rolepool.pools.constrained import BatchMask, RowGrammar

    out: dict[str, Any] = {}
    compiler = GrammarCompiler(tokenizer, eos, call_format_of(tokenizer))
    vocab = len(tokenizer)
    for name, tools in tool_sets().items():
        grammar = compiler.grammar(Decoding(mode="required"), tools)
        schema = {"anyOf": [_call(t) for t in tools]}
        for batch in (1, 32):
            rows = [RowGrammar(grammar) for _ in range(batch)]

            def step(rows=rows) -> tuple[float, list[int]]:
                logits = torch.randn(len(rows), vocab)
                start = time.perf_counter()
                BatchMask.fill(rows).apply(logits)  # type: ignore[union-attr]
                return time.perf_counter() - start, logits.argmax(-1).tolist()

            out[f"llguidance {name} b{batch}"] = _drive(step, rows, _llguidance_advance)
            for row in rows:
                row.release()
            xgr = _xgrammar_step(tokenizer, schema, batch, vocab)
            if xgr is not None:
                out[f"xgrammar {name} b{batch}"] = _drive(*xgr)
    return out


def _call(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _xgrammar_step(tokenizer: Any, schema: dict[str, Any], batch: int, vocab: int) -> Any:
    try:
        import xgrammar as xgr
    except ImportError:
        return None
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_json_schema(
        json.dumps(schema), any_whitespace=False, separators=(", ", ": ")
    )
    matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch)]
    bitmask = xgr.allocate_token_bitmask(batch, vocab)

    def step() -> tuple[float, list[int]]:
        logits = torch.randn(batch, vocab)
        start = time.perf_counter()
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(bitmask, i)
        xgr.apply_token_bitmask_inplace(logits, bitmask)
        return time.perf_counter() - start, logits.argmax(-1).tolist()

    def advance(matcher: Any, token: int) -> None:
        matcher.accept_token(token)
        if matcher.is_terminated():  # a finished reply: the row starts the next one
            matcher.reset()

    return step, matchers, advance


def _llguidance_advance(row: Any, token: int) -> None:
    row.advance(token)
    if row.matcher.is_stopped():  # a finished reply: the row starts the next one
        row.matcher.reset()


def _drive(step: Any, rows: list[Any], advance: Any, steps: int = 300) -> dict[str, float]:
    times = []
    for _ in range(steps):
        seconds, tokens = step()
        times.append(seconds)
        for row, token in zip(rows, tokens, strict=True):
            advance(row, token)
    median = statistics.median(times)
    return {"mask_us_per_step": 1e6 * median, "mask_us_per_row": 1e6 * median / len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", action="append", help="shipped model names (default dense-s1, moe-s1)"
    )
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = args.model or ["dense-s1", "moe-s1"]
    speed = {m: anyio.run(throughput, m, args.reps) for m in models}
    probe = TransformersWorker(models[0])
    compile_ms = compile_times(probe.tokenizer, probe._eos, args.reps)
    masks = engine_masks(probe.tokenizer, probe._eos)
    rows = []
    for model, result in speed.items():
        for level in ("c1", "c32"):
            tps, ratio = result[level]["tokens_per_s"], result[level]["ratio_vs_free"]
            per = result[level]["tokens_per_request"]
            goal = ""
            if level == "c32":
                goal = "met" if min(ratio["auto"], ratio["required"]) >= 0.9 else "not met"
            rows.append(
                [
                    model,
                    level[1:],
                    f"{tps['free']:.0f}",
                    f"{tps['auto']:.0f} ({ratio['auto']:.2f}x)",
                    f"{tps['required']:.0f} ({ratio['required']:.2f}x)",
                    f"{tps[OVERLAP]:.0f} ({ratio[OVERLAP]:.2f}x)",
                    " / ".join(f"{per[m]:.0f}" for m in MODES[:3]),
                    goal,
                ]
            )
    speed_table = table(
        [
            "model",
            "concurrency",
            "free tok/s",
            "auto tok/s (x free)",
            "required tok/s (x free)",
            "required, masks during the forward (x free)",
            "tokens/request free / auto / required",
            "goal: ≥0.90x at c32",
        ],
        rows,
    )
    compile_table = table(
        ["tool set", "tools", "schema chars", "compile ms (cold)", "cached ms"],
        [
            [n, c["tools"], c["schema_chars"], f"{c['compile_ms']:.1f}", f"{c['cached_ms']:.3f}"]
            for n, c in compile_ms.items()
        ],
    )
    mask_table = table(
        ["engine, tool set, batch", "µs per step", "µs per row"],
        [
            [n, f"{m['mask_us_per_step']:.0f}", f"{m['mask_us_per_row']:.1f}"]
            for n, m in masks.items()
        ],
    )
    note = (
        f"\n\nMedians of {args.reps} repetitions (12 requests at concurrency 1, 96 at 32); 64 "
        "tokens at most per reply, so tokens/s counts prefill in too: a mode whose replies are "
        "longer amortises it better; the shipped "
        "tokenizer (vocabulary 512). Compile: a fresh compiler per repetition (the `auto` "
        "grammar of the tool set); cached: the same request again (a hash lookup)."
    )
    write_result(
        "constrained",
        "Constrained decoding: throughput, compile time, engines' mask time",
        {"throughput": speed, "compile": compile_ms, "masks": masks},
        speed_table + "\n\n" + compile_table + "\n\n" + mask_table + note,
    )


if __name__ == "__main__":
    main()
