"""Property tests for the formats in rolepool.tools.formats, as test_parsing_properties.py has for
the JSON family: parsing never raises, every format round-trips, adversarial text stays safe."""

from __future__ import annotations

import json
import keyword
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from rolepool.tools.formats import FORMATS
from rolepool.tools.parsing import ParseResult, parse_tool_calls
from tests.test_parsing_properties import SERIALISERS, arguments, hostile_text, json_values, prose

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,16}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s not in ("true", "false", "null")
)
py_calls = st.lists(
    st.tuples(identifiers, st.dictionaries(identifiers, json_values, max_size=4)),
    min_size=1,
    max_size=4,
)
dashed = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,24}", fullmatch=True)
json_calls = st.lists(st.tuples(dashed, arguments), min_size=1, max_size=4)
xml_calls = st.lists(
    st.tuples(dashed, st.dictionaries(identifiers, json_values, max_size=4)),
    min_size=1,
    max_size=4,
)
Calls = list[tuple[str, dict]]


def as_pythonic(cs: Calls) -> str:
    items = [f"{n}({', '.join(f'{k}={v!r}' for k, v in args.items())})" for n, args in cs]
    return "[" + ", ".join(items) + "]"


def as_llama4(cs: Calls) -> str:
    return "<|python_start|>" + as_pythonic(cs) + "<|python_end|><|eot|>"


def as_qwen_xml(cs: Calls) -> str:
    def params(args: dict) -> str:
        return "".join(f"<parameter={k}>\n{json.dumps(v)}\n</parameter>\n" for k, v in args.items())

    return "\n".join(
        f"<tool_call>\n<function={n}>\n{params(a)}</function>\n</tool_call>" for n, a in cs
    )


def as_harmony(cs: Calls) -> str:
    return "".join(
        f"<|start|>assistant<|channel|>commentary to=functions.{n} <|constrain|>json<|message|>"
        f"{json.dumps(a)}<|call|>"
        for n, a in cs
    )


def as_granite(cs: Calls) -> str:
    return "<|tool_call|>" + json.dumps([{"name": n, "arguments": a} for n, a in cs])


def as_deepseek_v3(cs: Calls) -> str:
    body = "".join(
        f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{json.dumps(a)}\n```<｜tool▁call▁end｜>"
        for n, a in cs
    )
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


def as_deepseek_v31(cs: Calls) -> str:
    body = "".join(
        f"<｜tool▁call▁begin｜>{n}<｜tool▁sep｜>{json.dumps(a)}<｜tool▁call▁end｜>" for n, a in cs
    )
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


NEW: dict[str, tuple[Callable[[Calls], str], str, st.SearchStrategy]] = {
    "pythonic": (as_pythonic, "pythonic", py_calls),
    "llama4": (as_llama4, "pythonic", py_calls),
    "qwen_xml": (as_qwen_xml, "qwen_xml", xml_calls),
    "harmony": (as_harmony, "harmony", json_calls),
    "granite": (as_granite, "granite", json_calls),
    "deepseek-v3": (as_deepseek_v3, "deepseek", json_calls),
    "deepseek-v3.1": (as_deepseek_v31, "deepseek", json_calls),
}

new_fragments = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<|channel|>",
        "analysis",
        "commentary",
        "<|message|>",
        "<|call|>",
        "<|constrain|>",
        "to=functions.",
        "to=functions.f",
        "<|start|>assistant",
        "<|tool_call|>",
        "<function=f>",
        "<function=",
        "<parameter=x>",
        "</parameter>",
        "</function>",
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "function",
        "[f(",
        "[f(x=",
        "<|python_start|>",
        ")",
        "(",
        "=",
        "'",
        "**",
        "lambda: 0",
        "__import__('os')",
        "(" * 300,
    ]
)
new_hostile = st.lists(new_fragments | st.text(max_size=5), max_size=60).map("".join)


def check(result: ParseResult) -> None:
    assert result.format in (*FORMATS, "none")
    if result.failure is not None:
        assert result.calls == []
        assert isinstance(str(result.failure), str)
        if result.failure.position is not None:
            assert result.failure.line is not None and result.failure.line >= 1
            assert len(result.failure.snippet) <= 80
    elif result.calls:
        assert len({call.id for call in result.calls}) == len(result.calls)
        assert all(call.name.strip() and isinstance(call.arguments, dict) for call in result.calls)
    else:
        assert result.is_final and result.format == "none"


@settings(max_examples=400, deadline=None)
@given(new_hostile | st.tuples(hostile_text, new_hostile).map("".join))
def test_hostile_text_with_new_markers_never_raises(text):
    check(parse_tool_calls(text))
    check(parse_tool_calls(text, tool_format="pythonic"))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_random_text_never_raises_in_any_declared_format(text):
    for fmt in ("auto", *FORMATS):
        check(parse_tool_calls(text, tool_format=fmt))


@st.composite
def format_and_calls(draw):
    style = draw(st.sampled_from(sorted(NEW)))
    return style, draw(NEW[style][2])


@settings(max_examples=300, deadline=None)
@given(format_and_calls())
def test_every_new_format_round_trips(case):
    style, cs = case
    serialise, fmt, _ = NEW[style]
    result = parse_tool_calls(serialise(cs))
    assert result.failure is None, str(result.failure)
    assert [(call.name, call.arguments) for call in result.calls] == cs
    assert result.format == fmt
    assert result.text == ""
    check(result)


@settings(max_examples=150, deadline=None)
@given(format_and_calls(), prose)
def test_reasoning_is_split_off_and_kept(case, thought):
    style, cs = case
    serialise, fmt, _ = NEW[style]
    result = parse_tool_calls(f"<think>{thought}</think>\n" + serialise(cs))
    assert [(call.name, call.arguments) for call in result.calls] == cs
    assert result.reasoning == thought.strip()
    assert result.format == fmt


@settings(max_examples=100, deadline=None)
@given(json_calls, st.sampled_from(sorted(SERIALISERS)), prose)
def test_old_formats_inside_reasoning_are_not_calls(cs, style, thought):
    serialise, _ = SERIALISERS[style]
    result = parse_tool_calls(f"<think>{thought} {serialise(cs, True)}</think>{thought}")
    assert result.calls == [] and result.failure is None
    assert result.text == thought.strip()


@settings(max_examples=100, deadline=None)
@given(py_calls, prose.filter(lambda s: "[" not in s))
def test_pythonic_after_prose_only_when_declared(cs, before):
    text = f"{before}\n{as_pythonic(cs)}"
    declared = parse_tool_calls(text, tool_format="pythonic")
    assert [(call.name, call.arguments) for call in declared.calls] == cs
    assert declared.text == before.strip()
    if before.strip():
        assert parse_tool_calls(text).calls == []
