"""Per-case scores: each metric's definition, on hand-built cases and attempts."""

from __future__ import annotations

import pytest

from rolepool.core import Message, ToolCall
from rolepool.evals.cases import Attempt, Case, ExpectedCall, Prediction
from rolepool.evals.matching import normalise, values_equal
from rolepool.evals.scoring import METRICS, call_problems, reference_calls, score_case

SEARCH = {
    "name": "search_docs",
    "description": "Search.",
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
}
FINISH = {
    "name": "finish",
    "description": "Answer.",
    "parameters": {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    },
}


def _case(expected=(), **kw) -> Case:
    return Case(
        id=kw.pop("id", "c1"),
        suite="t",
        role="search",
        category=kw.pop("category", "single"),
        messages=[Message(role="user", content="Find plis woofus.")],
        tools=[SEARCH, FINISH],
        expected=list(expected),
        **kw,
    )


CALL_CASE = _case(
    [ExpectedCall(name="search_docs", arguments={"query": ["plis woofus"], "top_k": [5, ""]})]
)
NO_CALL_CASE = _case(category="no_call", id="c2")


def _call(name="search_docs", **arguments) -> ToolCall:
    return ToolCall(name=name, arguments=arguments)


def _attempt(
    *calls: ToolCall, text: str = "", parse_error: str | None = None, invalid=()
) -> Attempt:
    return Attempt(text=text, calls=list(calls), parse_error=parse_error, invalid=list(invalid))


def _scores(case, *attempts, error=None):
    scores = score_case(case, Prediction(attempts=list(attempts), error=error))
    return scores.model_dump(exclude_unset=True)  # as a result line writes them


def test_every_metric_is_reported_and_none_means_not_applicable():
    right = _scores(CALL_CASE, _attempt(_call(query="plis woofus")))
    assert set(right) == set(METRICS)
    assert right == {
        "parsed": True,
        "json_valid": True,
        "schema_valid_first_try": True,
        "schema_valid": True,
        "name_correct": True,
        "exact": True,
        "no_call_correct": None,
        "false_call": None,
    }
    quiet = _scores(NO_CALL_CASE, _attempt(text="Hello!"))
    assert quiet == {
        "parsed": None,
        "json_valid": True,
        "schema_valid_first_try": None,
        "schema_valid": None,
        "name_correct": None,
        "exact": True,
        "no_call_correct": True,
        "false_call": False,
    }


def test_first_try_and_after_retries_differ():
    bad = _attempt(_call(query="plis woofus", top_k=50), invalid=["$.top_k: 50 is greater than 20"])
    good = _attempt(_call(query="plis woofus", top_k=5))
    scores = _scores(CALL_CASE, bad, good)
    assert scores["schema_valid_first_try"] is False and scores["schema_valid"] is True
    assert scores["exact"] is True
    unparsed = _attempt(text='{"name": "search_docs", "arguments": {', parse_error="bad JSON")
    scores = _scores(CALL_CASE, unparsed, good)
    assert scores["schema_valid_first_try"] is False and scores["exact"] is True


def test_schema_validity_is_checked_again_not_only_taken_from_the_attempt():
    # The attempt says nothing is invalid, but top_k breaks the schema's maximum.
    scores = _scores(CALL_CASE, _attempt(_call(query="plis woofus", top_k=50)))
    assert scores["schema_valid"] is False and scores["exact"] is False
    assert scores["name_correct"] is True and scores["parsed"] is True
    unknown = _scores(CALL_CASE, _attempt(_call("web_search", query="plis woofus")))
    assert unknown["schema_valid"] is False and unknown["name_correct"] is False
    assert call_problems(CALL_CASE, [_call("web_search")]) == [
        "there is no tool named 'web_search'; available: search_docs, finish"
    ]


def test_prose_and_broken_json_on_a_call_case():
    prose = _scores(CALL_CASE, _attempt(text="I would search for plis woofus."))
    assert prose["parsed"] is False and prose["json_valid"] is True and prose["exact"] is False
    broken = _scores(CALL_CASE, _attempt(text="{", parse_error="line 1: bad"))
    assert broken["parsed"] is False and broken["json_valid"] is False
    assert broken["schema_valid"] is False and broken["name_correct"] is False


def test_right_names_wrong_arguments():
    scores = _scores(CALL_CASE, _attempt(_call(query="plis wofus")))
    assert scores["name_correct"] and scores["schema_valid"] and not scores["exact"]
    twice = _scores(CALL_CASE, _attempt(_call(query="plis woofus"), _call(query="plis woofus")))
    assert not twice["name_correct"] and not twice["exact"]


def test_no_call_cases_count_false_calls_in_any_attempt():
    called = _scores(NO_CALL_CASE, _attempt(_call(query="hello")))
    assert called["false_call"] is True and called["no_call_correct"] is False
    assert called["exact"] is False
    # A call that was refused, then a text answer: the answer is right, the false call counts.
    retried = _scores(
        NO_CALL_CASE, _attempt(_call("nope"), invalid=["no tool"]), _attempt(text="Hi!")
    )
    assert retried["no_call_correct"] is True and retried["false_call"] is True
    broken = _scores(NO_CALL_CASE, _attempt(text="{", parse_error="bad"))
    assert broken["no_call_correct"] is False and broken["false_call"] is False
    assert broken["json_valid"] is False


def test_a_refusal_must_name_the_role_it_refers_to():
    refusal = _case(category="refusal", answer_contains="coder")
    assert _scores(refusal, _attempt(text="Ask the coder agent."))["exact"] is True
    wrong = _scores(refusal, _attempt(text="Ask the writer agent."))
    assert wrong["exact"] is False and wrong["no_call_correct"] is True


def test_a_failed_run_fails_what_applies():
    for case in (CALL_CASE, NO_CALL_CASE):
        scores = _scores(case, error="WorkerError: down")
        applicable = {k: v for k, v in scores.items() if v is not None}
        assert applicable.pop("false_call", False) is False
        assert applicable and not any(applicable.values())


def test_exact_strings_mode_and_bfcl_normalisation():
    loose = _scores(CALL_CASE, _attempt(_call(query="Plis-Woofus")))
    assert loose["exact"] is True
    strict_case = CALL_CASE.model_copy(update={"string_match": "exact"})
    assert _scores(strict_case, _attempt(_call(query="Plis-Woofus")))["exact"] is False
    assert _scores(strict_case, _attempt(_call(query="plis woofus")))["exact"] is True
    assert normalise("It's A-B_c. d/e,f*g^h") == 'it"sabcdefgh'


@pytest.mark.parametrize(
    ("value", "option", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (1, True, False),
        (False, False, True),
        ("1", 1, False),
        (None, None, True),
        (None, "", False),
        ([1, [2, 3]], [1, [2, 3]], True),
        ([1, [2, 3]], [1, [3, 2]], False),
        ({"a": 1}, {"a": [1, 2]}, True),
        ({"a": 3}, {"a": [1, 2]}, False),
        ({}, {"a": [1, ""]}, True),
        ({}, {"a": [1]}, False),
        ({"a": [1, 2]}, {"a": [[1, 2]]}, True),
    ],
)
def test_values_compare_with_strict_types_and_nested_accepted_values(value, option, equal):
    assert values_equal(value, option, None, False) is equal


def test_reference_calls_give_a_right_answer_that_leaves_out_optional_values():
    case = _case(
        [
            ExpectedCall(name="search_docs", arguments={"query": ["", "plis"], "top_k": ["", 5]}),
        ]
    )
    # query is required, so its "" is ignored; top_k is optional, so it is left out.
    assert reference_calls(case) == [{"name": "search_docs", "arguments": {"query": "plis"}}]
    assert _scores(case, _attempt(_call(**reference_calls(case)[0]["arguments"])))["exact"]
