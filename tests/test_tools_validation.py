"""Argument validation: exact paths, every error at once, never a crash; schema checking."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

from rolepool.core import ConfigError
from rolepool.tools.tool import Tool, tool
from rolepool.tools.validation import (
    ValidationIssue,
    check_schema,
    json_path,
    validate_arguments,
)

ORDER = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "priority": {"enum": ["low", "high"]},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["name"],
            },
        },
        "note": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
    },
    "required": ["customer", "items"],
    "additionalProperties": False,
}


def test_issue_str():
    issue = ValidationIssue("$.items[0].name", "'abc' is not of type 'integer'")
    assert str(issue) == "$.items[0].name: 'abc' is not of type 'integer'"


def test_valid_arguments_give_no_issues():
    assert validate_arguments(ORDER, {"customer": "ada", "items": [{"name": "pen"}]}) == []


def test_every_error_is_reported_with_its_path_sorted():
    arguments = {
        "priority": "urgent",
        "items": [{"name": "pen", "qty": 1}, {"qty": "two"}],
        "colour": "red",
    }
    assert validate_arguments(ORDER, arguments) == [
        ValidationIssue("$", "'customer' is a required property"),
        ValidationIssue("$", "Additional properties are not allowed ('colour' was unexpected)"),
        ValidationIssue("$.items[1]", "'name' is a required property"),
        ValidationIssue("$.items[1].qty", "'two' is not of type 'integer'"),
        ValidationIssue("$.priority", "'urgent' is not one of ['low', 'high']"),
    ]


def test_wrong_type_at_top_level_property():
    issues = validate_arguments(ORDER, {"customer": 7, "items": []})
    assert issues == [ValidationIssue("$.customer", "7 is not of type 'string'")]


def test_array_indices_sort_numerically():
    schema = {"type": "object", "properties": {"v": {"type": "array", "items": {"type": "string"}}}}
    arguments = {"v": ["ok"] * 2 + [2] + ["ok"] * 7 + [10]}
    assert [i.path for i in validate_arguments(schema, arguments)] == ["$.v[2]", "$.v[10]"]


def test_any_of_failure_includes_the_closest_sub_error():
    issues = validate_arguments(ORDER, {"customer": "a", "items": [], "note": -1})
    assert issues == [
        ValidationIssue(
            "$.note",
            "-1 is not valid under any of the given schemas; closest match failed: "
            "-1 is less than the minimum of 0",
        )
    ]


def test_odd_property_names_are_quoted_in_paths():
    schema = {"type": "object", "properties": {"a b": {"type": "string"}}}
    assert validate_arguments(schema, {"a b": 1}) == [
        ValidationIssue("$['a b']", "1 is not of type 'string'")
    ]
    assert json_path(["items", 0, "a b", "it's"]) == "$.items[0]['a b']['it\\'s']"
    assert json_path([]) == "$"


@pytest.mark.parametrize(
    ("arguments", "kind"),
    [([1, 2], "array"), (None, "null"), ("{}", "string"), (3, "number"), (True, "boolean")],
)
def test_non_object_arguments_give_one_issue_at_root(arguments, kind):
    assert validate_arguments(ORDER, arguments) == [
        ValidationIssue("$", f"arguments must be a JSON object, got {kind}")
    ]


def test_non_string_keys_do_not_crash():
    schema = {"type": "object", "patternProperties": {"^a": {"type": "string"}}}
    assert validate_arguments(schema, {1: "x"}) == [
        ValidationIssue("$", "property names must be strings, got 1")
    ]


def test_editing_a_schema_after_use_is_seen():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert validate_arguments(schema, {"a": "x"}) != []
    schema["properties"]["a"]["type"] = "string"
    assert validate_arguments(schema, {"a": "x"}) == []


def test_huge_values_give_short_messages():
    issues = validate_arguments(ORDER, {"customer": ["x" * 10_000], "items": []})
    assert len(issues) == 1
    assert len(issues[0].message) == 500
    assert issues[0].message.endswith("…")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values | st.dictionaries(st.sampled_from(list(ORDER["properties"])), json_values))
def test_validation_never_raises(arguments):
    issues = validate_arguments(ORDER, arguments)
    assert all(isinstance(i, ValidationIssue) and i.path.startswith("$") for i in issues)
    if not isinstance(arguments, dict):
        assert len(issues) == 1 and issues[0].path == "$"


# ---- check_schema -------------------------------------------------------------------------------


def test_check_schema_accepts_a_valid_object_schema():
    check_schema(ORDER)
    check_schema({"type": "object"})


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ("not a dict", "must be a JSON Schema object, got str"),
        ({"type": "array"}, 'the top level must be {"type": "object", ...}, got type \'array\''),
        ({"properties": {}}, "got type None"),
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "at $.properties.a.type"),
        ({"type": "object", "properties": {"a": {"pattern": "("}}}, "is not a 'regex'"),
        ({"type": "object", "required": "a"}, "at $.required"),
        ({"type": "object", "default": {1, 2}}, "is not JSON-serialisable"),
        (
            {"type": "object", "properties": {"a": {"items": {"$ref": "#/$defs/Gone"}}}},
            "$ref '#/$defs/Gone' at $.properties.a.items cannot be resolved",
        ),
    ],
)
def test_check_schema_refuses(schema, fragment):
    with pytest.raises(ConfigError) as info:
        check_schema(schema)
    assert info.value.where == "parameters"
    assert fragment in str(info.value)


def test_check_schema_resolves_anchors_and_embedded_ids():
    schema = {
        "type": "object",
        "$defs": {
            "Name": {"$anchor": "name", "type": "string"},
            "Sub": {
                "$id": "https://example.com/sub",
                "$defs": {"N": {"type": "integer"}},
                "properties": {"n": {"$ref": "#/$defs/N"}},
            },
        },
        "properties": {"name": {"$ref": "#name"}, "sub": {"$ref": "https://example.com/sub"}},
    }
    check_schema(schema)
    assert validate_arguments(schema, {"name": 1, "sub": {"n": "x"}}) == [
        ValidationIssue("$.name", "1 is not of type 'string'"),
        ValidationIssue("$.sub.n", "'x' is not of type 'integer'"),
    ]


# ---- Tool.validate and raw-schema tools ---------------------------------------------------------


def test_from_schema_tool_validates_against_its_schema():
    search = Tool.from_schema("search", "Find things.", ORDER, roles=["search"])
    assert search.args_model is None and search.fn is None
    assert search.validate({"customer": "a", "items": [{"qty": 1.5}]}) == [
        ValidationIssue("$.items[0]", "'name' is a required property"),
        ValidationIssue("$.items[0].qty", "1.5 is not of type 'integer'"),
    ]
    assert search.validate("nope") == [
        ValidationIssue("$", "arguments must be a JSON object, got string")
    ]


def test_from_schema_with_invalid_schema_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        Tool.from_schema("bad", "", {"type": "object", "properties": {"a": {"type": 5}}})
    assert info.value.where == "tool 'bad' parameters"
    with pytest.raises(ConfigError) as info:
        Tool.from_schema("bfcl_style", "", {"type": "dict", "properties": {}})
    assert "not a valid JSON Schema" in str(info.value)


class Even(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def must_be_even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even")
        return value


def test_tool_validate_reports_what_only_pydantic_checks():
    @tool
    def halve(numbers: list[Even]) -> int:
        return 0

    assert halve.validate({"numbers": [{"n": 2}, {"n": 3}]}) == [
        ValidationIssue("$.numbers[1].n", "Value error, must be even")
    ]
    # the schema check comes first and reports everything it finds
    assert halve.validate({"numbers": [{"n": "x"}], "more": 1}) == [
        ValidationIssue("$", "Additional properties are not allowed ('more' was unexpected)"),
        ValidationIssue("$.numbers[0].n", "'x' is not of type 'integer'"),
    ]
    assert halve.validate({"numbers": [{"n": 4}]}) == []


def test_float_nan_and_infinity_do_not_crash():
    schema = {"type": "object", "properties": {"x": {"type": "integer", "multipleOf": 3}}}
    for value in (math.nan, math.inf, -math.inf):
        issues = validate_arguments(schema, {"x": value})
        assert ValidationIssue("$.x", f"{value!r} is not of type 'integer'") in issues
        assert {i.path for i in issues} == {"$.x"}
