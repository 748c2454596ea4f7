"""The tool-call formats of rolepool.tools.formats on the texts their models emit, and detection."""

from __future__ import annotations

import pytest

from rolepool.tools.formats import detect_tool_format
from rolepool.tools.parsing import parse_tool_calls

WEATHER = ("get_weather", {"city": "Paris", "days": 3})

EXAMPLES = {
    "pythonic": '[get_weather(city="Paris", days=3)]<|eot_id|>',
    "qwen_xml": (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
    ),
    "harmony": (
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"city": "Paris", "days": 3}<|call|>'
    ),
    "granite": '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]',
    "deepseek": (
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris", "days": 3}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    ),
}


@pytest.mark.parametrize("fmt", sorted(EXAMPLES))
def test_each_format_reads_its_models_text(fmt):
    result = parse_tool_calls(EXAMPLES[fmt])
    assert result.failure is None, str(result.failure)
    assert [(c.name, c.arguments) for c in result.calls] == [WEATHER]
    assert result.format == fmt and result.text == ""


@pytest.mark.parametrize(
    ("text", "fmt", "words"),
    [
        ("[get_weather(1)]", "pythonic", "by keyword"),
        ("[get_weather(city=open('x'))]", "pythonic", "not a literal"),
        ("[get_weather(city='a', city='b')]", "pythonic", "twice"),
        ("<function=f>\n<parameter=x>\n1\n", "qwen_xml", "not closed"),
        ("<|channel|>commentary to=functions.f <|message|>{bad}", "harmony", "f"),
        ("<|tool_call|>{}", "granite", "name"),
        ("<｜tool▁calls▁begin｜>nothing", "deepseek", "expected"),
    ],
)
def test_broken_attempts_say_where_and_why(text, fmt, words):
    result = parse_tool_calls(text)
    assert result.calls == [] and result.failure is not None
    assert result.format == fmt and result.failure.format == fmt
    assert words in str(result.failure)


def test_qwen_xml_values_are_json_or_text():
    text = (
        "<function=f><parameter=a>\n[1, 2]\n</parameter><parameter=b>\nhello world\n</parameter>"
        '<parameter=c>\n"7"\n</parameter><parameter=d>\nNaN\n</parameter></function>'
    )
    (call,) = parse_tool_calls(text).calls
    assert call.arguments == {"a": [1, 2], "b": "hello world", "c": "7", "d": "NaN"}


def test_think_is_reasoning_and_an_unclosed_think_holds_no_call():
    result = parse_tool_calls("<think>call f?</think>The answer is 4.")
    assert (result.reasoning, result.text, result.calls) == ("call f?", "The answer is 4.", [])
    opened_in_prompt = parse_tool_calls(
        'plan first</think><|tool_call|>[{"name": "f", "arguments": {}}]'
    )
    assert opened_in_prompt.reasoning == "plan first" and opened_in_prompt.calls[0].name == "f"
    cut = parse_tool_calls('<think>maybe {"name": "f", "arguments": {}}')
    assert cut.calls == [] and cut.text == "" and cut.reasoning.startswith("maybe")


def test_harmony_analysis_channel_is_reasoning():
    text = (
        "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant"
        "<|channel|>commentary to=functions.get_weather json<|message|>{}<|call|>"
    )
    result = parse_tool_calls(text)
    assert result.reasoning == "Need weather." and result.calls[0].name == "get_weather"


def test_bracketed_prose_is_not_pythonic():
    for text in ("[see the docs](http://x)", "[1, 2, 3]", "Use [f(x=1)] like this."):
        assert parse_tool_calls(text).is_final


@pytest.mark.parametrize(
    ("template", "tokens", "fmt"),
    [
        ("{{ '<|start|>assistant to=functions.' + name }}", [], "harmony"),
        ("", ["<｜tool▁calls▁begin｜>"], "deepseek"),
        ("{{ '<|tool_call|>' }}", [], "granite"),
        ("<tool_call>\n<function={{ name }}>\n<parameter=", ["<tool_call>"], "qwen_xml"),
        ("[func_name1(params_name1=params_value1)]", [], "pythonic"),
        ("", ["[TOOL_CALLS]"], "mistral"),
        ("<tool_call>{{ tool_call | tojson }}</tool_call>", [], "hermes"),
        ("{{ '<|python_tag|>' }}", [], "llama3"),
        ("{{ messages }}", [], "json"),
        (None, [], "json"),
    ],
)
def test_format_detected_from_template_and_tokens(template, tokens, fmt):
    assert detect_tool_format(template, tokens) == fmt
