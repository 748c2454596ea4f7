"""Replay files: precomputed outputs read, checked line by line, and turned into predictions
through the run loop's parser and validation."""

from __future__ import annotations

import json

import pytest

from rolepool.core import Message, UserError
from rolepool.evals.cases import Case, ExpectedCall
from rolepool.evals.replay import ReplayRecord, load_replay, prediction_from_replay
from rolepool.evals.scoring import score_case

READ_DOC = {
    "name": "read_doc",
    "description": "Read one document by its id.",
    "parameters": {
        "type": "object",
        "properties": {"doc_id": {"type": "string"}},
        "required": ["doc_id"],
        "additionalProperties": False,
    },
}
CASE = Case(
    id="r1",
    suite="t",
    role="search",
    category="single",
    messages=[Message(role="user", content="Open doc KB-17.")],
    tools=[READ_DOC],
    expected=[ExpectedCall(name="read_doc", arguments={"doc_id": ["KB-17"]})],
    string_match="exact",
)


def _write(tmp_path, lines):
    path = tmp_path / "outputs.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_records_load_by_id_in_file_order(tmp_path):
    path = _write(
        tmp_path,
        [
            {"id": "r1", "text": "hello"},
            "",
            {"id": "r2", "tool_calls": [{"name": "read_doc", "arguments": '{"doc_id": "A"}'}]},
            {"id": "r1", "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
        ],
    )
    records = load_replay(path)
    assert list(records) == ["r1", "r2"]
    assert [r.text for r in records["r1"]] == ["hello", None]
    calls = [c.model_dump() for c in records["r2"][0].tool_calls]
    assert calls == [{"name": "read_doc", "arguments": {"doc_id": "A"}}]
    assert [c.model_dump() for c in records["r1"][1].tool_calls] == [{"name": "f", "arguments": {}}]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('"text"', "expected a JSON object, got str"),
        ({"text": "x"}, '"id" must be a non-empty string'),
        ({"id": "a"}, 'needs "text" or "tool_calls"'),
        ({"id": "a", "text": 3}, '"text" must be a string'),
        ({"id": "a", "output": "x"}, "unknown key 'output'"),
        ({"id": "a", "tool_calls": {"name": "f"}}, '"tool_calls" must be a list'),
        ({"id": "a", "tool_calls": [{"arguments": {}}]}, "tool_calls[0]: a call needs a non-empty"),
        (
            {"id": "a", "tool_calls": [{"name": "f", "arguments": "{oops"}]},
            '"arguments" string is not JSON',
        ),
        ({"id": "a", "tool_calls": [{"name": "f", "arguments": [1]}]}, "must be a JSON object"),
    ],
)
def test_a_malformed_line_names_file_and_line(tmp_path, bad, problem):
    path = _write(tmp_path, [{"id": "ok", "text": "fine"}, bad])
    with pytest.raises(UserError) as info:
        load_replay(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert problem in str(info.value)


def test_a_missing_replay_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="replay file .*missing.jsonl"):
        load_replay(tmp_path / "missing.jsonl")


def _predict(record):
    return prediction_from_replay(CASE, ReplayRecord(id=CASE.id, **record))


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "read_doc", "arguments": {"doc_id": "KB-17"}}</tool_call>',
        '{"name": "read_doc", "arguments": {"doc_id": "KB-17"}}',
        '[TOOL_CALLS][{"name": "read_doc", "arguments": {"doc_id": "KB-17"}}]',
        'Let me open it. <|python_tag|>{"name": "read_doc", "parameters": {"doc_id": "KB-17"}}',
    ],
)
def test_text_goes_through_the_run_loops_parser(text):
    prediction = _predict({"text": text})
    (attempt,) = prediction.attempts
    assert attempt.text == text and attempt.parse_error is None and not attempt.invalid
    assert [(c.name, c.arguments) for c in attempt.calls] == [("read_doc", {"doc_id": "KB-17"})]
    assert score_case(CASE, prediction).exact


def test_unparseable_empty_and_invalid_outputs():
    broken = _predict({"text": '<tool_call>{"name": "read_doc", "arguments": {"doc_id": }'})
    assert broken.final.parse_error and "hermes" in broken.final.parse_error
    assert not broken.final.calls and not score_case(CASE, broken).json_valid
    empty = _predict({"text": "   "})
    assert empty.final.parse_error == "the reply was empty"
    invalid = _predict({"tool_calls": [{"name": "read_doc", "arguments": {"doc_id": 17}}]})
    assert invalid.final.invalid == ["read_doc: $.doc_id: 17 is not of type 'string'"]
    scores = score_case(CASE, invalid)
    assert scores.schema_valid is False and scores.name_correct is True
    unknown = _predict({"tool_calls": [{"name": "open_doc", "arguments": {"doc_id": "KB-17"}}]})
    assert "no tool named 'open_doc'" in unknown.final.invalid[0]


def test_native_calls_are_taken_as_they_are_with_their_prose():
    prediction = _predict(
        {
            "text": "Opening it.",
            "tool_calls": [{"name": "read_doc", "arguments": {"doc_id": "KB-17"}}],
        }
    )
    (attempt,) = prediction.attempts
    assert attempt.text == "Opening it." and len(attempt.calls) == 1
    assert score_case(CASE, prediction).exact


def test_a_replay_file_end_to_end(tmp_path):
    path = _write(
        tmp_path,
        [
            {
                "id": "r1",
                "text": '<tool_call>{"name": "read_doc", "arguments": {"doc_id": "kb-17"}}',
            },
        ],
    )
    (record,) = load_replay(path)["r1"]
    scores = score_case(CASE, prediction_from_replay(CASE, record))
    # The missing closing tag is forgiven at the end of the text, as in the run loop; the
    # case compares strings exactly, so "kb-17" is not "KB-17".
    assert scores.parsed and scores.schema_valid and not scores.exact
