"""BFCL v4: loading and type conversion, ground truth replayed over every case of the five
categories, and hand-made wrong answers judged by BFCL's AST-match rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rolepool.core import ToolCall
from rolepool.evals.bfcl import to_json_schema
from rolepool.evals.cases import Case, Prediction
from rolepool.evals.matching import calls_match
from rolepool.evals.replay import ReplayRecord, prediction_from_replay
from rolepool.evals.scoring import reference_calls, score_case
from rolepool.evals.suites import SuiteError, load_suite


def _bfcl_dir() -> Path | None:
    candidates = [
        os.environ.get("ROLEPOOL_BFCL_DIR"),
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bfcl",
        "/work/shared/data/bfcl",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "BFCL_v4_simple_python.json").is_file():
            return Path(candidate)
    return None


BFCL_DIR = _bfcl_dir()
# The five categories ../shared/data/bfcl holds (the rest: tests/test_bfcl_oracle.py, from bfcl-eval)
CATEGORIES = ("bfcl-simple", "bfcl-multiple", "bfcl-parallel", "bfcl-parallel-multiple")
CATEGORIES += ("bfcl-irrelevance",)
needs_bfcl = pytest.mark.skipif(
    BFCL_DIR is None,
    reason="BFCL v4 data not found: set ROLEPOOL_BFCL_DIR or put it in ../shared/data/bfcl",
)


@pytest.fixture(scope="module")
def suites():
    if BFCL_DIR is None:
        pytest.skip("BFCL v4 data not found")
    return {name: load_suite(name, bfcl_dir=BFCL_DIR).cases for name in CATEGORIES}


def _case(suites, case_id: str) -> Case:
    return next(c for cases in suites.values() for c in cases if c.id == case_id)


def _score(case: Case, *calls: tuple[str, dict]) -> dict:
    record = {"id": case.id, "tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
    return score_case(case, prediction_from_replay(case, ReplayRecord.model_validate(record)))


def _exact(case: Case, *calls: tuple[str, dict]) -> bool:
    return _score(case, *calls).exact


def _ours(case: Case, *calls: tuple[str, dict]) -> bool:
    """rolepool's own matching (our suites' `exact`; on BFCL cases part of `exact_strict`), where
    BFCL's checker (`exact` on BFCL cases) keeps a quirk of its own."""
    made = [ToolCall(name=n, arguments=a) for n, a in calls]
    return calls_match(case.expected, made, {t.name: t.parameters or {} for t in case.tools})


# -- loading -------------------------------------------------------------------------------------
@needs_bfcl
def test_every_category_loads_with_json_schema_tools(suites):
    sizes = {name: len(cases) for name, cases in suites.items()}
    assert sizes == {
        "bfcl-simple": 400,
        "bfcl-multiple": 200,
        "bfcl-parallel": 200,
        "bfcl-parallel-multiple": 200,
        "bfcl-irrelevance": 240,
    }
    bfcl_types = {"dict", "float", "tuple", "any"}
    for cases in suites.values():
        for case in cases:
            assert case.role is None and case.messages[0].role == "user"
            for tool in case.tools:
                assert tool.parameters["type"] == "object"
                assert not bfcl_types & set(_all_types(tool.parameters))
    assert all(not c.expects_call for c in suites["bfcl-irrelevance"])
    assert all(len(c.expected) == 1 for c in suites["bfcl-simple"] + suites["bfcl-multiple"])
    assert all(len(c.expected) >= 2 for c in suites["bfcl-parallel"])
    assert (
        load_suite("bfcl-multiple", bfcl_dir=BFCL_DIR, limit=3).cases == suites["bfcl-multiple"][:3]
    )


def _all_types(schema):
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), str):
            yield schema["type"]
        for value in schema.values():
            yield from _all_types(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _all_types(value)


@needs_bfcl
def test_bfcl_dir_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ROLEPOOL_BFCL_DIR", str(BFCL_DIR))
    assert len(load_suite("bfcl-parallel", limit=2).cases) == 2


# -- the ground truth scores 100% ----------------------------------------------------------------
@needs_bfcl
@pytest.mark.parametrize("name", list(CATEGORIES))
def test_replaying_the_ground_truth_is_exact_on_every_case(suites, name):
    for case in suites[name]:
        if case.expects_call:
            native = {"id": case.id, "tool_calls": reference_calls(case)}
            blocks = "".join(
                f"<tool_call>{json.dumps(call)}</tool_call>" for call in reference_calls(case)
            )
            records = [native, {"id": case.id, "text": blocks}]
        else:
            records = [{"id": case.id, "text": "None of these functions can answer that."}]
        for record in records:
            replayed = prediction_from_replay(case, ReplayRecord.model_validate(record))
            scores = score_case(case, replayed)
            assert scores.exact, (case.id, record)
            assert scores.json_valid and scores.false_call in (None, False)
            if case.expects_call:
                assert scores.parsed and scores.name_correct


# -- hand-made wrong answers ---------------------------------------------------------------------
@needs_bfcl
def test_types_are_strict_except_int_for_float(suites):
    triangle = _case(suites, "simple_python_0")  # base, height: integer; unit: optional string
    name = "calculate_triangle_area"
    assert _exact(triangle, (name, {"base": 10, "height": 5}))
    assert not _exact(triangle, (name, {"base": "10", "height": 5}))  # string for integer
    assert not _exact(triangle, (name, {"base": 10.0, "height": 5}))  # float for integer
    assert not _exact(triangle, (name, {"base": 10, "height": True}))  # bool is not an integer
    hypot = _case(suites, "simple_python_2")  # z: optional integer, accepted ["", 0]
    assert _exact(hypot, ("math.hypot", {"x": 4, "y": 5})) and _exact(
        hypot, ("math.hypot", {"x": 4, "y": 5, "z": 0})
    )
    assert not _exact(hypot, ("math.hypot", {"x": 4, "y": 5, "z": ""}))  # "" is no integer
    rectangle = _case(suites, "parallel_multiple_1")  # length, breadth, radius: float
    circle = ("area_circle.calculate", {"radius": 5})  # an int where float is asked: accepted
    assert _exact(rectangle, ("area_rectangle.calculate", {"length": 7, "breadth": 3.0}), circle)
    assert not _exact(
        rectangle, ("area_rectangle.calculate", {"length": "7", "breadth": 3}), circle
    )
    coordinates = _case(suites, "multiple_5")  # a tuple of floats arrives as a JSON array
    call = "weather.get_by_coordinates_date"
    assert _exact(coordinates, (call, {"coordinates": [46.603354, 1.888334], "date": "2019-12-13"}))
    assert not _exact(
        coordinates, (call, {"coordinates": "46.603354,1.888334", "date": "2019-12-13"})
    )


@needs_bfcl
def test_required_optional_and_extra_arguments(suites):
    triangle = _case(suites, "simple_python_0")
    name = "calculate_triangle_area"
    assert not _exact(triangle, (name, {"base": 10}))  # missing required
    # The key accepts leaving out initial_velocity (0 or ""), but the schema requires it.
    drops = _case(suites, "parallel_88")
    second = ("calculate_final_speed", {"initial_velocity": 5, "height": 20})
    assert _exact(drops, ("calculate_final_speed", {"initial_velocity": 0, "height": 10}), second)
    assert not _exact(drops, ("calculate_final_speed", {"height": 10}), second)
    assert _exact(triangle, (name, {"base": 10, "height": 5, "unit": "units"}))  # optional given
    assert not _exact(triangle, (name, {"base": 10, "height": 5, "unit": "cm"}))
    assert not _exact(triangle, (name, {"base": 10, "height": 5, "colour": "red"}))  # extra
    assert not _exact(triangle, ("calculate_area", {"base": 10, "height": 5}))  # wrong name
    scores = _score(triangle, ("calculate_area", {"base": 10, "height": 5}))
    assert scores.parsed and not scores.name_correct and not scores.schema_valid


@needs_bfcl
def test_strings_compare_as_bfcl_normalises_them(suites):
    triangle = _case(suites, "simple_python_0")
    name = "calculate_triangle_area"
    for variant in ("Units", "UNITS", " u-n_i.t/s ", "units,", "*units^"):
        assert _exact(triangle, (name, {"base": 10, "height": 5, "unit": variant})), variant
    for wrong in ("unit", "units!", "u nits s"):
        assert not _exact(triangle, (name, {"base": 10, "height": 5, "unit": wrong})), wrong
    regression = _case(suites, "parallel_multiple_21")  # x: "data['sales']" in the answer key
    fit = {"x": 'data["sales"]', "y": "data['future_sales']", "return_residuals": True}
    load = ("data_loading", {"file_path": "dataset.csv"})
    assert _ours(regression, ("linear_regression_fit", fit), load)  # ' equals "
    assert not _ours(regression, ("linear_regression_fit", {**fit, "x": "data[sales]"}), load)
    # BFCL compares a variable (a string for an array parameter) as it is, quotes included
    assert not _exact(regression, ("linear_regression_fit", fit), load)
    exact_fit = {**fit, "x": "data['sales']"}
    assert _exact(regression, ("linear_regression_fit", exact_fit), load)


@needs_bfcl
def test_an_optional_parameter_the_key_requires_must_be_given(suites):
    # return_residuals is optional in the schema, but the request asks for it: the key has no "".
    regression = _case(suites, "parallel_multiple_21")
    fit = {"x": "data['sales']", "y": "data['future_sales']", "return_residuals": True}
    load = ("data_loading", {"file_path": "dataset.csv"})
    assert _exact(regression, ("linear_regression_fit", fit), load)
    del fit["return_residuals"]
    assert not _exact(regression, ("linear_regression_fit", fit), load)
    assert _exact(regression, load, ("linear_regression_fit", {**fit, "return_residuals": True}))


@needs_bfcl
def test_parallel_calls_match_in_any_order_but_count_must_agree(suites):
    spotify = _case(suites, "parallel_0")
    swift = ("spotify.play", {"artist": "Taylor Swift", "duration": 20})
    maroon = ("spotify.play", {"artist": "Maroon 5", "duration": 15})
    assert _exact(spotify, swift, maroon) and _exact(spotify, maroon, swift)
    assert not _exact(spotify, swift)
    assert not _exact(spotify, swift, maroon, maroon)
    assert not _exact(spotify, swift, swift)
    crossed = ("spotify.play", {"artist": "Taylor Swift", "duration": 15})
    assert not _exact(spotify, crossed, ("spotify.play", {"artist": "Maroon 5", "duration": 20}))
    assert _score(spotify, swift, swift).name_correct


@needs_bfcl
def test_lists_keep_their_order_and_dicts_compare_key_by_key(suites):
    coordinates = _case(suites, "multiple_5")
    call = "weather.get_by_coordinates_date"
    swapped = {"coordinates": [1.888334, 46.603354], "date": "2019-12-13"}
    assert not _exact(coordinates, (call, swapped))
    assert not _exact(coordinates, (call, {"coordinates": [46.603354], "date": "2019-12-13"}))
    villa = _case(suites, "multiple_8")
    base = {"location": "San Diego, CA", "propertyType": "villa", "bedrooms": 3}
    find = "realestate.find_properties"
    assert _exact(villa, (find, {**base, "budget": {"min": 300000, "max": 400000.0}}))
    assert _exact(villa, (find, {**base, "budget": {"max": 400000, "min": 300000}}))
    assert not _exact(villa, (find, {**base, "budget": {"min": 400000, "max": 300000}}))
    assert not _exact(villa, (find, {**base, "budget": {"min": 300000}}))
    assert not _exact(villa, (find, {**base, "budget": {"min": 3e5, "max": 4e5, "cur": "USD"}}))
    assert not _exact(villa, (find, {**base, "budget": [300000, 400000]}))


@needs_bfcl
def test_answer_key_types_win_only_for_their_own_values(suites):
    # BFCL's key gives words for sort_list's integer-array parameter; the words are accepted,
    # other strings in an integer array are not.
    fruit = _case(suites, "parallel_multiple_94")
    words = ["apple", "banana", "cherry", "date", "elderberry"]
    calls = [
        ("sort_list", {"elements": words, "order": "desc"}),
        ("filter_list", {"elements": words, "condition": "startswith(b)"}),
        ("sum_elements", {"elements": [5, 10, 15, 20, 25]}),
        ("sort_list", {"elements": [35, 10, 25, 5, 15]}),
    ]
    assert _exact(fruit, *calls)
    as_text = ("sum_elements", {"elements": ["5", "10", "15", "20", "25"]})
    assert not _exact(fruit, *calls[:2], as_text, calls[3])


@needs_bfcl
def test_any_call_on_an_irrelevance_case_fails(suites):
    case = suites["bfcl-irrelevance"][0]
    tool = case.tools[0].name
    scores = _score(case, (tool, {"weight": 70.0, "height": 1.75}))
    assert scores.exact is False and scores.false_call is True
    assert scores.no_call_correct is False and scores.parsed is None
    text = score_case(case, prediction_from_replay(case, ReplayRecord(id=case.id, text="I can't.")))
    assert text.exact and text.no_call_correct and text.false_call is False
    attempt = prediction_from_replay(
        case, ReplayRecord(id=case.id, text='{"name": "x", "arguments": ')
    )
    assert not score_case(case, attempt).no_call_correct  # a broken call is not abstaining


# -- BFCL data beyond the shared sample ----------------------------------------------------------
def test_every_bfcl_type_converts_recursively():
    bfcl = {
        "type": "dict",
        "properties": {
            "when": {"type": "tuple", "items": {"type": "integer"}},
            "ratio": {"type": "float", "default": 0.5, "optional": True},
            "anything": {"type": "any"},
            "flags": {"type": "array", "items": {"type": "boolean"}},
            "nested": {
                "type": "dict",
                "properties": {
                    "rows": {
                        "type": "array",
                        "items": {"type": "dict", "properties": {"v": {"type": "float"}}},
                    }
                },
                "required": ["rows"],
            },
            "scores": {"type": "dict", "additionalProperties": {"type": "float"}},
        },
        "required": ["when", "ratio"],
    }
    schema = to_json_schema(bfcl, "f:1")
    props = schema["properties"]
    assert schema["type"] == "object" and schema["required"] == ["when"]  # optional: not required
    assert props["when"] == {"type": "array", "items": {"type": "integer"}}
    assert props["ratio"] == {"type": "number", "default": 0.5}
    assert props["anything"] == {"type": "string"}
    assert props["flags"]["items"] == {"type": "boolean"}
    row = props["nested"]["properties"]["rows"]["items"]
    assert row == {"type": "object", "properties": {"v": {"type": "number"}}}
    assert props["scores"]["additionalProperties"] == {"type": "number"}
    with pytest.raises(SuiteError, match="f:1.x: unknown BFCL parameter type 'HashMap'"):
        to_json_schema({"type": "dict", "properties": {"x": {"type": "HashMap"}}}, "f:1")


def _bfcl_files(root: Path, entries: list[dict], answers: list[dict]) -> None:
    (root / "possible_answer").mkdir(parents=True)
    for path, rows in (
        (root / "BFCL_v4_simple_python.json", entries),
        (root / "possible_answer" / "BFCL_v4_simple_python.json", answers),
    ):
        path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))


def test_nested_structures_match_through_every_level(tmp_path):
    function = {
        "name": "plot.make",
        "description": "Plot series.",
        "parameters": {
            "type": "dict",
            "properties": {
                "series": {
                    "type": "array",
                    "items": {
                        "type": "dict",
                        "properties": {
                            "label": {"type": "string"},
                            "points": {"type": "array", "items": {"type": "tuple"}},
                            "style": {"type": "dict", "properties": {"w": {"type": "float"}}},
                        },
                    },
                },
                "title": {"type": "string", "optional": True},
                "dpi": {"type": "integer"},
            },
            "required": ["series"],
        },
    }
    question = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Plot"}]]
    series = [
        {"label": ["Sales"], "points": [[[1, 2], [3, 4]]], "style": [{"w": [2.0, ""]}, ""]},
    ]
    _bfcl_files(
        tmp_path,
        [{"id": "simple_python_0", "question": question, "function": [function]}],
        [
            {
                "id": "simple_python_0",
                "ground_truth": [{"plot.make": {"series": [series], "title": ["", "Plot"]}}],
            }
        ],
    )
    (case,) = load_suite("bfcl-simple", bfcl_dir=tmp_path).cases
    assert [m.role for m in case.messages] == ["system", "user"]
    good = {"label": "sales", "points": [[1, 2], [3, 4]], "style": {"w": 2}}
    assert _ours(case, ("plot.make", {"series": [good]}))
    assert _ours(case, ("plot.make", {"series": [{**good, "style": {}}], "title": "PLOT"}))
    assert _ours(case, ("plot.make", {"series": [{"label": "Sales", "points": [[1, 2], [3, 4]]}]}))
    for bad in (
        {**good, "points": [[3, 4], [1, 2]]},  # order inside a list
        {**good, "points": [[1, 2], [3, "4"]]},  # type deep inside
        {**good, "style": {"w": True}},  # bool for float, two levels down
        {**good, "style": {"w": 2.0, "h": 1.0}},  # a key the answer does not know
        {**good, "label": "Costs"},
    ):
        assert not _ours(case, ("plot.make", {"series": [bad]})), bad
    assert _score(case, ("plot.make", {"series": [good]})).schema_valid
    # `dpi` is in the schema but not in the key: any value of the right type will do.
    assert _ours(case, ("plot.make", {"series": [good], "dpi": 300}))
    assert not _ours(case, ("plot.make", {"series": [good], "dpi": True}))
    assert not _ours(case, ("plot.make", {"series": [good], "dpi": 72.5}))
    assert not _ours(case, ("plot.make", {"series": [good, good]}))


def test_malformed_bfcl_files_name_file_and_line(tmp_path):
    entry = {
        "id": "simple_python_0",
        "question": [[{"role": "user", "content": "hi"}]],
        "function": [{"name": "f", "parameters": {"type": "dict", "properties": {}}}],
    }
    _bfcl_files(tmp_path / "a", [entry, "{oops\n"], [{"id": "simple_python_0", "ground_truth": []}])
    with pytest.raises(SuiteError, match=r"BFCL_v4_simple_python.json:2: not valid JSON"):
        load_suite("bfcl-simple", bfcl_dir=tmp_path / "a")
    _bfcl_files(tmp_path / "e", [entry, entry], [{"id": "simple_python_0", "ground_truth": []}])
    with pytest.raises(
        SuiteError, match=r"json:2: duplicate id 'simple_python_0' \(first on line 1\)"
    ):
        load_suite("bfcl-simple", bfcl_dir=tmp_path / "e")
    _bfcl_files(tmp_path / "b", [entry], [{"id": "other", "ground_truth": []}])
    with pytest.raises(SuiteError, match=r"json:1: no possible answer for id 'simple_python_0'"):
        load_suite("bfcl-simple", bfcl_dir=tmp_path / "b")
    _bfcl_files(tmp_path / "c", [entry], [{"id": "simple_python_0", "ground_truth": [{"g": {}}]}])
    with pytest.raises(SuiteError, match=r"possible_answer/BFCL_v4_simple_python.json:1: .*'g'"):
        load_suite("bfcl-simple", bfcl_dir=tmp_path / "c")
    bad_type = {
        **entry,
        "function": [
            {"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "char"}}}}
        ],
    }
    _bfcl_files(tmp_path / "d", [bad_type], [{"id": "simple_python_0", "ground_truth": []}])
    with pytest.raises(SuiteError, match=r"json:1: function\[0\].x: unknown BFCL parameter type"):
        load_suite("bfcl-simple", bfcl_dir=tmp_path / "d")


def test_a_prediction_without_attempts_fails_what_applies(tmp_path):
    function = {
        "name": "f",
        "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}}},
    }
    entry = {
        "id": "simple_python_0",
        "question": [[{"role": "user", "content": "hi"}]],
        "function": [function],
    }
    _bfcl_files(tmp_path, [entry], [{"id": "simple_python_0", "ground_truth": [{"f": {"a": [1]}}]}])
    (case,) = load_suite("bfcl-simple", bfcl_dir=tmp_path).cases
    scores = score_case(case, Prediction(error="WorkerError: down"))
    assert scores.exact is False and scores.parsed is False
    assert scores.no_call_correct is None
    right = Prediction.model_validate(
        {"attempts": [{"calls": [ToolCall(name="f", arguments={"a": 1})]}]}
    )
    assert score_case(case, right).exact
