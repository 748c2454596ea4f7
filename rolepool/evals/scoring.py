"""Per-case scores: what one prediction did right and wrong on one case.

Every metric is a bool, or None where it does not apply (a call metric on a case that expects no
call and vice versa), so a rate is always "of the cases where it applies". "Final" is the last
attempt of the scored turn (after the run loop's validation retries), "first" the first one.

Cases that expect calls:
- `parsed`: the final attempt yielded at least one tool call.
- `schema_valid_first_try`: the first attempt yielded at least one call, without a parse error,
  and every call names an offered tool and its arguments validate against that tool's schema.
- `schema_valid`: the same for the final attempt.
- `name_correct`: the final calls' names equal the expected names as a multiset.
- `exact`: the final calls match the expected calls one to one, in any order, under BFCL's AST
  match (`rolepool.evals.matching`).
Cases that expect no call:
- `no_call_correct`: the final attempt has no call and no parse error (a broken call attempt is
  still an attempt to call, so it does not count as abstaining).
- `false_call`: some attempt called a tool (even if a retry later answered in text).
- `exact`: `no_call_correct`, and the answer contains `case.answer_contains` when the case sets
  it (a refusal must name the role to ask).
Every case:
- `json_valid`: the final attempt had no parse error (every call attempt was well-formed JSON);
  prose instead of a call is JSON-valid but not `parsed`.
A prediction without attempts (the run failed before the model answered) fails every metric that
applies, except `false_call`, which is False.

BFCL cases (`case.bfcl` set) differ in two ways:
- `exact` is BFCL's own checker verdict (`rolepool.evals.bfcl.checker`), on the final attempt's
  calls; an attempt that does not parse to calls is an output that does not decode, which BFCL
  scores as right on irrelevance cases (an empty reply, a broken call) and wrong elsewhere;
  relevance cases (`live_relevance`) need any call at all.
- `exact_strict` (set on BFCL cases only) is `exact` and rolepool's own rule besides: calls
  match under rolepool's matching too (JSON Schema types, `rolepool.evals.matching`; for Java and
  JavaScript, whose values are source text, the calls are valid against the offered schema), an
  abstention is a real answer (no parse error: not empty, not a broken call), a relevance call is
  well-formed and valid against its schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rolepool.core import ToolCall
from rolepool.evals.bfcl.checker import bfcl_verdict
from rolepool.evals.bfcl.source_values import source_text
from rolepool.evals.cases import OMITTED, Attempt, Case, Prediction
from rolepool.evals.matching import calls_match, sample_value
from rolepool.tools.validation import validate_arguments


class Scores(BaseModel):
    """Every metric of one case (see the module docstring); None where it does not apply."""

    parsed: bool | None = None
    json_valid: bool | None = None
    schema_valid_first_try: bool | None = None
    schema_valid: bool | None = None
    name_correct: bool | None = None
    exact: bool | None = None
    no_call_correct: bool | None = None
    false_call: bool | None = None
    exact_strict: bool | None = None
    """BFCL cases only (left unset, so not written, elsewhere): see the module docstring."""


METRICS: tuple[str, ...] = tuple(n for n in Scores.model_fields if n != "exact_strict")
"""The metrics every case has (each written on every result line)."""
CALL_METRICS = ("parsed", "schema_valid_first_try", "schema_valid", "name_correct")
NO_CALL_METRICS = ("no_call_correct", "false_call")


def score_case(case: Case, prediction: Prediction) -> Scores:
    """Every metric of `Scores` for one case (see the module docstring)."""
    first, final = prediction.first, prediction.final
    scores = Scores(**dict.fromkeys(METRICS))  # every key set: a result line writes them all
    scores.json_valid = final is not None and final.parse_error is None
    if case.expects_call:
        scores.parsed = final is not None and final.parse_error is None and bool(final.calls)
        scores.schema_valid_first_try = first is not None and attempt_valid(case, first)
        scores.schema_valid = final is not None and attempt_valid(case, final)
        got = sorted(c.name for c in final.calls) if final is not None else None
        scores.name_correct = got == sorted(c.name for c in case.expected)
        scores.exact = (
            final is not None
            and final.parse_error is None
            and calls_match(
                case.expected,
                final.calls,
                {t.name: t.parameters or {} for t in case.tools},
                exact_strings=case.string_match == "exact",
            )
        )
    else:
        quiet = final is not None and final.parse_error is None and not final.calls
        scores.no_call_correct = quiet
        scores.false_call = any(a.calls for a in prediction.attempts)
        wanted = case.answer_contains
        scores.exact = quiet and (wanted is None or wanted in final.text)
    if case.bfcl is not None:
        _score_bfcl(case, final, scores)
    return scores


def _score_bfcl(case: Case, final: Attempt | None, scores: Scores) -> None:
    """`exact` as BFCL's checker decides it, and rolepool's stricter rule beside it."""
    assert case.bfcl is not None
    rolepool_rule = bool(scores.exact)  # our own suites' rule, computed above
    if case.bfcl.kind == "relevance":
        rolepool_rule = final is not None and attempt_valid(case, final)
        scores.name_correct = None  # any offered function will do
    elif case.bfcl.kind == "ast" and case.bfcl.language != "python":
        # Java/JavaScript values are source text that only BFCL's conversion reads: rolepool's
        # own rule there is that the calls are well-formed and valid against the offered schema.
        rolepool_rule = final is not None and attempt_valid(case, final)
    if final is None:
        scores.exact = False
    else:
        calls = None if final.parse_error is not None else final.calls
        scores.exact = bfcl_verdict(case.bfcl, case.expected, calls)
    scores.exact_strict = scores.exact and rolepool_rule


def attempt_valid(case: Case, attempt: Attempt) -> bool:
    """At least one call, no parse error, and no validation problem, whether recorded by the run
    loop (`attempt.invalid`) or found again here against the case's tools."""
    if attempt.parse_error is not None or not attempt.calls or attempt.invalid:
        return False
    return not call_problems(case, attempt.calls)


def call_problems(case: Case, calls: list[ToolCall]) -> list[str]:
    """What the run loop would refuse in these calls: unknown tools and schema violations."""
    problems = []
    offered = {t.name: t for t in case.tools}
    for call in calls:
        tool = offered.get(call.name)
        if tool is None:
            available = ", ".join(offered) or "none"
            problems.append(f"there is no tool named {call.name!r}; available: {available}")
            continue
        schema: dict[str, Any] = tool.parameters or {"type": "object"}
        problems.extend(
            f"{call.name}: {issue}" for issue in validate_arguments(schema, call.arguments)
        )
    return problems


def reference_calls(case: Case) -> list[dict[str, Any]]:
    """One right answer for `case`: each expected call with the first accepted value of every
    argument, leaving out optional ones where `""` is accepted, in the `{"name", "arguments"}`
    shape a replay file uses. Replaying these must score `exact` on every case; tests rely on it.
    """
    out = []
    for call in case.expected:
        tool = case.tool(call.name)
        parameters = (tool.parameters if tool is not None else None) or {}
        required = set(parameters.get("required") or [])
        arguments = {}
        for name, accepted in call.arguments.items():
            values = [v for v in accepted if v != OMITTED]
            if values and (name in required or OMITTED not in accepted):
                arguments[name] = sample_value(values[0])
        out.append({"name": call.name, "arguments": _as_source(case, call.name, arguments)})
    return out


def _as_source(case: Case, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Java and JavaScript BFCL arguments are source text: the answer key's values written so."""
    key = case.bfcl
    if key is None or key.language == "python":
        return arguments
    doc = next((f for f in key.functions if f.get("name") == name), {})
    details = (doc.get("parameters") or {}).get("properties") or {}
    return {n: source_text(v, details.get(n) or {}, key.language) for n, v in arguments.items()}
