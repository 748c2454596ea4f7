"""`Tool`: a function the model may call, with the JSON Schema it has to satisfy.

Two ways in: `@tool` on a typed function (schema and argument model from the type hints), or
`Tool.from_schema` with a hand-written JSON Schema (eval suites bring their own definitions and may
have no function at all).
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

import anyio.to_thread
import pydantic
from pydantic import BaseModel

from rolepool.core import ConfigError, RunContext, ToolError, ToolSpec
from rolepool.tools.schema import function_description, schema_from_function
from rolepool.tools.validation import ValidationIssue, check_schema, json_path, validate_arguments

F = TypeVar("F", bound=Callable[..., Any])

# What OpenAI-compatible servers and chat templates accept as a function name.
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")


class Tool:
    """A callable tool: name, description, JSON Schema of the arguments, and the function.

    `roles=None` lets every role use it; `timeout=None` leaves the limit to the run loop.
    `ends_run=True` makes a successful call the agent's final answer (its result is the output):
    models trained to answer through a `finish` tool end their run that way.
    `needs_approval=True` pauses the run before each call until the run's approver allows or
    refuses it (a refused call is never executed; the model is told so).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] | None
    roles: frozenset[str] | None
    timeout: float | None
    ends_run: bool
    needs_approval: bool
    takes_context: bool
    args_model: type[BaseModel] | None
    server: str | None = None
    """The MCP server a tool comes from (named in its events and spans); None for Python tools."""
    nests_agents: bool = False
    """The call runs agents of the same run (a workflow step, `assign`). It takes no tool slot
    (`Limits.max_parallel_tools`), so the calls of the agents it runs can take them; such calls
    are bounded by the workflow's own limits instead (`max_steps`, `concurrency`)."""

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        fn: Callable[..., Any] | None = None,
        *,
        roles: Iterable[str] | None = None,
        timeout: float | None = None,
        ends_run: bool = False,
        takes_context: bool = False,
        args_model: type[BaseModel] | None = None,
        needs_approval: bool = False,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"tool name {name!r} must be 1-64 characters of letters, digits, '_', '.' or '-'",
                where="name",
            )
        check_schema(parameters, where=f"tool {name!r} parameters")
        if fn is not None and not callable(fn):
            message = f"fn must be callable, got {type(fn).__name__}"
            raise ConfigError(message, where=f"tool {name!r}")
        self.name = name
        self.description = description or ""
        self.parameters = copy.deepcopy(parameters)
        self.fn = fn
        self.roles = _roles(roles, name)
        self.timeout = _timeout(timeout, name)
        self.ends_run = ends_run
        self.needs_approval = bool(needs_approval)
        self.takes_context = takes_context
        self.args_model = args_model
        self._positional_only = _positional_only(fn, takes_context) if args_model else 0

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: dict[str, Any],
        fn: Callable[..., Any] | None = None,
        *,
        roles: Iterable[str] | None = None,
        timeout: float | None = None,
        ends_run: bool = False,
        needs_approval: bool = False,
    ) -> Tool:
        """A tool from a hand-written JSON Schema; `fn`, if given, is called with the arguments
        as keyword arguments, exactly as the model sent them."""
        return cls(
            name,
            description,
            parameters,
            fn,
            roles=roles,
            timeout=timeout,
            ends_run=ends_run,
            needs_approval=needs_approval,
        )

    def replace(self, **changes: Any) -> Tool:
        """A copy with some attributes changed (`needs_approval=True`, `fn=...`, `roles=...`):
        the built-in tools are shared module-level objects, so a run adjusts a copy of them."""
        clone = copy.copy(self)
        for key, value in changes.items():
            if key not in {"fn", "roles", "timeout", "ends_run", "needs_approval", "description"}:
                raise ConfigError(f"cannot replace {key!r}", where=f"tool {self.name!r}")
            if key == "roles":
                value = _roles(value, self.name)
            elif key == "timeout":
                value = _timeout(value, self.name)
            setattr(clone, key, value)
        return clone

    def spec(self) -> ToolSpec:
        """The tool as the model sees it (a copy: a worker may not edit our schema)."""
        return ToolSpec(
            name=self.name, description=self.description, parameters=copy.deepcopy(self.parameters)
        )

    def allowed_for(self, role: str) -> bool:
        return self.roles is None or role in self.roles

    def validate(self, arguments: object) -> list[ValidationIssue]:
        """Every problem with `arguments`, empty when the call may run.

        The JSON Schema comes first; for `@tool` tools the argument model then runs too, because
        pydantic checks what a schema cannot express (custom validators, string formats), and a
        call it would reject must go back to the model instead of failing inside `call()`.
        """
        issues = validate_arguments(self.parameters, arguments)
        if issues or self.args_model is None:
            return issues
        try:
            self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            return [
                ValidationIssue(json_path(tuple(err["loc"])), err["msg"])
                for err in exc.errors(include_url=False)
            ]
        return []

    async def call(self, arguments: dict[str, Any], ctx: RunContext | None = None) -> object:
        """Run the function with validated `arguments` and return its raw result.

        A sync function runs in a worker thread that is abandoned on cancellation: a tool that
        ignores cancellation must not hold up the run's timeout or cancel. Exceptions raised by the
        function propagate unchanged; the run loop reports them to the model.
        """
        if self.fn is None:
            raise ToolError("has no function to call (schema-only tool)", tool=self.name)
        args, kwargs = self._arguments(arguments)
        if self.takes_context:
            if ctx is None:
                raise ToolError("needs a RunContext but none was given", tool=self.name)
            args = [ctx, *args]
        if _is_async(self.fn):
            return await self.fn(*args, **kwargs)
        call = functools.partial(self.fn, *args, **kwargs)
        result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        if inspect.isawaitable(result):  # e.g. a sync wrapper that hands back a coroutine
            return await result
        return result

    def _arguments(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for `fn`; through the argument model for `@tool`
        tools, so nested models and enums arrive as instances rather than dicts and strings."""
        if self.args_model is None:
            return [], dict(arguments)
        try:
            model = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            message = f"arguments were not validated before the call: {exc}"
            raise ToolError(message, tool=self.name) from None
        values = {
            field.alias or key: getattr(model, key)
            for key, field in type(model).model_fields.items()
        }
        names = list(values)
        positional = [values.pop(n) for n in names[: self._positional_only]]
        return positional, values

    def __repr__(self) -> str:
        roles = sorted(self.roles) if self.roles is not None else None
        target = getattr(self.fn, "__qualname__", None) or (repr(self.fn) if self.fn else None)
        return f"Tool(name={self.name!r}, roles={roles!r}, timeout={self.timeout!r}, fn={target})"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    roles: Iterable[str] | None = None,
    timeout: float | None = None,
    ends_run: bool = False,
    needs_approval: bool = False,
) -> Callable[[F], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    roles: Iterable[str] | None = None,
    timeout: float | None = None,
    ends_run: bool = False,
    needs_approval: bool = False,
) -> Tool | Callable[[F], Tool]:
    """Make a `Tool` from a typed function: `@tool` or `@tool(name=..., roles=[...], timeout=5)`.

    The schema comes from the type hints, the descriptions from the docstring; `description`
    overrides the docstring's. `ends_run=True`: a successful call is the final answer.
    `needs_approval=True`: each call waits for the run's approver.
    """

    def build(func: Callable[..., Any]) -> Tool:
        parameters, args_model, takes_context = schema_from_function(func)
        return Tool(
            name or getattr(func, "__name__", ""),
            function_description(func) if description is None else description,
            parameters,
            func,
            roles=roles,
            timeout=timeout,
            ends_run=ends_run,
            takes_context=takes_context,
            args_model=args_model,
            needs_approval=needs_approval,
        )

    return build if fn is None else build(fn)


def _roles(roles: Iterable[str] | None, name: str) -> frozenset[str] | None:
    if roles is None:
        return None
    # A bare string would otherwise become a set of its letters.
    found = frozenset([roles] if isinstance(roles, str) else roles)
    if not found:
        raise ConfigError("roles is empty; use None to allow every role", where=f"tool {name!r}")
    return found


def _timeout(timeout: float | None, name: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout!r}", where=f"tool {name!r}")
    return float(timeout)


def _positional_only(fn: Callable[..., Any] | None, takes_context: bool) -> int:
    """How many schema parameters must be passed by position (declared before a `/`)."""
    if fn is None:
        return 0
    params = list(inspect.signature(fn).parameters.values())
    if takes_context:
        params = params[1:]
    return sum(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
