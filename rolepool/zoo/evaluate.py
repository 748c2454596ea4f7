"""Score a model on a corpus split: greedy, batched, left-padded generation with the KV cache, then
the same parser the run loop uses (`parse_tool_calls`) and the tools' JSON Schemas.

Metrics over items that expect calls: `parse_valid` (the output parses into at least one call),
`schema_valid` (every call names one of the role's tools and its arguments validate), `tool_name`
(the multiset of names is right) and `exact_call` (names and every argument, order-free across
parallel calls, omitted defaults filled in). Over items that expect no call: `no_call` (text, no
call) and `refusal` (no call, and the text names the role that owns the tool). `exact` is the
per-item correctness over everything, and is what the per-role and per-category tables show.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from rolepool.tools import parse_tool_calls, validate_arguments
from rolepool.zoo.corpus import Example, generate
from rolepool.zoo.toolset import ROLE_TOOLS, schema, with_defaults

SPLIT_SEED = 7  # test splits are drawn with their own seed, the same for every model
SPLIT_SIZE = 600


@dataclass
class Scored:
    example: Example
    output: str
    checks: dict[str, bool]


def load(model_dir: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


@torch.no_grad()
def generate_outputs(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, Any]]],
    tools: list[list[dict[str, Any]]],
    batch_size: int = 64,
    max_new_tokens: int = 160,
) -> list[str]:
    """Greedy completions for chat prompts, batched by prompt length (left padding)."""
    texts = [
        tokenizer.apply_chat_template(p, tools=t, add_generation_prompt=True, tokenize=False)
        for p, t in zip(prompts, tools, strict=True)
    ]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    outputs: list[str] = [""] * len(texts)
    tokenizer.padding_side = "left"
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        )
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        for i, text in zip(
            chunk, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
        ):
            outputs[i] = text
    return outputs


def _canonical(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    known = {name for names in ROLE_TOOLS.values() for name in names}
    return sorted(
        json.dumps([name, with_defaults(name, args) if name in known else args], sort_keys=True)
        for name, args in calls
    )


def score_item(example: Example, output: str) -> dict[str, bool]:
    """The checks that apply to one item (call items and no-call items have different ones)."""
    meta = example.meta
    parsed = parse_tool_calls(output)
    expected = [(c["name"], c["arguments"]) for c in meta["expected"]]
    if not expected:
        quiet = not parsed.calls and parsed.failure is None
        checks = {"no_call": quiet}
        if meta["category"] == "refusal":
            checks["refusal"] = quiet and meta["refer_role"] in parsed.text
            checks["exact"] = checks["refusal"]
        else:
            checks["exact"] = quiet
        return checks
    got = [(c.name, c.arguments) for c in parsed.calls]
    parse_valid = parsed.failure is None and bool(got)
    allowed = ROLE_TOOLS[meta["role"]]
    schema_valid = parse_valid and all(
        name in allowed and not validate_arguments(schema(name), args) for name, args in got
    )
    names_ok = parse_valid and sorted(n for n, _ in got) == sorted(n for n, _ in expected)
    exact = names_ok and _canonical(got) == _canonical(expected)
    return {
        "parse_valid": parse_valid,
        "schema_valid": schema_valid,
        "tool_name": names_ok,
        "exact_call": exact,
        "exact": exact,
    }


def summarise(items: list[Scored]) -> dict[str, Any]:
    def mean(key: str, pool: list[Scored]) -> float | None:
        vals = [s.checks[key] for s in pool if key in s.checks]
        return round(sum(vals) / len(vals), 4) if vals else None

    keys = ("parse_valid", "schema_valid", "tool_name", "exact_call", "no_call", "refusal", "exact")
    out: dict[str, Any] = {"n": len(items), **{k: mean(k, items) for k in keys}}
    for field in ("role", "category"):
        groups: dict[str, list[Scored]] = defaultdict(list)
        for s in items:
            groups[s.example.meta[field]].append(s)
        out[f"by_{field}"] = {
            name: {"n": len(pool), "exact": mean("exact", pool)}
            for name, pool in sorted(groups.items())
        }
    return out


def evaluate(
    model: Any,
    tokenizer: Any,
    split: str,
    n: int = SPLIT_SIZE,
    batch_size: int = 64,
    seed: int = SPLIT_SEED,
) -> tuple[dict[str, Any], list[Scored]]:
    """Metrics on `n` items of `split`, and every scored item (for error analysis)."""
    examples = generate(split, n, seed=seed)
    start = time.perf_counter()
    outputs = generate_outputs(
        model,
        tokenizer,
        [e.prompt() for e in examples],
        [e.tools for e in examples],
        batch_size=batch_size,
    )
    items = [Scored(e, o, score_item(e, o)) for e, o in zip(examples, outputs, strict=True)]
    summary = summarise(items)
    summary["generate_s"] = round(time.perf_counter() - start, 1)
    return summary, items


def errors(items: list[Scored], limit: int = 20) -> list[dict[str, Any]]:
    bad = [s for s in items if not s.checks["exact"]]
    return [
        {
            "request": next(m["content"] for m in s.example.messages if m["role"] == "user"),
            "category": s.example.meta["category"],
            "expected": s.example.meta["expected"],
            "output": s.output,
        }
        for s in bad[:limit]
    ]
