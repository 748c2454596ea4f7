"""BFCL's multi-turn categories through rolepool's real agent loop, scored as BFCL's multi-turn
checker scores them.

A case is a conversation of user turns against BFCL's executable backends (`backends`), with one
fresh backend state per case. Each user turn is one `run_agent` call over the conversation so far,
with the backends' functions as tools; the loop runs the model's calls, feeds the results back and
ends the turn at the model's answer in text (at most `MAX_STEPS` model steps a turn, BFCL's limit:
past it the case fails, as BFCL's force-termination does). In `multi_turn_miss_func` a turn with
no user message is where held-out functions become available: they are added to the tools and the
user says so in BFCL's words. In `multi_turn_miss_param` a turn whose ground truth is empty is
where the model should ask for what is missing; the next user turn gives it.

The verdict (`multi_turn_verdict`) is BFCL's checker's, turn by turn: the calls the model made in
each turn are executed again, in order, on a fresh copy of the backends, and the ground truth's on
another; after every turn whose ground truth has calls, (1) the model must have made at least one
call in it, (2) every public attribute of every backend must equal the ground truth's (state
check), and (3) every result the ground truth's calls returned in that turn must be among the
results the model's calls returned so far, counted with multiplicity (response check). Turns with
an empty ground truth are not checked (their calls still change the state). One rolepool rule
differs from BFCL's harness: a call the loop refuses as invalid against its schema is not executed
(BFCL's harness would execute it and return the backend's error); it is told to the model, and
`exact_strict` is false for such a run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from rolepool.core import Message, ToolCall, UserError
from rolepool.core.events import Event, ModelCompleted, ToolCallInvalid
from rolepool.evals.bfcl.backends import CLASS_MODULES, Backends, call_from_text
from rolepool.evals.bfcl.data import MULTI_TURN_CATEGORIES, find_bfcl_dir, json_lines
from rolepool.evals.bfcl.schema import convert_function
from rolepool.evals.cases import Attempt, Case, MultiTurnKey, Prediction
from rolepool.evals.errors import SuiteError
from rolepool.evals.scoring import METRICS, Scores
from rolepool.runtime import LoopInputs, run_agent
from rolepool.runtime.run import BodyResult

MAX_STEPS = 20
"""BFCL's `MAXIMUM_STEP_LIMIT`: model steps in one user turn before the case is force-quit."""
ADDED_FUNCTIONS = "I have updated some more functions you can choose from. What about now?"
"""BFCL's user message on the turn where held-out functions are added."""


def load_multi_turn(
    suite: str, bfcl_dir: Path | str | None, limit: int | None = None
) -> list[Case]:
    """The cases of one multi-turn category, in file order."""

    category = MULTI_TURN_CATEGORIES[suite]
    root = find_bfcl_dir(bfcl_dir)
    questions = root / f"BFCL_v4_{category}.json"
    answers = root / "possible_answer" / questions.name
    for path in (questions, answers):
        if not path.is_file():
            raise UserError(f"{suite}: {path} not found (is {root} BFCL v4's data directory?)")
    truth = {entry["id"]: entry.get("ground_truth") for _, entry in json_lines(answers)}
    docs: dict[str, list[dict[str, Any]]] = {}
    cases = []
    for where, entry in json_lines(questions):
        if limit is not None and len(cases) >= limit:
            break
        cases.append(_case(suite, category, entry, truth.get(entry["id"]), docs, root, where))
    return cases


def _case(
    suite: str,
    category: str,
    entry: dict[str, Any],
    truth: Any,
    docs: dict[str, list[dict[str, Any]]],
    root: Path,
    where: str,
) -> Case:
    classes = entry.get("involved_classes") or []
    unknown = [c for c in classes if c not in CLASS_MODULES]
    if unknown or not isinstance(truth, list) or not isinstance(entry.get("question"), list):
        raise SuiteError(where, f"not a BFCL multi-turn entry (classes {unknown}, ground truth)")
    functions = [f for c in classes for f in _docs(c, docs, root, where)]
    missed: dict[str, list[dict[str, Any]]] = {}
    for turn, names in (entry.get("missed_function") or {}).items():
        missed[turn] = [f for f in functions if f["name"] in names]
        functions = [f for f in functions if f["name"] not in names]
    turns = [[Message.model_validate(m) for m in turn] for turn in entry["question"]]
    key = MultiTurnKey(
        category=category,
        turns=turns,
        initial_config=entry.get("initial_config") or {},
        involved_classes=classes,
        functions=functions,
        missed_functions=missed,
        ground_truth=truth,
    )
    return Case(
        id=entry["id"],
        suite=suite,
        category=category,
        messages=turns[0],
        tools=[convert_function(f, where) for f in functions],
        multi_turn=key,
    )


def _docs(
    class_name: str, cache: dict[str, list[dict[str, Any]]], root: Path, where: str
) -> list[dict[str, Any]]:
    """A backend class's function docs (`multi_turn_func_doc/<module>.json`), read once."""
    if class_name not in cache:
        path = root / "multi_turn_func_doc" / f"{CLASS_MODULES[class_name]}.json"
        if not path.is_file():
            raise SuiteError(where, f"function docs {path} not found")
        lines = path.read_text(encoding="utf-8").splitlines()
        cache[class_name] = [json.loads(line) for line in lines if line.strip()]
    return cache[class_name]


class Conversation:
    """One multi-turn case run through the agent loop; what each turn's calls were."""

    def __init__(self, case: Case) -> None:
        assert case.multi_turn is not None
        self.case = case
        self.key: MultiTurnKey = case.multi_turn
        self.turn_calls: list[list[tuple[str, dict[str, Any]]]] = []

    async def run(self, worker: Any, scope: Any) -> BodyResult:
        key = self.key
        backends = Backends(key.involved_classes, key.initial_config, long_context=key.long)
        docs = list(key.functions)
        messages: list[Message] = []
        output, steps = "", 0
        for index, turn in enumerate(key.turns):
            if str(index) in key.missed_functions:
                docs += key.missed_functions[str(index)]
                turn = [Message(role="user", content=ADDED_FUNCTIONS)]
            tools = backends.tools(docs)
            inputs = LoopInputs(
                name="bfcl-multi-turn",
                role="assistant",
                instructions="",
                tools=tuple(tools),
                max_turns=MAX_STEPS,
            )
            result = await run_agent(inputs, [*messages, *turn], worker, scope)
            self.turn_calls.append([(name, arguments) for name, arguments, _ in backends.log])
            messages, output, steps = result.messages, result.output, steps + result.turns
        return BodyResult(output=output, messages=messages, turns=steps)

    def prediction(self, events: list[Event], error: str | None) -> Prediction:
        attempts = [Attempt(text=e.text) for e in events if isinstance(e, ModelCompleted)]
        last = self.turn_calls[-1] if self.turn_calls else []
        if attempts:
            attempts[-1].calls = [ToolCall(name=n, arguments=a) for n, a in last]
        return Prediction(attempts=attempts, error=error)

    def scores(self, events: list[Event], error: str | None) -> Scores:
        exact = error is None and multi_turn_verdict(self.key, self.turn_calls)[0]
        invalid = [e for e in events if isinstance(e, ToolCallInvalid)]
        scores = Scores(**dict.fromkeys(METRICS))
        scores.exact = exact
        scores.json_valid = not any(e.kind == "parse" for e in invalid)
        scores.exact_strict = exact and not invalid
        return scores


def multi_turn_verdict(
    key: MultiTurnKey, turn_calls: list[list[tuple[str, dict[str, Any]]]]
) -> tuple[bool, str]:
    """BFCL's multi-turn verdict on the calls made in each turn (see the module docstring), and
    why it failed."""
    if len(turn_calls) != len(key.ground_truth):
        return False, f"{len(turn_calls)} turns answered of {len(key.ground_truth)}"
    model = Backends(key.involved_classes, key.initial_config, long_context=key.long)
    truth = Backends(key.involved_classes, key.initial_config, long_context=key.long)
    results_so_far: list[str] = []
    for index, (calls, expected) in enumerate(zip(turn_calls, key.ground_truth, strict=True)):
        results_so_far += [model.execute(name, arguments) for name, arguments in calls]
        expected_results = [truth.execute_text(call) for call in expected]
        if not expected:
            continue
        if not calls:
            return False, f"turn {index}: no call"
        differs = _state_differs(model, truth)
        if differs:
            return False, f"turn {index}: {differs}"
        missing = Counter(expected_results) - Counter(results_so_far)
        if missing:
            return False, f"turn {index}: results missing: {list(missing)[:2]}"
    return True, ""


def _state_differs(model: Backends, truth: Backends) -> str:
    """The first backend attribute whose value differs from the ground truth's ("" if none);
    as BFCL compares: each public attribute the ground truth's instance has."""
    for name, attributes in truth.state().items():
        mine = vars(model.instances[name])
        for attribute, value in attributes.items():
            if mine.get(attribute) != value:
                return f"{name}.{attribute} differs"
    return ""


def ground_truth_replies(case: Case) -> list[Any]:
    """A scripted model that answers with the ground truth: in each turn one reply with all its
    calls (run in their order, see `Backends.tools`; some turns have more calls than BFCL allows
    steps), then a short text answer that ends the turn."""
    key = case.multi_turn
    assert key is not None
    backends = Backends(key.involved_classes, key.initial_config, long_context=key.long)
    replies: list[Any] = []
    for calls in key.ground_truth:
        if calls:
            replies.append([call_from_text(backends, call) for call in calls])
        replies.append("Done.")
    return replies
