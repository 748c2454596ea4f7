"""BFCL v4 single-turn categories as suites: find a BFCL data directory, read a category's
entries and possible answers, and make each entry a `Case` (tools as JSON Schema, possible answers
as expected calls, and the `BfclKey` BFCL's checker needs).

The data comes from `--bfcl-dir`, else `$ROLEPOOL_BFCL_DIR`, else the installed `bfcl-eval`
package (`pip install --no-deps bfcl-eval`: its `data/` folder; the package is never imported, and
its data is never copied into this repository). BFCL files are JSON Lines: test entries
`{"id", "question", "function"}` and, under `possible_answer/`, `{"id", "ground_truth": [{name:
{param: [accepted values]}}]}` whose accepted values already use our `ExpectedCall` convention
(`""` = may be omitted). Irrelevance and relevance categories have no possible answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from rolepool.core import Message, UserError
from rolepool.evals.bfcl.schema import convert_function, java_js_offered
from rolepool.evals.cases import BfclKey, Case, ExpectedCall
from rolepool.evals.errors import SuiteError

BFCL_ENV = "ROLEPOOL_BFCL_DIR"
CATEGORIES: dict[str, str] = {
    "bfcl-simple": "simple_python",
    "bfcl-multiple": "multiple",
    "bfcl-parallel": "parallel",
    "bfcl-parallel-multiple": "parallel_multiple",
    "bfcl-irrelevance": "irrelevance",
    "bfcl-simple-java": "simple_java",
    "bfcl-simple-javascript": "simple_javascript",
    "bfcl-live-simple": "live_simple",
    "bfcl-live-multiple": "live_multiple",
    "bfcl-live-parallel": "live_parallel",
    "bfcl-live-parallel-multiple": "live_parallel_multiple",
    "bfcl-live-irrelevance": "live_irrelevance",
    "bfcl-live-relevance": "live_relevance",
}
"""Suite name -> BFCL single-turn category (the file is `BFCL_v4_<category>.json`)."""

NON_LIVE = (
    "bfcl-simple",
    "bfcl-simple-java",
    "bfcl-simple-javascript",
    "bfcl-multiple",
    "bfcl-parallel",
    "bfcl-parallel-multiple",
    "bfcl-irrelevance",
)
LIVE = tuple(name for name in CATEGORIES if name.startswith("bfcl-live-"))
MULTI_TURN_CATEGORIES: dict[str, str] = {
    "bfcl-multi-turn-base": "multi_turn_base",
    "bfcl-multi-turn-miss-func": "multi_turn_miss_func",
    "bfcl-multi-turn-miss-param": "multi_turn_miss_param",
    "bfcl-multi-turn-long-context": "multi_turn_long_context",
}
"""Suite name -> BFCL multi-turn category (`rolepool.evals.bfcl.multi_turn`)."""
GROUPS: dict[str, tuple[str, ...]] = {
    "bfcl": (*NON_LIVE, *LIVE, *MULTI_TURN_CATEGORIES),
    "bfcl-non-live": NON_LIVE,
    "bfcl-live": LIVE,
    "bfcl-multi-turn": tuple(MULTI_TURN_CATEGORIES),
}
"""Suite names that stand for several suites: the leaderboard's groups."""
_NO_ANSWERS = ("irrelevance", "live_irrelevance", "live_relevance")


def find_bfcl_dir(bfcl_dir: Path | str | None) -> Path:
    """The BFCL data directory: the argument, `$ROLEPOOL_BFCL_DIR`, or the installed `bfcl-eval`
    package's data, checked to exist."""
    source = "--bfcl-dir"
    if bfcl_dir is None:
        env = os.environ.get(BFCL_ENV)
        if env:
            bfcl_dir, source = env, f"${BFCL_ENV}"
        else:
            bfcl_dir, source = installed_bfcl_data(), "the bfcl-eval package"
        if bfcl_dir is None:
            raise UserError(
                "BFCL suites need BFCL's data: install it with `pip install --no-deps bfcl-eval`, "
                "or pass --bfcl-dir DIR (bfcl_dir= in Python; the folder holding "
                f"BFCL_v4_simple_python.json and possible_answer/) or set {BFCL_ENV}"
            )
    path = Path(bfcl_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"{source}: BFCL data directory {str(path)!r} does not exist")
    return path


def installed_bfcl_data() -> Path | None:
    """The `data/` folder of the installed `bfcl-eval` package, found without importing it."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        data = Path(location) / "data"
        if (data / "BFCL_v4_simple_python.json").is_file():
            return data
    return None


def load_bfcl(suite: str, bfcl_dir: Path | str | None, limit: int | None = None) -> list[Case]:
    """The cases of one BFCL category (`suite` is a key of `CATEGORIES`), in file order."""
    category = CATEGORIES[suite]
    root = find_bfcl_dir(bfcl_dir)
    questions = root / f"BFCL_v4_{category}.json"
    if not questions.is_file():
        raise UserError(f"{suite}: {questions} not found (is {root} a BFCL v4 data directory?)")
    answers: dict[str, tuple[Any, str]] = {}
    if category not in _NO_ANSWERS:
        answer_file = root / "possible_answer" / questions.name
        if not answer_file.is_file():
            raise UserError(f"{suite}: possible answers {answer_file} not found")
        answers = _read_answers(answer_file)
    cases = []
    for where, entry in json_lines(questions):
        if limit is not None and len(cases) >= limit:
            break
        cases.append(_case(suite, category, entry, answers, where))
    return cases


def json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every entry of a BFCL file with its `FILE:LINE`; ids must be unique."""
    out = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SuiteError(where, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(value, dict) or not isinstance(value.get("id"), str):
                raise SuiteError(where, 'expected a JSON object with a string "id"')
            if value["id"] in seen:
                first = seen[value["id"]]
                raise SuiteError(where, f"duplicate id {value['id']!r} (first on line {first})")
            seen[value["id"]] = number
            out.append((where, value))
    return out


def _read_answers(path: Path) -> dict[str, tuple[Any, str]]:
    answers: dict[str, tuple[Any, str]] = {}
    for where, entry in json_lines(path):
        if "ground_truth" not in entry:
            raise SuiteError(where, 'missing "ground_truth"')
        answers[entry["id"]] = (entry["ground_truth"], where)
    return answers


def _case(
    suite: str,
    category: str,
    entry: dict[str, Any],
    answers: dict[str, tuple[Any, str]],
    where: str,
) -> Case:
    case_id = entry["id"]
    turns = entry.get("question")
    if not isinstance(turns, list) or len(turns) != 1 or not isinstance(turns[0], list):
        raise SuiteError(where, '"question" must hold exactly one turn (a list of messages)')
    functions = entry.get("function")
    if not isinstance(functions, list) or not (functions or category in _NO_ANSWERS):
        raise SuiteError(where, '"function" must be a non-empty list of function definitions')
    language = _language(category)
    offered = (
        functions if language == "python" else [_offered(f, language, where) for f in functions]
    )
    tools = [convert_function(f, f"{where}: function[{i}]") for i, f in enumerate(offered)]
    expected: list[ExpectedCall] = []
    if category not in _NO_ANSWERS:
        if case_id not in answers:
            raise SuiteError(where, f"no possible answer for id {case_id!r}")
        truth, answer_where = answers[case_id]
        expected = expected_calls(truth, answer_where)
        names = {t.name for t in tools}
        for call in expected:
            if call.name not in names:
                raise SuiteError(answer_where, f"ground truth calls {call.name!r}, not offered")
    try:
        return Case(
            id=case_id,
            suite=suite,
            role=None,
            category=category,
            messages=[Message(role=m["role"], content=m["content"]) for m in turns[0]],
            tools=tools,
            expected=expected,
            bfcl=BfclKey(category=category, language=language, functions=functions),
        )
    except (ValidationError, KeyError, TypeError) as exc:
        raise SuiteError(where, f"bad question messages: {exc}") from None


def expected_calls(truth: Any, where: str) -> list[ExpectedCall]:
    """BFCL's `ground_truth` (a list of `{name: {param: [accepted...]}}`) as expected calls."""
    if not isinstance(truth, list):
        raise SuiteError(where, '"ground_truth" must be a list of {name: {param: [values]}}')
    calls = []
    for index, item in enumerate(truth):
        if not isinstance(item, dict) or len(item) != 1:
            raise SuiteError(where, f"ground_truth[{index}] must be one {{name: arguments}} object")
        ((name, arguments),) = item.items()
        if not isinstance(arguments, dict) or not all(
            isinstance(v, list) for v in arguments.values()
        ):
            raise SuiteError(
                where, f"ground_truth[{index}] ({name}): each parameter needs a list of values"
            )
        calls.append(ExpectedCall(name=name, arguments=arguments))
    return calls


def _language(category: str) -> Literal["python", "java", "javascript"]:
    if category.endswith("_javascript"):
        return "javascript"
    return "java" if category.endswith("_java") else "python"


def _offered(function: Any, language: str, where: str) -> dict[str, Any]:
    if not isinstance(function, dict) or not isinstance(function.get("parameters"), dict):
        raise SuiteError(where, 'a function needs "parameters"')
    return java_js_offered(function, language)
