"""Tool-call parsing: every format models emit, final answers, and broken or hostile text."""

from __future__ import annotations

import json
import random
import string

import pytest

from rolepool.tools.parsing import ParseFailure, ParseResult, parse_tool_calls


def calls_of(result: ParseResult) -> list[tuple[str, dict]]:
    assert result.failure is None, str(result.failure)
    return [(call.name, call.arguments) for call in result.calls]


def failure_of(result: ParseResult) -> ParseFailure:
    assert result.failure is not None, result
    assert result.calls == []
    assert not result.is_final
    return result.failure


WEATHER = ("get_weather", {"city": "Paris"})


class TestBareJson:
    def test_single_object(self):
        result = parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Paris"}}')
        assert calls_of(result) == [WEATHER]
        assert result.format == "json"
        assert result.text == ""
        assert not result.is_final
        assert result.calls[0].id.startswith("call_")

    @pytest.mark.parametrize(
        "text",
        [
            '\n\n  {"name": "get_weather", "arguments": {"city": "Paris"}}  \n',
            '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
            '```\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\n',
        ],
    )
    def test_whitespace_and_code_fences(self, text):
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.text == ""

    def test_array_is_parallel_calls(self):
        text = '[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]'
        result = parse_tool_calls(text)
        assert calls_of(result) == [("a", {"x": 1}), ("b", {})]
        assert len({call.id for call in result.calls}) == 2

    def test_arguments_as_json_string(self):
        result = parse_tool_calls(
            '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'
        )
        assert calls_of(result) == [WEATHER]

    def test_openai_function_wrapper(self):
        text = json.dumps(
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
            }
        )
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.calls[0].id == "call_abc"
        assert result.format == "json"

    def test_wrapper_array_and_missing_arguments(self):
        text = '[{"type": "function", "function": {"name": "now"}}, {"function": {"name": "b", "arguments": {"q": "x"}}}]'
        assert calls_of(parse_tool_calls(text)) == [("now", {}), ("b", {"q": "x"})]

    def test_ids_from_json_and_duplicates_replaced(self):
        text = '[{"id": "c1", "name": "a", "arguments": {}}, {"id": "c1", "name": "b", "arguments": {}}, {"id": "", "name": "c", "arguments": {}}]'
        ids = [call.id for call in parse_tool_calls(text).calls]
        assert ids[0] == "c1"
        assert ids[1] != "c1" and ids[1].startswith("call_")
        assert ids[2].startswith("call_")

    def test_non_string_id_is_replaced(self):
        result = parse_tool_calls('{"id": 7, "name": "a", "arguments": {}}')
        assert result.calls[0].id.startswith("call_")

    def test_prose_before_and_after(self):
        text = 'Sure, calling it now: {"name": "get_weather", "arguments": {"city": "Paris"}} Back soon.'
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.text == "Sure, calling it now:\nBack soon."

    def test_prose_and_fence(self):
        text = 'Let me look.\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\nDone.'
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.text == "Let me look.\nDone."

    def test_nested_braces_in_strings(self):
        code = "def f(): return {'a': '}'} # {{{ \" ]]"
        text = "Here: " + json.dumps({"name": "run", "arguments": {"code": code}}) + " {"
        result = parse_tool_calls(text)
        assert calls_of(result) == [("run", {"code": code})]
        assert result.text == "Here:\n{"

    def test_markers_inside_argument_strings_are_data(self):
        args = {"s": "<tool_call> [TOOL_CALLS] <|python_tag|> </tool_call>"}
        result = parse_tool_calls(json.dumps({"name": "echo", "arguments": args}))
        assert calls_of(result) == [("echo", args)]
        assert result.format == "json"

    def test_raw_newlines_inside_strings_are_accepted(self):
        result = parse_tool_calls('{"name": "write", "arguments": {"text": "a\nb\tc"}}')
        assert calls_of(result) == [("write", {"text": "a\nb\tc"})]


class TestHermes:
    def test_single_block_with_prose(self):
        text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\nOne moment.'
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.format == "hermes"
        assert result.text == "Let me check.\nOne moment."

    def test_parallel_blocks(self):
        text = (
            '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
            '<tool_call>\n{"name": "b", "arguments": {"y": [1, 2]}}\n</tool_call>'
        )
        result = parse_tool_calls(text)
        assert calls_of(result) == [("a", {"x": 1}), ("b", {"y": [1, 2]})]
        assert result.text == ""

    def test_missing_closing_tag_at_end(self):
        result = parse_tool_calls(
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        )
        assert calls_of(result) == [WEATHER]

    def test_missing_closing_tag_before_next_block(self):
        text = '<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b", "arguments": {}}</tool_call>'
        assert calls_of(parse_tool_calls(text)) == [("a", {}), ("b", {})]

    def test_end_of_turn_token_after_block(self):
        text = '<tool_call>{"name": "a", "arguments": {}}</tool_call><|im_end|>'
        result = parse_tool_calls(text)
        assert calls_of(result) == [("a", {})]
        assert result.text == ""

    def test_closing_tag_inside_string(self):
        args = {"html": '</tool_call>{"}', "n": None}
        text = "<tool_call>" + json.dumps({"name": "save", "arguments": args}) + "</tool_call>"
        assert calls_of(parse_tool_calls(text)) == [("save", args)]

    def test_parameters_missing_arguments_and_array(self):
        text = (
            '<tool_call>{"name": "a", "parameters": {"x": 1}}</tool_call>'
            '<tool_call>{"name": "now"}</tool_call>'
            '<tool_call>[{"name": "b", "arguments": {}}, {"name": "c", "arguments": "{}"}]</tool_call>'
        )
        assert calls_of(parse_tool_calls(text)) == [
            ("a", {"x": 1}),
            ("now", {}),
            ("b", {}),
            ("c", {}),
        ]

    def test_unterminated_json_closed_by_tag(self):
        text = 'ok\n<tool_call>\n{"name": "a", "arguments": {"x": 1}\n</tool_call>'
        failure = failure_of(parse_tool_calls(text))
        assert failure.format == "hermes"
        assert failure.message == (
            "unterminated JSON object (a closing bracket is missing) in <tool_call> block"
        )
        assert failure.position == text.index("</tool_call>")
        assert (failure.line, failure.column) == (4, 1)
        assert "</tool_call>" in failure.snippet

    def test_unterminated_block_at_end_of_text(self):
        text = '<tool_call>{"name": "a", "arguments": {"x": "abc'
        failure = failure_of(parse_tool_calls(text))
        assert failure.format == "hermes"
        assert failure.message == "unterminated string in JSON in <tool_call> block"
        assert failure.position == text.index('"abc')

    def test_block_without_json(self):
        text = '<tool_call>get_weather(city="Paris")</tool_call>'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == "expected a JSON tool call object in <tool_call> block"
        assert failure.position == len("<tool_call>")

    def test_text_after_json_in_block(self):
        text = '<tool_call>{"name": "a", "arguments": {}}}</tool_call>'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message.startswith("unexpected text after the JSON in <tool_call> block")
        assert failure.position == text.index("}</tool_call>")

    def test_unknown_key_and_missing_name(self):
        failure = failure_of(
            parse_tool_calls('<tool_call>{"name": "a", "arguments": {}, "why": 1}</tool_call>')
        )
        assert failure.message.startswith("unexpected key 'why' in tool call")
        failure = failure_of(parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>'))
        assert failure.message == 'tool call has no "name" in <tool_call> block'
        assert failure.position == len("<tool_call>")

    def test_empty_list(self):
        failure = failure_of(parse_tool_calls("<tool_call>[]</tool_call>"))
        assert failure.message == "empty list of tool calls in <tool_call> block"


class TestLlama3:
    def test_parameters_object(self):
        result = parse_tool_calls('{"name": "get_weather", "parameters": {"city": "Paris"}}')
        assert calls_of(result) == [WEATHER]
        assert result.format == "llama3"

    def test_type_function_variant(self):
        text = '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}'
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.format == "llama3"

    def test_python_tag(self):
        text = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>'
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.format == "llama3"
        assert result.text == ""

    def test_python_tag_semicolon_separated(self):
        text = (
            '<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}};'
        )
        assert calls_of(parse_tool_calls(text)) == [("a", {"x": 1}), ("b", {})]

    def test_bare_semicolon_separated(self):
        text = '{"name": "a", "parameters": {"x": 1}};\n{"name": "b", "parameters": {}}'
        result = parse_tool_calls(text)
        assert calls_of(result) == [("a", {"x": 1}), ("b", {})]
        assert result.format == "llama3"
        assert result.text == ""

    def test_python_tag_with_code_is_a_failure(self):
        text = '<|python_tag|>print("hi")'
        failure = failure_of(parse_tool_calls(text))
        assert failure.format == "llama3"
        assert failure.message == "expected a JSON tool call object after <|python_tag|>"
        assert failure.position == len("<|python_tag|>")

    def test_python_tag_unterminated_before_semicolon(self):
        text = '<|python_tag|>{"name": "a", "parameters": {"x": 1}; {"name": "b", "parameters": {}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message.startswith("unterminated JSON object")
        assert failure.position == text.index(";")


class TestMistral:
    def test_list_form(self):
        text = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]</s>'
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER]
        assert result.calls[0].id == "a1b2c3d4e"
        assert result.format == "mistral"
        assert result.text == ""

    def test_list_form_parallel_with_prose(self):
        text = 'Checking both.\n[TOOL_CALLS] [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": true}}]'
        result = parse_tool_calls(text)
        assert calls_of(result) == [("a", {}), ("b", {"k": True})]
        assert result.text == "Checking both."

    def test_single_object_form(self):
        text = '[TOOL_CALLS]{"name": "get_weather", "arguments": {"city": "Paris"}}'
        assert calls_of(parse_tool_calls(text)) == [WEATHER]

    def test_named_form_repeated(self):
        text = (
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[CALL_ID]x9Y[ARGS]{}'
        )
        result = parse_tool_calls(text)
        assert calls_of(result) == [WEATHER, ("get_time", {})]
        assert result.calls[1].id == "x9Y"
        assert result.format == "mistral"

    def test_named_form_args_contain_marker(self):
        args = {"s": "[TOOL_CALLS]x[ARGS]{}"}
        text = "[TOOL_CALLS]echo[ARGS]" + json.dumps(args)
        assert calls_of(parse_tool_calls(text)) == [("echo", args)]

    def test_named_form_without_args(self):
        failure = failure_of(parse_tool_calls("[TOOL_CALLS]get_weather Paris"))
        assert failure.format == "mistral"
        assert failure.position == len("[TOOL_CALLS]")

    def test_named_form_broken_args(self):
        text = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"[TOOL_CALLS]x[ARGS]{}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == (
            "unterminated JSON object (a closing bracket is missing) in the [ARGS] of 'get_weather'"
        )
        assert failure.position == text.index("[TOOL_CALLS]x")

    def test_named_form_args_not_object(self):
        failure = failure_of(parse_tool_calls('[TOOL_CALLS]f[ARGS]["x"]'))
        assert failure.message == "expected a JSON object in the [ARGS] of 'f'"


class TestFinalAnswers:
    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   \n ",
            "Paris is sunny today.",
            "Use a set like {1, 2} or a dict {'a': 1}; f(x) = {x | x > 0}.",
            'The answer is {"answer": 42} and [1, 2, 3].',
            '{"answer": 42}',
            '```json\n{"result": {"name": "Alice", "age": 3}}\n```',
            '{"name": "Alice", "age": 3}',
            '{"name": "get_time"}',
            '{"name": "Alice", "age": 3',
            '{"plan": [{"name": "search", "arguments": {"q": "x"}}]}',
            '[{"name": "a", "arguments": {}}, {"other": 1}]',
            '[{"name": "a", "arguments": {}}, 5]',
            "See [the docs](https://x.y) and [1] or [true, false, null].",
            "function f() { return [a[0], {b: 2}]; } // }",
            '{"a": 1, "a": 2} is not a call, and neither is {"x": NaN}',
            "</tool_call> stray closing tag",
            "{" * 500 + "[" * 500,
        ],
    )
    def test_final(self, text):
        result = parse_tool_calls(text)
        assert result.is_final
        assert result.calls == [] and result.failure is None
        assert result.format == "none"
        assert result.text == text.strip()

    def test_deep_brackets_in_prose(self):
        text = "nested: " + "[" * 10_000 + "]" * 10_000 + ' then {"name": "a", "arguments": {}}'
        result = parse_tool_calls(text)
        assert result.is_final  # past deep junk only format markers are looked for

    def test_call_shaped_json_after_non_call_json(self):
        text = 'Data: {"a": [1, {"b": 2}]} then {"name": "f", "arguments": {"q": "{"}}'
        result = parse_tool_calls(text)
        assert calls_of(result) == [("f", {"q": "{"})]
        assert result.text == 'Data: {"a": [1, {"b": 2}]} then'

    def test_prose_brace_swallowing_a_call(self):
        text = '{ "so: {"name": "f", "arguments": {"x": 1}}'
        assert calls_of(parse_tool_calls(text)) == [("f", {"x": 1})]


class TestMalformedCalls:
    def test_unterminated_bare_json(self):
        text = 'Calling:\n{"name": "f", "arguments": {"x": 1}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.format == "json"
        assert failure.message == (
            "unterminated JSON object (a closing bracket is missing) in tool call"
        )
        assert failure.position == len(text)
        assert (failure.line, failure.column) == (2, 36)

    def test_unterminated_llama_json_is_llama3(self):
        failure = failure_of(parse_tool_calls('{"name": "f", "parameters": {"x": '))
        assert failure.format == "llama3"

    def test_single_quotes(self):
        text = '{"name": "f", "arguments": {\'x\': 1}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == (
            "invalid JSON: expecting property name enclosed in double quotes in tool call"
        )
        assert failure.position == text.index("'")
        assert failure.column == failure.position + 1

    def test_missing_comma(self):
        text = '{"name": "f" "arguments": {}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == "invalid JSON: expecting ',' delimiter in tool call"
        assert failure.position == text.index('"arguments"')

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ('{"name": 5, "arguments": {}}', '"name" must be a non-empty string, got 5'),
            ('{"name": "", "arguments": {}}', '"name" must be a non-empty string, got ""'),
            ('{"name": "  ", "arguments": {}}', '"name" must be a non-empty string, got "  "'),
            ('{"name": null, "arguments": {}}', '"name" must be a non-empty string, got null'),
            ('{"name": ["f"], "arguments": {}}', '"name" must be a non-empty string, got ["f"]'),
            ('{"name": "f", "arguments": [1]}', '"arguments" must be a JSON object, got an array'),
            ('{"name": "f", "arguments": 3}', '"arguments" must be a JSON object, got a number'),
            ('{"name": "f", "arguments": null}', '"arguments" must be a JSON object, got null'),
            (
                '{"name": "f", "arguments": true}',
                '"arguments" must be a JSON object, got a boolean',
            ),
            ('{"name": "f", "arguments": "[1]"}', '"arguments" is a string but not a JSON object'),
            (
                '{"name": "f", "arguments": "city=Paris"}',
                '"arguments" is a string but not a JSON object',
            ),
            (
                '{"name": "f", "arguments": "{\\"a\\": 1"}',
                '"arguments" string is not valid JSON (unterminated JSON object (a closing bracket'
                " is missing))",
            ),
            (
                '{"name": "f", "arguments": "{} x"}',
                '"arguments" string has text after its JSON object',
            ),
            (
                '{"type": "tool", "name": "f", "arguments": {}}',
                '"type" must be "function", got "tool"',
            ),
            (
                '{"function": {"name": "f", "arguments": {}, "x": 1}}',
                "unexpected key 'x' beside or inside \"function\"",
            ),
        ],
    )
    def test_wrong_types(self, text, message):
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == f"{message} in tool call"
        assert failure.position == 0
        assert failure.format == "json"

    def test_arguments_and_parameters(self):
        failure = failure_of(parse_tool_calls('{"name": "f", "arguments": {}, "parameters": {}}'))
        assert failure.message == 'tool call has both "arguments" and "parameters" in tool call'
        assert failure.format == "llama3"

    def test_function_must_be_an_object(self):
        text = '{"function": "f", "arguments": {}}'
        assert parse_tool_calls(text).is_final  # not call-shaped without a marker
        failure = failure_of(parse_tool_calls(f"<tool_call>{text}</tool_call>"))
        assert failure.message == (
            '"function" must be an object with "name" and "arguments", got a string'
            " in <tool_call> block"
        )

    def test_duplicate_keys_top_level(self):
        text = '{"name": "a", "name": "b", "arguments": {}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message.startswith("duplicate key 'name' in JSON object")
        assert failure.position == text.index('"name": "b"')

    def test_duplicate_keys_nested_and_escaped(self):
        text = '{"name": "f",\n "arguments": {"x": {"k": 1, "\\u006b": 2}}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message.startswith("duplicate key 'k'")
        assert failure.position == text.index('"\\u006b"')
        assert failure.line == 2

    def test_same_key_in_sibling_objects_is_fine(self):
        text = (
            '{"name": "f", "arguments": {"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 3}, {"k": 4}]}}'
        )
        assert calls_of(parse_tool_calls(text))[0][1]["c"] == [{"k": 3}, {"k": 4}]

    def test_duplicate_keys_in_arguments_string(self):
        text = json.dumps({"name": "f", "arguments": '{"a": 1, "a": 2}'})
        failure = failure_of(parse_tool_calls(text))
        assert failure.message.startswith("\"arguments\" string: duplicate key 'a'")

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    def test_nan_and_infinity(self, constant):
        text = f'{{"name": "f", "arguments": {{"x": [1, {constant}]}}}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == f"{constant} is not valid JSON in tool call"
        assert failure.position == text.index(constant)

    def test_float_overflow(self):
        text = '{"name": "f", "arguments": {"x": 1e999}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == "number is out of range for a float in tool call"
        assert failure.position == text.index("1e999")

    def test_huge_integer(self):
        text = '{"name": "f", "arguments": {"x": ' + "9" * 100_000 + "}}"
        failure = failure_of(parse_tool_calls(text))
        assert (
            failure.message == "integer with 100000 digits is too large (at most 4300) in tool call"
        )
        assert failure.position == text.index("9")

    def test_largest_allowed_integer(self):
        text = '{"name": "f", "arguments": {"x": -' + "9" * 4300 + "}}"
        assert calls_of(parse_tool_calls(text))[0][1]["x"] == -int("9" * 4300)

    def test_deep_nesting(self):
        depth = 10_000
        text = '{"name": "f", "arguments": ' + '{"a":' * depth + "1" + "}" * depth + "}"
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == "JSON nested deeper than 64 levels in tool call"
        # the top-level object is level 1, arguments level 2: level 65 opens 63 objects later
        assert failure.position == len('{"name": "f", "arguments": ') + 63 * len('{"a":')

    def test_deep_nesting_in_hermes_block(self):
        text = '<tool_call>{"name": "f", "arguments": {"a": ' + "[" * 10_000
        failure = failure_of(parse_tool_calls(text))
        assert failure.format == "hermes"
        assert failure.message == "JSON nested deeper than 64 levels in <tool_call> block"

    def test_depth_limit_is_exact(self):
        # the call object is level 1 and its arguments level 2, so 62 arrays inside reach 64
        ok = '{"name": "f", "arguments": {"a": ' + "[" * 62 + "]" * 62 + "}}"
        assert parse_tool_calls(ok).calls
        too_deep = '{"name": "f", "arguments": {"a": ' + "[" * 63 + "]" * 63 + "}}"
        failure = failure_of(parse_tool_calls(too_deep))
        assert failure.message == "JSON nested deeper than 64 levels in tool call"
        assert failure.position == too_deep.rindex("[")

    @pytest.mark.parametrize(
        "value", ['"\\ud800"', '"\\udfff x"', '"a\\ud83d"', '"\\udc00\\ud800"']
    )
    def test_lone_surrogate_escapes(self, value):
        text = '{"name": "f", "arguments": {"s": ' + value + "}}"
        failure = failure_of(parse_tool_calls(text))
        assert (
            failure.message
            == "JSON string contains an unpaired surrogate (invalid unicode) in tool call"
        )
        assert failure.position == text.index(value)

    def test_surrogate_pair_escape_is_fine(self):
        result = parse_tool_calls('{"name": "f", "arguments": {"s": "\\ud83d\\ude00"}}')
        assert calls_of(result) == [("f", {"s": "\U0001f600"})]

    def test_raw_lone_surrogate_in_key(self):
        text = '{"name": "f", "arguments": {"\ud800": 1}}'
        failure = failure_of(parse_tool_calls(text))
        assert "unpaired surrogate" in failure.message
        assert failure.position == text.index('"\ud800"')

    def test_invalid_unicode_escape(self):
        text = '{"name": "f", "arguments": {"s": "\\uZZZZ"}}'
        failure = failure_of(parse_tool_calls(text))
        assert failure.message == "invalid JSON: invalid \\uXXXX escape in tool call"
        assert failure.position == text.index("\\u") + 1  # json points at the "u"


class TestLimits:
    def test_input_over_max_chars_fails_fast(self):
        text = '{"name": "f", "arguments": {}}' + " " * 100
        result = parse_tool_calls(text, max_chars=50)
        failure = failure_of(result)
        assert failure.message == f"output is {len(text)} characters long, over the limit of 50"
        assert failure.position is None and failure.line is None and failure.format is None
        assert result.format == "none"
        assert str(failure).startswith("output is")

    def test_default_limit(self):
        assert parse_tool_calls("x" * 1_000_001).failure is not None
        assert parse_tool_calls("x" * 1_000_000).is_final

    def test_not_a_string(self):
        failure = failure_of(parse_tool_calls(None))  # type: ignore[arg-type]
        assert failure.message == "model output must be text, got NoneType"

    @pytest.mark.parametrize(
        "text",
        [
            "".join(random.Random(1).choices(string.printable, k=1_000_000)),
            "{" * 1_000_000,
            "[" * 1_000_000,
            "[1" * 500_000,
            '{"name":' * 125_000,
            '{"name":1}' * 100_000,
            '{ "x' * 250_000,
            "[" * 900 + '"' + "a" * 999_000,
            "<tool_call>" * 90_000,
            '{"name": "f", "arguments": {"x": "' + "\\" * 999_000,
        ],
        ids=[
            "random",
            "braces",
            "brackets",
            "list-junk",
            "names",
            "non-calls",
            "quotes",
            "deep-string",
            "tags",
            "backslashes",
        ],
    )
    def test_huge_garbage_terminates(self, text):
        result = parse_tool_calls(text)
        assert result.calls == []
        assert result.is_final or result.failure is not None

    def test_many_parallel_calls(self):
        text = "\n".join(
            f'<tool_call>{{"name": "f{i}", "arguments": {{"i": {i}}}}}</tool_call>'
            for i in range(2000)
        )
        result = parse_tool_calls(text)
        assert [call.arguments["i"] for call in result.calls] == list(range(2000))
        assert len({call.id for call in result.calls}) == 2000

    def test_large_valid_call(self):
        args = {"content": "x" * 500_000, "rows": list(range(20_000))}
        result = parse_tool_calls(json.dumps({"name": "write", "arguments": args}))
        assert calls_of(result) == [("write", args)]


class TestFailureText:
    def test_str_with_position(self):
        failure = ParseFailure("unterminated JSON object", 30, 3, 14, "hermes", '{"a": 1')
        assert (
            str(failure) == "line 3, column 14 (hermes): unterminated JSON object near '{\"a\": 1'"
        )

    def test_str_without_position(self):
        assert str(ParseFailure("too long")) == "too long"
        assert str(ParseFailure("bad", format="json")) == "(json): bad"

    def test_snippet_is_bounded(self):
        text = "x" * 200 + '<tool_call>{"name": 1}</tool_call>' + "y" * 200
        failure = failure_of(parse_tool_calls(text))
        assert len(failure.snippet) <= 80
        assert failure.position is not None
        assert failure.snippet in text

    def test_failure_keeps_whole_output_as_text(self):
        text = ' Thinking...\n<tool_call>{"name": 1}</tool_call> '
        assert parse_tool_calls(text).text == text.strip()
