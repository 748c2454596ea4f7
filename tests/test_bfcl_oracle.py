"""rolepool's `exact` on BFCL cases against BFCL's own checker, imported from the `bfcl-eval`
package as an oracle: on the ground truth of every single-turn category and on systematic
perturbations of it (wrong name, missing and extra arguments, int/float/string/bool swaps, string
normalisation, reordered, duplicated and dropped parallel calls, no call, prose, broken call text).

bfcl-eval is installed without its dependencies (`pip install --no-deps bfcl-eval`, README's test
command); its checker imports only one heavy module, the table of model configurations (every
model handler, each with its vendor SDK), for one lookup: whether a model's function names had
dots turned into underscores. That module is replaced by a stub saying "no" before the import.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import types
from collections import Counter
from typing import Any

import pytest

from rolepool.core import ToolCall
from rolepool.evals.bfcl import CATEGORIES, installed_bfcl_data, load_bfcl
from rolepool.evals.bfcl.checker import bfcl_verdict
from rolepool.evals.cases import Case
from rolepool.evals.replay import ReplayRecord, prediction_from_replay
from rolepool.evals.scoring import reference_calls, score_case

DATA = installed_bfcl_data()
pytestmark = pytest.mark.skipif(DATA is None, reason="pip install --no-deps bfcl-eval")
MODEL = "rolepool-oracle"


def _oracle_modules() -> tuple[Any, Any, Any]:
    class _Config:
        underscore_to_dot = False

    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = {MODEL: _Config()}  # type: ignore[attr-defined]
    sys.modules.setdefault("bfcl_eval.constants.model_config", stub)
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.utils import is_empty_output

    return ast_checker, Language, is_empty_output


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    # bfcl_eval.utils makes result/score/lock folders at import, beside site-packages unless
    # told where: keep them in a temporary folder.
    os.environ.setdefault("BFCL_PROJECT_ROOT", str(tmp_path_factory.mktemp("bfcl-project")))
    ast_checker, language, is_empty_output = _oracle_modules()
    return _Oracle(ast_checker, language, is_empty_output)


class _Oracle:
    """BFCL's verdict on one decoded output (None: the output did not decode), computed the way
    BFCL's evaluation runner does for each kind of category."""

    def __init__(self, ast_checker: Any, language: Any, is_empty_output: Any) -> None:
        self.ast_checker, self.language, self.is_empty_output = (
            ast_checker,
            language,
            is_empty_output,
        )
        self.raw = {c: _raw(c) for c in CATEGORIES.values()}

    def verdict(self, case: Case, output: list[dict[str, Any]] | None) -> bool:
        category = case.bfcl.category
        if "relevance" in category:  # irrelevance too: BFCL's relevance runner
            called = output is not None and not self.is_empty_output(output)
            return not called if "irrelevance" in category else called
        if output is None:
            return False  # the AST runner: "Failed to decode AST"
        entry, answer = self.raw[category][case.id]
        language = {"java": "JAVA", "javascript": "JAVASCRIPT"}.get(case.bfcl.language, "PYTHON")
        result = self.ast_checker(
            copy.deepcopy(entry["function"]),
            copy.deepcopy(output),
            copy.deepcopy(answer),
            getattr(self.language, language),
            category,
            MODEL,
        )
        return result["valid"]


def _raw(category: str) -> dict[str, tuple[dict, Any]]:
    entries = [json.loads(line) for line in (DATA / f"BFCL_v4_{category}.json").open()]
    answer_file = DATA / "possible_answer" / f"BFCL_v4_{category}.json"
    answers = {}
    if answer_file.is_file():
        answers = {e["id"]: e["ground_truth"] for e in map(json.loads, answer_file.open())}
    return {e["id"]: (e, answers.get(e["id"])) for e in entries}


@pytest.fixture(scope="module")
def cases() -> dict[str, list[Case]]:
    return {suite: load_bfcl(suite, DATA) for suite in CATEGORIES}


def _truth(case: Case) -> list[dict[str, Any]]:
    """One right output: each expected call with the first accepted value of each argument."""
    return [{c["name"]: c["arguments"]} for c in reference_calls(case)]


def _ours(case: Case, output: list[dict[str, Any]] | None) -> bool:
    calls = None
    if output is not None:
        calls = [ToolCall(name=n, arguments=a) for item in output for n, a in item.items()]
    return bfcl_verdict(case.bfcl, case.expected, calls)


# -- the perturbations -----------------------------------------------------------------------------
def _swaps(value: Any) -> list[Any]:
    """Values of other types or other spellings standing for `value`."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), not value]
    if isinstance(value, int):
        return [float(value), str(value), value + 1, True]
    if isinstance(value, float):
        return [int(value), str(value), value * 2] + ([int(value)] if value.is_integer() else [])
    if isinstance(value, str):
        out = [value.upper(), f" {value}. ", value.replace("'", '"'), value + "x", ""]
        out += [int(value)] if value.strip().lstrip("-").isdigit() else [1]
        return out
    if isinstance(value, list):
        out: list[Any] = [list(reversed(value)), value[:-1], [*value, *value[:1]], tuple(value)]
        out += [[_swaps(v)[0] for v in value]] if value else [[1]]
        return [*out, json.dumps(value)]
    if isinstance(value, dict):
        drop = dict(list(value.items())[:-1])
        return [drop, {**value, "extra_key": 1}, {k: _swaps(v)[0] for k, v in value.items()}]
    return [None]


def _perturbations(case: Case, truth: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[], [{}], truth + truth[:1], truth[:-1], truth[::-1]]
    for index, item in enumerate(truth):
        ((name, arguments),) = item.items()
        variants: list[dict[str, Any]] = [{name + "_x": arguments}, {name: {**arguments, "zz": 1}}]
        for key, value in arguments.items():
            variants.append({name: {k: v for k, v in arguments.items() if k != key}})
            variants.extend({name: {**arguments, key: swap}} for swap in _swaps(value))
        for tool in case.tools:  # an optional parameter given, with a plausible value
            if tool.name == name:
                for key in (tool.parameters or {}).get("properties", {}):
                    if key not in arguments:
                        variants.append({name: {**arguments, key: "default"}})
                        break
        out.extend(truth[:index] + [v] + truth[index + 1 :] for v in variants)
    if len(truth) > 1:  # two calls swapping their arguments
        ((a, args_a),), ((b, args_b),) = truth[0].items(), truth[1].items()
        out.append([{a: args_b}, {b: args_a}, *truth[2:]])
    return out


def _compare(oracle: _Oracle, case: Case, output: Any, tally: Counter) -> None:
    try:
        expected = oracle.verdict(case, output)
    except Exception:  # BFCL's checker stops on this output: it has no verdict to compare
        tally["bfcl crashed"] += 1
        return
    tally[f"bfcl {expected}"] += 1
    assert _ours(case, output) == expected, (case.id, output)


@pytest.mark.parametrize("suite", list(CATEGORIES))
def test_exact_is_bfcls_verdict_on_the_ground_truth_and_its_perturbations(oracle, cases, suite):
    tally: Counter = Counter()
    unreachable: list[str] = []
    for case in cases[suite]:
        truth = _truth(case)
        if case.bfcl.kind == "ast" and not oracle.verdict(case, truth):
            unreachable.append(case.id)  # BFCL cannot be given its own key (see below)
        for output in [None, truth, *_perturbations(case, truth)]:
            _compare(oracle, case, output, tally)
        if case.bfcl.kind != "ast":
            for tool in case.tools[:2]:
                _compare(oracle, case, [{tool.name: {}}], tally)
    assert tally["bfcl False"] > 0 and tally["bfcl crashed"] < tally["bfcl False"] / 10, tally
    if CATEGORIES[suite] not in ("irrelevance", "live_irrelevance"):
        assert tally["bfcl True"] >= len(cases[suite]) - len(unreachable), tally
    # Where no output can match BFCL's own key, rolepool says so too (compared above): a required
    # argument with no accepted value at all (`[]`), an `any` list item holding 42 and true that
    # the checker reads as the text "42" and "true". A handful of cases, counted here.
    assert len(unreachable) <= UNREACHABLE.get(suite, 0), unreachable


UNREACHABLE = {
    "bfcl-simple-java": 3,
    "bfcl-simple-javascript": 3,
    "bfcl-live-simple": 2,
    "bfcl-live-multiple": 3,
}


def _replayed(case: Case, **record: Any) -> Any:
    return score_case(case, prediction_from_replay(case, ReplayRecord(id=case.id, **record)))


TEXTS = {
    "empty": "",
    "prose": "I cannot help with that using these functions.",
    "broken": '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',
}


@pytest.mark.parametrize("suite", list(CATEGORIES))
def test_replayed_text_and_calls_score_as_bfcl_scores_them(oracle, cases, suite):
    """Through the whole replay path (parser, validation, scoring): the ground truth as native
    calls and as call text, and replies that do not decode to a call."""
    for case in cases[suite][:60]:
        truth = _truth(case)
        native = [{"name": n, "arguments": a} for item in truth for n, a in item.items()]
        text = "".join(f"<tool_call>{json.dumps(c)}</tool_call>" for c in native)
        for record, output in (
            ({"tool_calls": native}, truth),
            ({"text": text}, truth),
            *(({"text": t}, None) for t in TEXTS.values()),
        ):
            if case.bfcl.kind == "relevance" and output is not None:
                output = [{case.tools[0].name: {}}]
                record = {"tool_calls": [{"name": case.tools[0].name, "arguments": {}}]}
            scores = _replayed(case, **record)
            assert scores.exact == oracle.verdict(case, output), (case.id, record)
            assert scores.exact_strict in (False, scores.exact)


def test_an_empty_or_broken_reply_on_irrelevance_is_right_for_bfcl_not_for_rolepool(cases):
    case = cases["bfcl-irrelevance"][0]
    for text in (TEXTS["empty"], TEXTS["broken"]):
        scores = _replayed(case, text=text)
        assert scores.exact is True  # BFCL: nothing decoded to a call
        assert scores.exact_strict is False and scores.no_call_correct is False
    prose = _replayed(case, text=TEXTS["prose"])
    assert prose.exact and prose.exact_strict and prose.no_call_correct
    called = _replayed(case, tool_calls=[{"name": case.tools[0].name, "arguments": {}}])
    assert called.exact is False and called.exact_strict is False


def test_strict_is_stricter_where_rolepool_keeps_its_own_rule(cases):
    relevance = cases["bfcl-live-relevance"][0]
    name = relevance.tools[0].name
    invalid = _replayed(relevance, tool_calls=[{"name": name, "arguments": {"nope": 1}}])
    assert invalid.exact is True and invalid.exact_strict is False  # any call, for BFCL
    assert invalid.name_correct is None and invalid.no_call_correct is None
