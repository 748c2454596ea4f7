"""Calling tools (sync, async, context, nested models, cancellation), Tool basics, results."""

import enum
import threading
import time

import anyio
import pytest
from pydantic import BaseModel

from rolepool.core import ConfigError, RunContext, ToolError, ToolSpec
from rolepool.tools.results import format_result
from rolepool.tools.tool import Tool, tool


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Unit(enum.Enum):
    CM = "cm"
    M = "m"


class Point(BaseModel):
    x: int
    y: int = 0


def make_ctx(**extra) -> RunContext:
    return RunContext(run_id="run_1", agent="a", role="coder", call_id="call_1", extra=extra)


# ---- call -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sync_tool_runs_in_a_worker_thread():
    loop_thread = threading.get_ident()

    @tool
    def where(a: int, b: int = 10) -> dict:
        return {"sum": a + b, "other_thread": threading.get_ident() != loop_thread}

    assert await where.call({"a": 1}) == {"sum": 11, "other_thread": True}


@pytest.mark.anyio
async def test_async_tool_is_awaited():
    @tool
    async def echo(text: str) -> str:
        await anyio.sleep(0)
        return text.upper()

    assert await echo.call({"text": "hi"}) == "HI"


@pytest.mark.anyio
async def test_nested_models_and_enums_arrive_as_instances():
    seen = {}

    @tool
    def draw(points: list[Point], origin: Point, unit: Unit = Unit.CM) -> int:
        seen.update(points=points, origin=origin, unit=unit)
        return len(points)

    arguments = {"points": [{"x": 1, "y": 2}, {"x": 3}], "origin": {"x": 0}, "unit": "m"}
    assert draw.validate(arguments) == []
    assert await draw.call(arguments) == 2
    assert seen == {
        "points": [Point(x=1, y=2), Point(x=3, y=0)],
        "origin": Point(x=0, y=0),
        "unit": Unit.M,
    }
    assert isinstance(seen["origin"], Point)


@pytest.mark.anyio
async def test_context_is_passed_first():
    @tool
    def whoami(ctx: RunContext, greeting: str) -> str:
        return f"{greeting} {ctx.agent}/{ctx.role}/{ctx.call_id}"

    assert await whoami.call({"greeting": "hi"}, make_ctx()) == "hi a/coder/call_1"

    @tool
    async def async_whoami(ctx: RunContext) -> str:
        return ctx.run_id

    assert await async_whoami.call({}, make_ctx()) == "run_1"


@pytest.mark.anyio
async def test_context_tool_without_context_is_a_tool_error():
    @tool
    def needs(ctx: RunContext) -> str:
        return "never"

    with pytest.raises(ToolError) as info:
        await needs.call({})
    assert str(info.value) == "tool 'needs': needs a RunContext but none was given"


@pytest.mark.anyio
async def test_parameter_names_that_clash_with_pydantic_reach_the_function():
    @tool
    def query(schema: str, json: bool = False, _limit: int = 3, /) -> list:
        return [schema, json, _limit]

    assert await query.call({"schema": "public", "_limit": 7}) == ["public", False, 7]


@pytest.mark.anyio
async def test_schema_only_tool_cannot_be_called():
    spec_only = Tool.from_schema("lookup", "Look up.", {"type": "object"})
    with pytest.raises(ToolError) as info:
        await spec_only.call({})
    assert str(info.value) == "tool 'lookup': has no function to call (schema-only tool)"


@pytest.mark.anyio
async def test_raw_schema_tool_gets_arguments_as_keywords():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "opts": {"type": "object"}},
        "required": ["a"],
    }
    raw = Tool.from_schema("raw", "", schema, lambda a, opts=None: {"a": a, "opts": opts})
    assert await raw.call({"a": 1, "opts": {"k": [1]}}) == {"a": 1, "opts": {"k": [1]}}

    async def async_fn(a: int) -> int:
        return a * 2

    assert await Tool.from_schema("raw2", "", schema, async_fn).call({"a": 4}) == 8


@pytest.mark.anyio
async def test_exceptions_from_the_function_propagate_unchanged():
    error = KeyError("missing")

    @tool
    def broken() -> None:
        raise error

    with pytest.raises(KeyError) as info:
        await broken.call({})
    assert info.value is error


@pytest.mark.anyio
async def test_sync_tool_ignoring_cancellation_does_not_block_the_caller():
    release = threading.Event()

    @tool
    def stuck() -> str:
        release.wait(10)
        return "late"

    started = time.monotonic()
    with anyio.move_on_after(0.1) as scope:
        await stuck.call({})
    elapsed = time.monotonic() - started
    release.set()
    assert scope.cancelled_caught
    assert elapsed < 2


@pytest.mark.anyio
async def test_callable_object_with_async_call():
    class Adder:
        async def __call__(self, a: int) -> int:
            return a + 1

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert await Tool.from_schema("adder", "", schema, Adder()).call({"a": 1}) == 2


# ---- Tool basics ----------------------------------------------------------------------------------


def test_spec_allowed_for_and_repr():
    @tool(roles=["coder"], timeout=2)
    def run_code(source: str) -> str:
        """Run Python code."""
        return source

    spec = run_code.spec()
    assert spec == ToolSpec(
        name="run_code",
        description="Run Python code.",
        parameters={
            "type": "object",
            "properties": {"source": {"type": "string"}},
            "required": ["source"],
            "additionalProperties": False,
        },
    )
    spec.parameters["properties"].clear()
    assert run_code.parameters["properties"] == {"source": {"type": "string"}}
    assert run_code.allowed_for("coder") is True
    assert run_code.allowed_for("writer") is False
    assert Tool.from_schema("any", "", {"type": "object"}).allowed_for("writer") is True
    assert repr(run_code) == (
        "Tool(name='run_code', roles=['coder'], timeout=2.0, "
        "fn=test_spec_allowed_for_and_repr.<locals>.run_code)"
    )


def test_roles_given_as_a_string_is_one_role():
    assert Tool.from_schema("t", "", {"type": "object"}, roles="coder").roles == frozenset(
        {"coder"}
    )


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": ""}, "name"),
        ({"roles": []}, "tool 't'"),
        ({"timeout": 0}, "tool 't'"),
        ({"timeout": -1.0}, "tool 't'"),
        ({"timeout": "5"}, "tool 't'"),
        ({"fn": 42}, "tool 't'"),
    ],
)
def test_bad_tool_definitions_are_config_errors(kwargs, where):
    arguments = {"name": "t", "description": "", "parameters": {"type": "object"}, **kwargs}
    with pytest.raises(ConfigError) as info:
        Tool.from_schema(**arguments)
    assert info.value.where == where


def test_tool_keeps_its_own_copy_of_the_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    t = Tool.from_schema("t", "", schema)
    schema["properties"]["a"]["type"] = "string"
    assert t.validate({"a": 1}) == []


# ---- format_result --------------------------------------------------------------------------------


def test_format_result_by_type():
    assert format_result("plain") == "plain"
    assert format_result(Point(x=1)) == '{"x":1,"y":0}'
    assert format_result({"city": "Zürich", "n": [1, 2.5]}) == '{"city": "Zürich", "n": [1, 2.5]}'
    assert format_result([Point(x=1), {"p": Point(x=2, y=3)}]) == (
        '[{"x": 1, "y": 0}, {"p": {"x": 2, "y": 3}}]'
    )
    assert format_result(None) == "null"
    assert format_result(3) == "3"
    assert format_result(True) == "true"
    assert format_result((1, "a")) == '[1, "a"]'


def test_format_result_truncates_with_a_marker():
    assert format_result("x" * 20_000) == "x" * 20_000
    long = "ab" * 50
    assert format_result(long, max_chars=10) == (
        "ababababab\n…[truncated: 100 chars, showing first 10]"
    )
    assert format_result(list(range(5)), max_chars=4) == (
        "[0, \n…[truncated: 15 chars, showing first 4]"
    )
    assert format_result("y" * 123456).endswith("\n…[truncated: 123456 chars, showing first 20000]")
    with pytest.raises(ValueError):
        format_result("x", max_chars=-1)


def test_format_result_unserialisable_is_a_tool_error():
    with pytest.raises(ToolError) as info:
        format_result({"when": object()})
    assert str(info.value).startswith("result of type dict is not serialisable to JSON: ")
    with pytest.raises(ToolError) as info:
        format_result({1, 2})
    assert str(info.value).startswith("result of type set is not serialisable")
    loop: list = []
    loop.append(loop)
    with pytest.raises(ToolError):
        format_result(loop)
