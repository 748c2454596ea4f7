"""Property tests for tool-call parsing: it never raises, and every format round-trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolepool.tools.formats import FORMATS
from rolepool.tools.parsing import ParseResult, parse_tool_calls

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
arguments = st.dictionaries(st.text(), json_values, max_size=5)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,24}", fullmatch=True)
calls = st.lists(st.tuples(names, arguments), min_size=1, max_size=4)
prose = st.text(st.characters(whitelist_categories=("L", "N", "Zs"), whitelist_characters=".!?'"))

# Fragments that steer random text into the parser's interesting corners.
fragments = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        '"',
        "\\",
        ":",
        ",",
        ";",
        " ",
        "\n",
        "```json\n",
        "```",
        '"name"',
        '"arguments"',
        '"parameters"',
        '"function"',
        '"type"',
        '"id"',
        '"f"',
        "<tool_call>",
        "</tool_call>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "[CALL_ID]",
        "<|python_tag|>",
        "NaN",
        "-Infinity",
        "1e999",
        "0",
        "-1.5",
        "true",
        "null",
        "\\u",
        "\\ud800",
        "\ud800",
        "9" * 5000,
        "{" * 70,
        "[" * 1100,
    ]
)
hostile_text = st.lists(fragments | st.text(max_size=5), max_size=60).map("".join)


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def as_json(cs: list[tuple[str, dict]], a: bool) -> str:
    items = [{"name": n, "arguments": args} for n, args in cs]
    return dumps(items[0] if len(items) == 1 else items, a)


def as_json_string_arguments(cs: list[tuple[str, dict]], a: bool) -> str:
    return dumps([{"name": n, "arguments": dumps(args, a)} for n, args in cs], a)


def as_openai(cs: list[tuple[str, dict]], a: bool) -> str:
    items = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": n, "arguments": dumps(args, a)},
        }
        for i, (n, args) in enumerate(cs)
    ]
    return "```json\n" + dumps(items, a) + "\n```"


def as_hermes(cs: list[tuple[str, dict]], a: bool) -> str:
    blocks = [
        f"<tool_call>\n{dumps({'name': n, 'arguments': args}, a)}\n</tool_call>" for n, args in cs
    ]
    return "\n".join(blocks)


def as_llama3(cs: list[tuple[str, dict]], a: bool) -> str:
    return "; ".join(dumps({"name": n, "parameters": args}, a) for n, args in cs)


def as_llama3_tagged(cs: list[tuple[str, dict]], a: bool) -> str:
    return "<|python_tag|>" + as_llama3(cs, a) + "<|eom_id|>"


def as_mistral(cs: list[tuple[str, dict]], a: bool) -> str:
    return "[TOOL_CALLS]" + dumps([{"name": n, "arguments": args} for n, args in cs], a)


def as_mistral_named(cs: list[tuple[str, dict]], a: bool) -> str:
    return "".join(f"[TOOL_CALLS]{n}[ARGS]{dumps(args, a)}" for n, args in cs)


SERIALISERS: dict[str, tuple[Callable[[list[tuple[str, dict]], bool], str], str]] = {
    "json": (as_json, "json"),
    "json-string-arguments": (as_json_string_arguments, "json"),
    "openai": (as_openai, "json"),
    "hermes": (as_hermes, "hermes"),
    "llama3": (as_llama3, "llama3"),
    "llama3-tagged": (as_llama3_tagged, "llama3"),
    "mistral": (as_mistral, "mistral"),
    "mistral-named": (as_mistral_named, "mistral"),
}


def check_invariants(result: ParseResult) -> None:
    if result.failure is not None:
        assert result.calls == []
        assert result.format in (*FORMATS, "none")
        assert isinstance(str(result.failure), str)
        if result.failure.position is not None:
            assert result.failure.line is not None and result.failure.line >= 1
            assert result.failure.column is not None and result.failure.column >= 1
            assert len(result.failure.snippet) <= 80
    elif result.calls:
        assert result.format in FORMATS
        assert len({call.id for call in result.calls}) == len(result.calls)
        assert all(call.name.strip() and isinstance(call.arguments, dict) for call in result.calls)
    else:
        assert result.is_final and result.format == "none"


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_random_text_never_raises(text):
    check_invariants(parse_tool_calls(text))


@settings(max_examples=500, deadline=None)
@given(hostile_text)
def test_hostile_text_never_raises(text):
    check_invariants(parse_tool_calls(text))


@settings(max_examples=200, deadline=None)
@given(hostile_text, st.integers(min_value=0, max_value=200))
def test_max_chars_never_raises(text, limit):
    result = parse_tool_calls(text, max_chars=limit)
    check_invariants(result)
    if len(text) > limit:
        assert result.failure is not None and result.failure.position is None


@settings(max_examples=150, deadline=None)
@given(calls, st.sampled_from(sorted(SERIALISERS)), st.booleans())
def test_every_format_round_trips(cs, style, ascii_only):
    serialise, fmt = SERIALISERS[style]
    result = parse_tool_calls(serialise(cs, ascii_only))
    assert result.failure is None, str(result.failure)
    assert [(call.name, call.arguments) for call in result.calls] == cs
    assert result.format == fmt
    assert result.text == ""
    check_invariants(result)


@settings(max_examples=100, deadline=None)
@given(calls, st.sampled_from(["hermes", "mistral", "llama3-tagged", "json"]), prose)
def test_prose_before_calls_is_kept(cs, style, before):
    serialise, _ = SERIALISERS[style]
    result = parse_tool_calls(before + "\n" + serialise(cs, True))
    assert [(call.name, call.arguments) for call in result.calls] == cs
    assert result.text == before.strip()


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=5), prose)
def test_json_that_is_not_call_shaped_is_a_final_answer(data, before):
    keys = set(data)
    call_shaped = keys <= {"name", "arguments", "parameters", "id", "type", "function"} and (
        "function" in keys or ("name" in keys and keys & {"arguments", "parameters"})
    )
    text = f"{before} {json.dumps(data)}"
    result = parse_tool_calls(text)
    if not call_shaped:
        assert result.is_final
        assert result.text == text.strip()


@pytest.mark.parametrize("key", ["<think>", "</think>", "a <think> b </think> c"])
def test_a_think_tag_inside_a_calls_arguments_is_not_reasoning(key):
    # found by test_every_format_round_trips: the tag was taken for reasoning and cut the call
    call = json.dumps({"name": "A", "arguments": {key: None}})
    text = f"<tool_call>\n{call}\n</tool_call>"
    result = parse_tool_calls(text)
    assert result.failure is None and not result.reasoning
    assert [(c.name, c.arguments) for c in result.calls] == [("A", {key: None})]


@pytest.mark.parametrize(
    "text",
    [
        '{"<think>": null}',  # found by test_json_that_is_not_call_shaped_is_a_final_answer
        'The config: {"tags": ["</think>", "a <think> b"]}',
        '[1, {"note": "<think>"}]',
    ],
)
def test_a_think_tag_inside_a_json_answer_is_text(text):
    result = parse_tool_calls(text)
    assert result.is_final and not result.reasoning
    assert result.text == text


def test_reasoning_before_a_json_answer_holding_a_tag_is_still_split():
    result = parse_tool_calls('<think>plan</think>{"echo": "<think>"}')
    assert result.reasoning == "plan"
    assert result.text == '{"echo": "<think>"}'


@pytest.mark.parametrize(
    ("text", "declared"),
    [('[search(q="</think>")]', "pythonic"), ('[search(q="a <think> b")]', "pythonic")],
)
def test_a_think_tag_inside_a_pythonic_calls_arguments_is_not_reasoning(text, declared):
    result = parse_tool_calls(text, tool_format=declared)
    assert result.failure is None and not result.reasoning
    assert [c.name for c in result.calls] == ["search"]


@pytest.mark.parametrize("key", ["</think>", "<think>"])
def test_a_call_inside_reasoning_is_not_run_when_its_arguments_hold_a_tag(key):
    # found by test_old_formats_inside_reasoning_are_not_calls: the tag inside the call's JSON
    # ended the reasoning early, and the whole-reply fallback then ran the call
    call = json.dumps({"name": "A", "arguments": {key: None}})
    result = parse_tool_calls(f"<think> <tool_call>{call}</tool_call></think>")
    assert result.calls == [] and result.failure is None and result.text == ""


def test_a_call_written_inside_reasoning_is_still_not_run():
    text = '<think>maybe <tool_call>{"name": "A", "arguments": {}}</tool_call></think>It is 5.'
    result = parse_tool_calls(text)
    assert result.calls == [] and result.text.strip() == "It is 5." and "maybe" in result.reasoning
