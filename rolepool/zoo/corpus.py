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
import string
import zlib
from dataclasses import dataclass, field
from typing import Any

from rolepool.zoo import phrasings as P
from rolepool.zoo.toolset import ROLE_TOOLS, TOOL_OWNER, WORKER_ROLES, openai_tools

SPLITS = ("train", "unseen_values", "unseen_phrasings")
CATEGORIES = ("single", "parallel", "multi_turn", "no_call", "refusal")
ROLE_MIX: dict[str, dict[str, float]] = {
    "planner": {"single": 0.30, "parallel": 0.35, "multi_turn": 0.25, "no_call": 0.10},
    "coder": {"single": 0.42, "multi_turn": 0.33, "no_call": 0.08, "refusal": 0.17},
    "search": {"single": 0.42, "multi_turn": 0.33, "no_call": 0.08, "refusal": 0.17},
    "writer": {"single": 0.45, "multi_turn": 0.30, "no_call": 0.08, "refusal": 0.17},
}
GREETING_REPLY = "Hello! I am the {role} agent. What should I do?"
NO_TOOL_REPLY = "Sorry, none of my tools can do that."
REFUSAL_REPLY = "I am the {role} agent and can't do that; ask the {target} agent."
# Of the pseudo-word values, the share drawn as random letters (`Values.letters`).
LETTERS_SHARE = 0.25


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


class Values:
    """Draws argument values; `held_out` picks the disjoint test pools."""

    def __init__(self, rng: random.Random, held_out: bool) -> None:
        self.rng, self.held_out = rng, held_out
        words = P.REAL_WORDS
        self.real = [w for i, w in enumerate(words) if (i % 4 == 3) == held_out]

    def pseudo(self) -> str:
        rng = self.rng
        while True:
            n = rng.choice((1, 2, 2, 3))
            word = "".join(
                rng.choice(P.ONSETS) + rng.choice(P.VOWELS) + rng.choice(P.CODAS) for _ in range(n)
            )
            if len(word) >= 3 and self._mine(word):
                return word

    def letters(self) -> str:
        """A random string of 3-9 letters: it tokenizes into single letters and rare pieces, as
        real words and names outside the corpus do, so copying cannot lean on familiar syllables."""
        rng = self.rng
        while True:
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
            if self._mine(word):
                return word

    def _mine(self, word: str) -> bool:
        """Whether a made-up word belongs to this split: one in eight (by hash) is held out."""
        return (zlib.crc32(word.encode()) % 8 == 0) == self.held_out

    def word(self, pseudo_p: float = 0.65) -> str:
        """A pseudo-word (`pseudo_p`; `LETTERS_SHARE` of them random letters) or a real word."""
        draw = self.rng.random()
        if draw < pseudo_p * LETTERS_SHARE:
            return self.letters()
        return self.pseudo() if draw < pseudo_p else self.rng.choice(self.real)

    def phrase(self, lo: int, hi: int) -> str:
        return " ".join(self.word() for _ in range(self.rng.randint(lo, hi)))

    def number(self, lo: int, hi: int) -> int:
        pool = [v for v in range(lo, hi + 1) if (v % 7 == 3) == self.held_out]
        return self.rng.choice(pool)

    def task(self) -> str:
        if self.rng.random() < 0.3:
            return self.phrase(2, 3)
        return f"{self.rng.choice(P.TASK_VERBS)} the {self.phrase(1, 2)}"

    def title(self) -> str:
        title = self.phrase(1, 3)
        return title.title() if self.rng.random() < 0.5 else title

    def path(self) -> str:
        rng = self.rng
        name = self.word() if rng.random() < 0.6 else f"{self.word()}_{self.word()}"
        parts = [rng.choice(P.PATH_DIRS)] + [self.word() for _ in range(rng.randint(0, 1))]
        return "/".join(parts + [f"{name}.{rng.choice(P.PATH_EXTS)}"])

    def doc_id(self) -> str:
        """`kb-123`, or a slug of words (`plis-woofus`) as the built-in collection names files."""
        if self.rng.random() < 0.4:
            return "-".join(self.pseudo() for _ in range(self.rng.randint(1, 3)))
        return f"{self.rng.choice(P.DOC_PREFIXES)}-{self.number(1, 999)}"

    def code(self) -> tuple[str, str]:
        """Python source and what it prints (or the error it raises)."""
        rng = self.rng
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
        w, w2 = self.pseudo(), self.pseudo()
        kind = rng.randrange(10)
        forms: list[tuple[str, object]] = [
            (f"print({a} + {b})", a + b),
            (f"print({a} * {b})", a * b),
            (f"print({c} - {a})", c - a),
            (f"print(len('{w}'))", len(w)),
            (f"print('{w}'.upper())", w.upper()),
            (f"print(sum(range({a})))", sum(range(a))),
            (f"x = {a}; print(x * {b})", a * b),
            (f"print(max({a}, {b}, {c}))", max(a, b, c)),
            (f"print('{w}' + '{w2}')", w + w2),
            (f"print({c} / 0)", "ERROR: ZeroDivisionError: division by zero"),
        ]
        code, out = forms[kind]
        return code, str(out)


def _call(name: str, arguments: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "id": f"call_{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _assistant_calls(calls: list[tuple[str, dict[str, Any]]], start: int = 0) -> dict[str, Any]:
    tool_calls = [_call(name, args, start + i) for i, (name, args) in enumerate(calls)]
    return {"role": "assistant", "content": "", "tool_calls": tool_calls}


def _tool_result(index: int, name: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": f"call_{index}", "name": name, "content": content}


class Generator:
    """Builds examples for one split; every choice comes from one seeded `random.Random`."""

    def __init__(self, split: str, seed: int) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.split = split
        self.rng = random.Random(f"{split}:{seed}")
        self.values = Values(self.rng, held_out=split != "train")
        self.which = 1 if split == "unseen_phrasings" else 0

    def pick(self, templates: P.Templates) -> str:
        return self.rng.choice(templates[self.which])

    def decorate(self, text: str) -> str:
        rng = self.rng
        if rng.random() < 0.25:
            text = rng.choice(P.PREFIXES) + text[0].lower() + text[1:]
        if rng.random() < 0.25 and text[-1] in ".?!":  # never glue a suffix onto a value
            text += rng.choice(P.SUFFIXES)
        return text

    def role_name(self, role: str) -> str:
        return self.pick(P.ROLE_NAMES[role])

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
        v, rng = self.values, self.rng
        if tool == "assign":
            role = rng.choice(WORKER_ROLES)
            args = {"role": role, "task": v.task()}
            text = self.pick(P.ASSIGN).format(role=self.role_name(role), task=args["task"])
            return self.decorate(text), args, {}
        if tool == "run_python":
            code, output = v.code()
            template = self.pick(P.TOOL_REQUESTS[tool])
            args: dict[str, Any] = {"code": code}
            if "{timeout_s}" in template:
                args["timeout_s"] = v.number(1, 60)
            return self.decorate(template.format(**args)), args, {"output": output}
        fill = {
            "read_file": lambda: {"path": v.path()},
            "write_file": lambda: {"path": v.path(), "content": v.phrase(1, 4)},
            "search_docs": lambda: {"query": v.phrase(1, 3), "top_k": v.number(1, 20)},
            "read_doc": lambda: {"doc_id": v.doc_id()},
            "write_section": lambda: {"title": v.title(), "body": self.section_body()},
        }[tool]()
        template = self.pick(P.TOOL_REQUESTS[tool])
        text = template.format(**fill)
        args = {k: val for k, val in fill.items() if "{" + k + "}" in template}
        return self.decorate(text), args, {}

    def section_body(self) -> str:
        """A section's text: a phrase, or (as a workflow's compose step asks the writer) the
        steps' answers, `coder: The output is 42.; search: No documents match plis.`"""
        if self.rng.random() < 0.6:
            return self.values.phrase(2, 6)
        from rolepool.zoo.dialogues import step_outcome

        roles = self.rng.sample(WORKER_ROLES, self.rng.choice((1, 2, 2, 3)))
        return "; ".join(step_outcome(self, role)[1] for role in roles)

    def single(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        tool = self.rng.choice([t for t in ROLE_TOOLS[role] if t != "finish"])
        text, args, _ = self.request(tool)
        turns = [{"role": "user", "content": text}, _assistant_calls([(tool, args)])]
        return turns, {"expected": [{"name": tool, "arguments": args}]}

    def parallel(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        text, calls = self.parallel_request()
        turns = [{"role": "user", "content": text}, _assistant_calls(calls)]
        return turns, {"expected": [{"name": n, "arguments": a} for n, a in calls]}

    def parallel_request(self) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        rng, v = self.rng, self.values
        roles = rng.sample(WORKER_ROLES, rng.choice((2, 2, 3)))
        calls = [("assign", {"role": r, "task": v.task()}) for r in roles]
        parts = [
            self.pick(P.PARALLEL_PARTS).format(role=self.role_name(a["role"]), task=a["task"])
            for _, a in calls
        ]
        body = parts[0]
        for part in parts[1:]:
            body += self.pick(P.PARALLEL_JOINS) + part
        lead = self.pick(P.PARALLEL_LEADS)
        text = lead + body if lead else body[0].upper() + body[1:]
        return self.decorate(text + "."), calls

    # -- conversations with tool results ------------------------------------------------------
    def multi_turn(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from rolepool.zoo.dialogues import continue_dialogue

        return continue_dialogue(self, role)

    # -- no call ------------------------------------------------------------------------------
    def no_call(self, role: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if self.rng.random() < 0.4:
            text, reply = self.pick(P.GREETINGS), GREETING_REPLY.format(role=role)
        else:
            text, reply = self.decorate(self.pick(P.OUT_OF_SCOPE)), NO_TOOL_REPLY
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


def generate(split: str, n: int, seed: int = 0) -> list[Example]:
    """`n` examples of `split`, the same for the same `(split, n, seed)`."""
    gen = Generator(split, seed)
    return [gen.example() for _ in range(n)]


def user_texts(examples: list[Example]) -> set[str]:
    return {m["content"] for ex in examples for m in ex.messages if m["role"] == "user"}
