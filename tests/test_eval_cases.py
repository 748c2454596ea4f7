"""Suites: our JSONL format (and its errors, with file and line), the built-in `roles` suite."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rolepool.core import UserError
from rolepool.evals.cases import Case, Prediction
from rolepool.evals.roles import PER_SPLIT, SPLIT_SEED, roles_cases
from rolepool.evals.suites import SUITES, SuiteError, load_suite, load_suite_file
from rolepool.zoo.corpus import generate, user_texts
from rolepool.zoo.toolset import ROLE_TOOLS, tool_spec

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
        },
        "required": ["city"],
    },
}


def _line(**overrides):
    line = {
        "id": "w1",
        "role": "search",
        "category": "single",
        "prompt": "Weather in Paris?",
        "tools": [WEATHER],
        "expected": [{"name": "get_weather", "arguments": {"city": ["Paris"], "unit": ["c", ""]}}],
    }
    line.update(overrides)
    return {k: v for k, v in line.items() if v is not None}


def _write(tmp_path, lines, name="suite.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


# -- the file format ----------------------------------------------------------------------------
def test_a_suite_file_loads_every_form(tmp_path):
    history = [
        {"role": "system", "content": "You are the coder agent."},
        {"role": "user", "content": "Run print(1)."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "run_python", "arguments": '{"code": "print(1)"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "name": "run_python", "content": "1"},
    ]
    path = _write(
        tmp_path,
        [
            _line(system="You are the search agent."),
            "",  # blank lines are allowed
            _line(id="w2", expected="no call", prompt="Hi!"),
            {
                "id": "c1",
                "role": "coder",
                "category": "multi_turn",
                "messages": history,
                "tools": ["run_python", "finish", {"type": "function", "function": WEATHER}],
                "expected": [{"name": "finish", "arguments": {"answer": ["The output is 1."]}}],
                "string_match": "exact",
            },
        ],
    )
    suite = load_suite(str(path))
    assert suite.name == "suite" and [c.id for c in suite.cases] == ["w1", "w2", "c1"]
    w1, w2, c1 = suite.cases
    assert [m.role for m in w1.messages] == ["system", "user"]
    assert w1.messages[0].content == "You are the search agent."
    assert w1.expects_call and w1.expected[0].arguments["unit"] == ["c", ""]
    assert not w2.expects_call and w2.expected == []
    assert [t.name for t in c1.tools] == ["run_python", "finish", "get_weather"]
    assert c1.tools[0].parameters == tool_spec("run_python").parameters
    assert c1.messages[2].tool_calls[0].arguments == {"code": "print(1)"}
    assert c1.messages[2].tool_calls[0].id == "call_0"
    assert c1.messages[3].tool_call_id == "call_0" and c1.string_match == "exact"
    assert c1.messages[2].content == ""
    assert load_suite(str(path), limit=2).cases == suite.cases[:2]


def _error(tmp_path, lines) -> str:
    path = _write(tmp_path, lines)
    with pytest.raises(SuiteError) as info:
        load_suite_file(path)
    assert isinstance(info.value, UserError)
    return str(info.value)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('{"id": "x", ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (_line(category=None), "category: Field required"),
        (_line(colour="red"), "colour: Extra inputs are not permitted"),
        (
            _line(expected=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
            "expected.list[ExpectedCall].0.arguments.city: Input should be a valid list",
        ),
        (_line(tools=["run_pyton"]), "tools[0]: unknown built-in tool 'run_pyton'"),
        (
            _line(tools=[{"name": "t", "parameters": {"type": "array"}}]),
            "the top level must be",
        ),
        (_line(tools=[{"name": "t", "paramters": {}}]), "unknown key 'paramters'"),
        (_line(tools=[WEATHER, WEATHER]), "'get_weather' is offered twice"),
        (
            _line(expected=[{"name": "get_time", "arguments": {}}]),
            "expected[0]: 'get_time' is not an offered tool",
        ),
        (
            _line(expected=[{"name": "get_weather", "arguments": {"unit": ["c"]}}]),
            "required parameter 'city' missing",
        ),
        (
            _line(tools=["read_doc"], expected=[{"name": "read_doc", "arguments": {"id": ["a"]}}]),
            "read_doc has no parameter 'id'",
        ),
        (_line(messages=[{"role": "user", "content": "x"}]), 'either "messages" or "prompt"'),
        (
            _line(prompt=None, messages=[{"role": "robot", "content": "x"}]),
            "messages.0.role: Input should be",
        ),
        (
            _line(prompt=None, messages=[{"role": "assistant", "content": "x"}]),
            "messages end with an assistant turn",
        ),
        (_line(expected="nothing"), "expected"),
    ],
)
def test_a_malformed_line_names_file_line_and_problem(tmp_path, bad, problem):
    message = _error(tmp_path, [_line(id="ok"), bad])
    assert message.startswith(f"{tmp_path / 'suite.jsonl'}:2: ")
    assert problem in message


def test_duplicate_ids_name_both_lines(tmp_path):
    message = _error(tmp_path, [_line(), _line(id="other"), _line()])
    assert message.endswith(":3: duplicate id 'w1' (first on line 1)")


def test_unknown_suite_and_empty_suite_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown suite 'nope'.*roles, bfcl-simple"):
        load_suite("nope")
    with pytest.raises(SuiteError, match="no cases"):
        load_suite(str(_write(tmp_path, [""])))
    with pytest.raises(UserError, match="limit must be at least 1"):
        load_suite("roles", limit=0)


def test_bfcl_suites_without_a_data_dir_say_how_to_give_one(monkeypatch, tmp_path):
    monkeypatch.delenv("ROLEPOOL_BFCL_DIR", raising=False)
    monkeypatch.setattr("rolepool.evals.bfcl.data.installed_bfcl_data", lambda: None)
    with pytest.raises(UserError, match="bfcl-eval.*--bfcl-dir DIR.*ROLEPOOL_BFCL_DIR"):
        load_suite("bfcl-simple")
    monkeypatch.setenv("ROLEPOOL_BFCL_DIR", str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"\$ROLEPOOL_BFCL_DIR: .*does not exist"):
        load_suite("bfcl-parallel")
    with pytest.raises(UserError, match="BFCL_v4_irrelevance.json not found"):
        load_suite("bfcl-irrelevance", bfcl_dir=tmp_path)
    assert set(SUITES) == {
        "roles",
        "bfcl-simple",
        "bfcl-multiple",
        "bfcl-parallel",
        "bfcl-parallel-multiple",
        "bfcl-irrelevance",
        "bfcl-simple-java",
        "bfcl-simple-javascript",
        "bfcl-live-simple",
        "bfcl-live-multiple",
        "bfcl-live-parallel",
        "bfcl-live-parallel-multiple",
        "bfcl-live-irrelevance",
        "bfcl-live-relevance",
        "bfcl-multi-turn-base",
        "bfcl-multi-turn-miss-func",
        "bfcl-multi-turn-miss-param",
        "bfcl-multi-turn-long-context",
        "bfcl",
        "bfcl-non-live",
        "bfcl-live",
        "bfcl-multi-turn",
    }


# -- the built-in roles suite --------------------------------------------------------------------
@pytest.fixture(scope="module")
def roles():
    return load_suite("roles").cases


def test_roles_suite_is_deterministic_and_covers_roles_and_categories(roles):
    assert len(roles) == 2 * PER_SPLIT
    assert [c.model_dump() for c in roles] == [c.model_dump() for c in load_suite("roles").cases]
    assert len({c.id for c in roles}) == len(roles)
    kinds = Counter((c.role, c.category) for c in roles)
    assert {role for role, _ in kinds} == set(ROLE_TOOLS)
    assert {cat for _, cat in kinds} >= {"single", "parallel", "multi_turn", "no_call", "refusal"}
    for role in ROLE_TOOLS:  # every role has call cases and cases that need no call
        assert any(c.expects_call for c in roles if c.role == role)
        assert any(not c.expects_call for c in roles if c.role == role)
    assert all(len(c.expected) >= 2 for c in roles if c.category == "parallel")
    assert {c.id.split("/")[1] for c in roles} == {"unseen_values", "unseen_phrasings"}


def test_roles_limit_keeps_both_splits_and_is_a_prefix(roles):
    few = load_suite("roles", limit=5).cases
    assert [c.id for c in few] == [c.id for c in roles[:5]]
    assert {c.id.split("/")[1] for c in few} == {"unseen_values", "unseen_phrasings"}


def test_roles_cases_are_the_zoo_evaluation_splits():
    from rolepool.zoo import evaluate

    assert SPLIT_SEED == evaluate.SPLIT_SEED
    cases = roles_cases()
    for split in ("unseen_values", "unseen_phrasings"):
        examples = generate(split, PER_SPLIT, seed=evaluate.SPLIT_SEED)
        mine = [c for c in cases if c.id.startswith(f"roles/{split}/")]
        for case, example in zip(mine, examples, strict=True):
            assert case.role == example.meta["role"]
            assert case.category == example.meta["category"]
            assert [m.content for m in case.messages] == [m["content"] for m in example.prompt()]
            assert [c.name for c in case.expected] == [c["name"] for c in example.meta["expected"]]


def test_roles_held_out_requests_are_not_in_train(roles):
    seen = user_texts(generate("train", 20_000, seed=0))
    # No-call requests carry no values; in `unseen_values` they reuse train phrasings by design.
    held_out = [
        m.content
        for c in roles
        if not (c.category == "no_call" and "unseen_values" in c.id)
        for m in c.messages
        if m.role == "user"
    ]
    assert held_out and not set(held_out) & seen
    phrasings = [c for c in roles if "unseen_phrasings" in c.id]
    assert not {m.content for c in phrasings for m in c.messages if m.role == "user"} & seen


def test_roles_defaults_may_be_left_out_like_the_zoo_scores_them(roles):
    search = [
        c for c in roles if c.expected and c.expected[0].name == "search_docs" and c.expects_call
    ]
    assert search
    for case in search:
        accepted = case.expected[0].arguments["top_k"]
        assert 5 in accepted or "" not in accepted  # omission only where the default is right


def _rendered(tokenizer, messages, tools):
    return tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=False
    )


@pytest.mark.anyio
async def test_a_roles_case_through_the_real_loop_renders_as_training_data(roles):
    """The request the run loop sends for a case renders, through the worker's own message
    conversion and the shipped tokenizer, to exactly the training prompt of that example."""
    from transformers import AutoTokenizer

    from rolepool.pools.testing import ScriptedWorker
    from rolepool.pools.transformers_worker import _chat_messages
    from rolepool.runtime import LoopInputs, new_scope, run_agent
    from rolepool.tools.tool import Tool
    from rolepool.zoo import checkpoint_path

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("dense-s1"))
    examples = {
        split: generate(split, PER_SPLIT, seed=SPLIT_SEED)
        for split in ("unseen_values", "unseen_phrasings")
    }
    picked = [next(c for c in roles if c.category == cat) for cat in ("multi_turn", "parallel")]
    picked += [c for c in roles if c.category == "single"][:2]
    for case in picked:
        _, split, index = case.id.split("/")
        example = examples[split][int(index)]
        tools = [Tool(t.name, t.description, t.parameters, None) for t in case.tools]
        worker = ScriptedWorker(["done"])
        spec = LoopInputs(name="eval", role=case.role or "assistant", instructions="", tools=tools)
        await run_agent(spec, case.messages, worker, new_scope(store=False))
        request = worker.requests[0]
        served = _rendered(
            tokenizer, _chat_messages(request), [t.to_openai() for t in request.tools]
        )
        assert served == _rendered(tokenizer, example.prompt(), example.tools), case.id


def test_case_and_prediction_round_trip_as_json(roles):
    case = roles[0]
    assert Case.model_validate_json(case.model_dump_json()) == case
    empty = Prediction()
    assert empty.first is None and empty.final is None


@pytest.mark.slow  # loads a shipped checkpoint
def test_roles_scores_agree_with_the_zoo_scorer_on_real_model_outputs():
    """The shipped dense-s1's greedy outputs on the first cases of both splits, scored by the
    zoo's evaluator (what the model cards report) and by replaying them here: same verdicts."""
    from rolepool.evals.replay import ReplayRecord, prediction_from_replay
    from rolepool.evals.scoring import score_case
    from rolepool.zoo import checkpoint_path, evaluate

    model, tokenizer = evaluate.load(str(checkpoint_path("dense-s1")))
    cases = {c.id: c for c in roles_cases()}
    verdicts = []
    for split in ("unseen_values", "unseen_phrasings"):
        examples = generate(split, 8, seed=SPLIT_SEED)
        outputs = evaluate.generate_outputs(
            model,
            tokenizer,
            [e.prompt() for e in examples],
            [e.tools for e in examples],
            max_new_tokens=96,
        )
        for index, (example, output) in enumerate(zip(examples, outputs, strict=True)):
            case = cases[f"roles/{split}/{index:04d}"]
            mine = score_case(
                case, prediction_from_replay(case, ReplayRecord(id=case.id, text=output))
            )
            verdicts.append((case.id, evaluate.score_item(example, output)["exact"], mine.exact))
    assert [(i, zoo) for i, zoo, _ in verdicts] == [(i, mine) for i, _, mine in verdicts]
    assert {zoo for _, zoo, _ in verdicts} == {True, False}  # both verdicts are exercised


def test_line_numbers_count_newlines_only(tmp_path):
    # U+2028 is a line break to str.splitlines() but may stand unescaped inside a JSON string.
    first = json.dumps(_line(prompt="Weather in\u2028Paris?"), ensure_ascii=False)
    path = tmp_path / "suite.jsonl"
    path.write_text(first + "\n" + json.dumps(_line()) + "\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"suite.jsonl:2: duplicate id 'w1' \(first on line 1\)"):
        load_suite_file(path)
