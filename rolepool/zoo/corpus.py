"""A deterministic corpus of tool-calling conversations for the four built-in roles.

Values are mostly pseudo-words ("plis woofus", and random letters such as "qzhvte"): a model can
only lower its loss on them by copying from the request, which is what makes it generalise to
values it never saw. Random letters tokenize into single letters, as real words outside the corpus
do; without them the models garbled such words ("budget" -> "budgal"). Splits:
`train`; `unseen_values` (train phrasings, held-out values); `unseen_phrasings` (held-out
templates, held-out values). Held-out values are held out by rule (pseudo-words by hash, real
words and integers by position/residue), so no test value ever occurs in train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rolepool.zoo import phrasings
from rolepool.zoo.dialogues import continue_dialogue, step_outcome
from rolepool.zoo.toolset import ROLE_TOOLS, TOOL_OWNER, WORKER_ROLES, openai_tools
from rolepool.zoo.turns import GREETING_REPLY, NO_TOOL_REPLY, REFUSAL_REPLY, assistant_calls
from rolepool.zoo.values import Values

SPLITS = ("train", "unseen_values", "unseen_phrasings")
# 1: the fixed template lists; 2: also every train-only frame around every core
# (`phrasings.EXTRA_TRAIN`), for the v2 reference models.
CORPUS_VERSIONS = (1, 2)
CATEGORIES = ("single", "parallel", "multi_turn", "no_call", "refusal")
ROLE_MIX: dict[str, dict[str, float]] = {
    "planner": {"single": 0.30, "parallel": 0.35, "multi_turn": 0.25, "no_call": 0.10},
    "coder": {"single": 0.42, "multi_turn": 0.33, "no_call": 0.08, "refusal": 0.17},
    "search": {"single": 0.42, "multi_turn": 0.33, "no_call": 0.08, "refusal": 0.17},
    "writer": {"single": 0.45, "multi_turn": 0.30, "no_call": 0.08, "refusal": 0.17},
}


@dataclass
class Example:
    """One conversation. The last assistant message is the one a scorer checks; `meta` says what
    it should be: `expected` calls (name + arguments), or none and `refer_role` for a refusal."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self) -> list[dict[str, Any]]:
        """The conversation up to (not including) the scored assistant turn."""
        return self.messages[:-1]


class Generator:
    """Builds examples for one split; every choice comes from one seeded `random.Random`."""

    def __init__(self, split: str, seed: int, corpus: int = 1) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if corpus not in CORPUS_VERSIONS:
            raise ValueError(f"corpus must be one of {CORPUS_VERSIONS}, not {corpus!r}")
        self.split = split
        # v2's extra templates only in its train split (see phrasings.EXTRA_TRAIN)
        self.extra = split == "train" and corpus >= 2
        self.rng = random.Random(f"{split}:{seed}")
        self.values = Values(self.rng, held_out=split != "train")
        self.which = 1 if split == "unseen_phrasings" else 0

    def pick(self, templates: phrasings.Templates, extra: str | None = None) -> str:
        """A template of this split; `extra` names corpus v2's additions to the list."""
        pool = templates[self.which]
        if self.extra and extra is not None:
            pool = pool + phrasings.EXTRA_TRAIN[extra]
        return self.rng.choice(pool)

    def decorate(self, text: str) -> str:
        rng = self.rng
        if rng.random() < 0.25:
            text = rng.choice(phrasings.PREFIXES) + text[0].lower() + text[1:]
        if rng.random() < 0.25 and text[-1] in ".?!":  # never glue a suffix onto a value
            text += rng.choice(phrasings.SUFFIXES)
        return text

    def role_name(self, role: str) -> str:
        return self.pick(phrasings.ROLE_NAMES[role])

    def example(self) -> Example:
        rng = self.rng
        role = rng.choice(list(ROLE_MIX))
        mix = ROLE_MIX[role]
        category = rng.choices(list(mix), weights=list(mix.values()))[0]
        build = {
            "single": self.single,
            "parallel": self.parallel,
            "multi_turn": self.multi_turn,
            "no_call": self.no_call,
            "refusal": self.refusal,
        }[category]
        turns, meta = build(role)
        tools = openai_tools(role)
        rng.shuffle(tools)
        system = {"role": "system", "content": f"You are the {role} agent."}
        return Example([system, *turns], tools, {"role": role, "category": category, **meta})

    # -- requests for one call ---------------------------------------------------------------
    def request(self, tool: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        """A user request for `tool`: its text, the call's arguments, facts for its result."""
        values, rng = self.values, self.rng
        if tool == "assign":
            role = rng.choice(WORKER_ROLES)
            args = {"role": role, "task": values.task()}
            template = self.pick(phrasings.ASSIGN, "assign")
            name = self.role_name(role)  # drawn after the template, as v1 did
            text = template.format(role=name, Role=name[0].upper() + name[1:], task=args["task"])
            return self.decorate(text), args, {}
        if tool == "run_python":
            code, output = values.code()
            template = self.pick(phrasings.TOOL_REQUESTS[tool], tool)
            args: dict[str, Any] = {"code": code}
            if "{timeout_s}" in template:
                args["timeout_s"] = values.number(1, 60)
            return self.decorate(template.format(**args)), args, {"output": output}
        fill = {
            "read_file": lambda: {"path": values.path()},
            "write_file": lambda: {"path": values.path(), "content": values.phrase(1, 4)},
            "search_docs": lambda: {"query": values.phrase(1, 3), "top_k": values.number(1, 20)},
            "read_doc": lambda: {"doc_id": values.doc_id()},
            "write_section": lambda: {"title": values.title(), "body": self.section_body()},
        }[tool]()
        template = self.pick(phrasings.TOOL_REQUESTS[tool], tool)
        text = template.format(**fill)
        args = {k: val for k, val in fill.items() if "{" + k + "}" in template}
        return self.decorate(text), args, {}

    def section_body(self) -> str:
        """A section's text: a phrase, or (as a workflow's compose step asks the writer) the
        steps' answers, `coder: The output is 42.; search: No documents match plis.`"""
        if self.rng.random() < 0.6:
            return self.values.phrase(2, 6)
        roles = self.rng.sample(WORKER_ROLES, self.rng.choice((1, 2, 2, 3)))
        return "; ".join(step_outcome(self, role)[1] for role in roles)

    def single(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        tool = self.rng.choice([t for t in ROLE_TOOLS[role] if t != "finish"])
        text, args, _ = self.request(tool)
        turns = [{"role": "user", "content": text}, assistant_calls([(tool, args)])]
        return turns, {"expected": [{"name": tool, "arguments": args}]}

    def parallel(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        text, calls = self.parallel_request()
        turns = [{"role": "user", "content": text}, assistant_calls(calls)]
        return turns, {"expected": [{"name": n, "arguments": a} for n, a in calls]}

    def parallel_request(self) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        rng, values = self.rng, self.values
        roles = rng.sample(WORKER_ROLES, rng.choice((2, 2, 3)))
        calls = [("assign", {"role": role, "task": values.task()}) for role in roles]
        parts = [
            self.pick(phrasings.PARALLEL_PARTS, "parallel_parts").format(
                role=self.role_name(a["role"]), task=a["task"]
            )
            for _, a in calls
        ]
        body = parts[0]
        for part in parts[1:]:
            body += self.pick(phrasings.PARALLEL_JOINS, "parallel_joins") + part
        lead = self.pick(phrasings.PARALLEL_LEADS, "parallel_leads")
        text = lead + body if lead else body[0].upper() + body[1:]
        return self.decorate(text + "."), calls

    # -- conversations with tool results ------------------------------------------------------
    def multi_turn(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return continue_dialogue(self, role)

    # -- no call ------------------------------------------------------------------------------
    def no_call(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if self.rng.random() < 0.4:
            text, reply = self.pick(phrasings.GREETINGS), GREETING_REPLY.format(role=role)
        else:
            text, reply = self.decorate(self.pick(phrasings.OUT_OF_SCOPE)), NO_TOOL_REPLY
        turns = [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        return turns, {"expected": []}

    def refusal(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        foreign = [t for t, owner in TOOL_OWNER.items() if owner != role]
        tool = self.rng.choice(foreign)
        text, _, _ = self.request(tool)
        target = TOOL_OWNER[tool]
        reply = REFUSAL_REPLY.format(role=role, target=target)
        turns = [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        return turns, {"expected": [], "refer_role": target}


def generate(split: str, n: int, seed: int = 0, corpus: int = 1) -> list[Example]:
    """`n` examples of `split`, the same for the same `(split, n, seed, corpus)`; `corpus` (the
    version) changes only the train split."""
    gen = Generator(split, seed, corpus)
    return [gen.example() for _ in range(n)]


def user_texts(examples: list[Example]) -> set[str]:
    return {m["content"] for ex in examples for m in ex.messages if m["role"] == "user"}
