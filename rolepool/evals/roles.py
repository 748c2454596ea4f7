"""The built-in `roles` suite: the zoo generator's held-out splits as eval cases.

The cases are the first items of exactly the splits `rolepool.zoo.evaluate` scores the shipped
models on (same split seed), so `rolepool eval` and the model cards measure the same thing. Each
case's messages and tools are the training conversation up to the scored assistant turn: the
system prompt "You are the {role} agent.", the user's request, earlier calls and tool results,
and the role's tools in the generator's (shuffled) order. Through the real worker they render to
the same tokens the models were trained on.

Scoring follows the zoo: strings compare exactly; a parameter with a default may be left out when
the expected value is the default (the zoo fills defaults before comparing); a refusal must name
the role that owns the requested tool.
"""

from __future__ import annotations

import math
from typing import Any

from rolepool.core import ToolSpec
from rolepool.evals.cases import OMITTED, Case, ExpectedCall, messages_from_openai
from rolepool.zoo.corpus import Example, generate
from rolepool.zoo.toolset import schema as tool_schema

SPLITS: tuple[str, ...] = ("unseen_values", "unseen_phrasings")
SPLIT_SEED = 7
"""`rolepool.zoo.evaluate.SPLIT_SEED` (not imported: that module loads torch); a test checks."""
PER_SPLIT = 60
"""Default cases per split: 120 cases in all, about half a minute for the eight shipped models."""


def roles_cases(limit: int | None = None) -> list[Case]:
    """`PER_SPLIT` cases of each held-out split, interleaved so that `limit` keeps both splits."""
    per_split = PER_SPLIT if limit is None else min(PER_SPLIT, math.ceil(limit / len(SPLITS)))
    by_split = [
        [_case(split, i, e) for i, e in enumerate(generate(split, per_split, seed=SPLIT_SEED))]
        for split in SPLITS
    ]
    cases = [case for group in zip(*by_split, strict=True) for case in group]
    return cases if limit is None else cases[:limit]


def _case(split: str, index: int, example: Example) -> Case:
    meta = example.meta
    tools = [ToolSpec.model_validate(t.get("function", t)) for t in example.tools]
    expected = [
        ExpectedCall(name=c["name"], arguments=accepted_values(c["name"], c["arguments"]))
        for c in meta["expected"]
    ]
    return Case(
        id=f"roles/{split}/{index:04d}",
        suite="roles",
        role=meta["role"],
        category=meta["category"],
        messages=messages_from_openai(example.prompt()),
        tools=tools,
        expected=expected,
        string_match="exact",
        answer_contains=meta.get("refer_role"),
    )


def accepted_values(tool: str, arguments: dict[str, Any]) -> dict[str, list[Any]]:
    """The zoo's expected arguments as accepted values: a defaulted parameter accepts its
    default's omission when the expected value is the default, or when it was not asked for."""
    properties = tool_schema(tool)["properties"]
    accepted: dict[str, list[Any]] = {}
    for name, prop in properties.items():
        has_default = "default" in prop
        if name in arguments:
            value = arguments[name]
            both = has_default and value == prop["default"]
            accepted[name] = [value, OMITTED] if both else [value]
        elif has_default:
            accepted[name] = [prop["default"], OMITTED]
    return accepted
