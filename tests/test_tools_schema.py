"""JSON Schemas built from typed functions: types, docstrings, context parameter, bad signatures."""

import enum
from typing import Annotated, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from rolepool.core import ConfigError, RunContext
from rolepool.tools.schema import function_description, schema_from_function
from rolepool.tools.tool import Tool, tool
from rolepool.tools.validation import check_schema


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Point(BaseModel):
    """A point on the grid."""

    x: int
    y: int = 0


class Page(BaseModel):
    title: str  # a property *named* title must survive title stripping
    points: list[Point] = []


def schema_of(fn):
    schema, _model, _ctx = schema_from_function(fn)
    Draft202012Validator.check_schema(schema)
    check_schema(schema)
    return schema


def test_scalar_types_and_required():
    def f(s: str, i: int, x: float, b: bool = False):
        pass

    assert schema_of(f) == {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "x": {"type": "number"},
            "b": {"type": "boolean", "default": False},
        },
        "required": ["s", "i", "x"],
        "additionalProperties": False,
    }


def test_no_parameters_gives_empty_object():
    def f():
        pass

    assert schema_of(f) == {"type": "object", "properties": {}, "additionalProperties": False}


def test_enum_is_a_ref_into_defs_with_serialised_default():
    def f(color: Color = Color.GREEN):
        pass

    schema = schema_of(f)
    assert schema["properties"] == {"color": {"$ref": "#/$defs/Color", "default": "green"}}
    assert schema["$defs"] == {"Color": {"enum": ["red", "green"], "type": "string"}}
    assert "required" not in schema


def test_literal_becomes_enum_or_const():
    def f(mode: Literal["fast", "slow"], only: Literal["x"]):
        pass

    props = schema_of(f)["properties"]
    assert props["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert props["only"] == {"const": "x", "type": "string"}


def test_list_and_dict_types():
    def f(tags: list[str], weights: dict[str, float]):
        pass

    props = schema_of(f)["properties"]
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}


def test_nested_models_keep_defs_and_lose_generated_titles():
    def f(page: Page, extra: list[Point]):
        pass

    schema = schema_of(f)
    assert schema["properties"] == {
        "page": {"$ref": "#/$defs/Page"},
        "extra": {"type": "array", "items": {"$ref": "#/$defs/Point"}},
    }
    assert schema["$defs"]["Point"] == {
        "description": "A point on the grid.",
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
        "required": ["x"],
    }
    page = schema["$defs"]["Page"]
    assert page["properties"]["title"] == {"type": "string"}
    assert page["required"] == ["title"]
    assert "title" not in page
    assert schema["additionalProperties"] is False


def test_optional_with_default_none():
    def f(limit: int | None = None, name: str | None = "x"):
        pass

    schema = schema_of(f)
    assert schema["properties"] == {
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": "x"},
    }
    assert "required" not in schema


def test_optional_without_default_is_required_but_nullable():
    def f(limit: int | None):
        pass

    schema = schema_of(f)
    assert schema["required"] == ["limit"]
    assert schema["properties"]["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_annotated_field_constraints_and_field_default():
    def f(
        n: Annotated[int, Field(ge=1, le=10, description="how many")],
        word: Annotated[str, Field(min_length=2, max_length=5, pattern="^[a-z]+$")] = "ab",
        k: int = Field(3, ge=0),
    ):
        """Pick words.

        Args:
            n: docstring loses to Field.
            k: top k.
        """

    props = schema_of(f)["properties"]
    assert props["n"] == {"type": "integer", "minimum": 1, "maximum": 10, "description": "how many"}
    assert props["word"] == {
        "type": "string",
        "minLength": 2,
        "maxLength": 5,
        "pattern": "^[a-z]+$",
        "default": "ab",
    }
    assert props["k"] == {"type": "integer", "minimum": 0, "default": 3, "description": "top k."}
    assert schema_of(f)["required"] == ["n"]


def google_style(query: str, limit: int = 5) -> list[str]:
    """Search the index.

    Ranks by BM25 and returns titles.

    Args:
        query: Words to look for.
        limit (int): How many titles
            to return at most.

    Returns:
        The titles.
    """
    return []


def rest_style(query: str, limit: int = 5) -> list[str]:
    """Search the index.

    Ranks by BM25 and returns titles.

    :param query: Words to look for.
    :param int limit: How many titles to return at most.
    :returns: The titles.
    """
    return []


def numpy_style(query: str, limit: int = 5) -> list[str]:
    """Search the index.

    Ranks by BM25 and returns titles.

    Parameters
    ----------
    query : str
        Words to look for.
    limit : int
        How many titles to return at most.

    Returns
    -------
    list of str
    """
    return []


@pytest.mark.parametrize("fn", [google_style, rest_style, numpy_style])
def test_docstring_descriptions_in_every_style(fn):
    props = schema_of(fn)["properties"]
    assert props["query"]["description"] == "Words to look for."
    expected_limit = {
        google_style: "How many titles\nto return at most.",
    }.get(fn, "How many titles to return at most.")
    assert props["limit"]["description"] == expected_limit
    assert function_description(fn) == "Search the index.\n\nRanks by BM25 and returns titles."


def test_no_docstring_means_no_descriptions():
    def f(a: int):
        pass

    assert schema_of(f)["properties"] == {"a": {"type": "integer"}}
    assert function_description(f) == ""


def test_context_parameter_is_left_out():
    def f(ctx: RunContext, query: str):
        pass

    schema, model, takes_context = schema_from_function(f)
    assert takes_context is True
    assert list(schema["properties"]) == ["query"]
    assert schema["required"] == ["query"]
    assert [field.alias for field in model.model_fields.values()] == ["query"]


def test_without_context_takes_context_is_false():
    def f(query: str):
        pass

    assert schema_from_function(f)[2] is False


def test_parameter_names_that_clash_with_pydantic_still_work():
    def f(schema: str, json: int, model_config: bool, _hidden: float = 0.5):
        pass

    schema, model, _ = schema_from_function(f)
    assert list(schema["properties"]) == ["schema", "json", "model_config", "_hidden"]
    assert schema["required"] == ["schema", "json", "model_config"]
    parsed = model.model_validate({"schema": "s", "json": 1, "model_config": True})
    assert [getattr(parsed, k) for k in model.model_fields] == ["s", 1, True, 0.5]


def test_missing_annotation_names_the_parameter():
    def f(a: int, b):
        pass

    with pytest.raises(ConfigError) as info:
        schema_from_function(f)
    assert info.value.where == "parameter 'b' of f"
    assert "no type annotation" in str(info.value)


@pytest.mark.parametrize("star", ["args", "kwargs"])
def test_star_parameters_are_refused(star):
    def with_args(a: int, *args: int):
        pass

    def with_kwargs(a: int, **kwargs: int):
        pass

    fn = with_args if star == "args" else with_kwargs
    with pytest.raises(ConfigError) as info:
        schema_from_function(fn)
    assert info.value.where == f"parameter '{star}' of {fn.__name__}"


def test_context_not_first_is_refused():
    def f(a: int, ctx: RunContext):
        pass

    with pytest.raises(ConfigError) as info:
        schema_from_function(f)
    assert info.value.where == "parameter 'ctx' of f"
    assert "first parameter" in str(info.value)


def test_type_without_a_schema_names_the_parameter():
    class Opaque:
        pass

    def f(a: int, thing: Opaque):
        pass

    with pytest.raises(ConfigError) as info:
        schema_from_function(f)
    assert info.value.where == "parameter 'thing' of f"


def test_unresolvable_string_annotation_is_a_config_error():
    def f(a: "NoSuchType"):  # noqa: F821
        pass

    with pytest.raises(ConfigError) as info:
        schema_from_function(f)
    assert info.value.where == "f"
    assert "NoSuchType" in str(info.value)


def test_alias_in_field_default_is_refused():
    def f(a: int = Field(1, alias="b")):
        pass

    with pytest.raises(ConfigError) as info:
        schema_from_function(f)
    assert info.value.where == "parameter 'a' of f"


def test_tool_decorator_plain_and_with_options():
    @tool
    def add(a: int, b: int = 1) -> int:
        """Add two numbers.

        Args:
            a: first.
            b: second.
        """
        return a + b

    assert isinstance(add, Tool)
    assert add.name == "add"
    assert add.description == "Add two numbers."
    assert add.parameters["properties"]["a"] == {"type": "integer", "description": "first."}
    assert add.args_model is not None and add.takes_context is False
    assert add.roles is None and add.timeout is None

    @tool(name="math.mul", description="Multiply.", roles=["coder", "planner"], timeout=5)
    def mul(ctx: RunContext, a: int) -> int:
        """Ignored description."""
        return a

    assert mul.name == "math.mul"
    assert mul.description == "Multiply."
    assert mul.roles == frozenset({"coder", "planner"})
    assert mul.timeout == 5.0
    assert mul.takes_context is True
    assert list(mul.parameters["properties"]) == ["a"]


def test_tool_decorator_refuses_a_lambda_name():
    with pytest.raises(ConfigError) as info:
        tool(lambda x: x)
    assert info.value.where == "parameter 'x' of <lambda>"
    with pytest.raises(ConfigError) as info:
        tool(lambda: 1)
    assert info.value.where == "name"
