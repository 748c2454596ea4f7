"""BFCL's executable backends (the simulated file system, messaging, posting, ticketing, trading,
travel, vehicle and math APIs shipped in the `bfcl-eval` package) as rolepool tools.

One `Backends` holds one fresh instance of each class a case involves, loaded with the case's
initial state, so no two cases (nor a model's run and the ground truth's) share state. A call runs
the instance's method with the call's arguments, and its result becomes the text BFCL's executor
makes of it: a string as it is, a dict as JSON (else `str`), anything else `str`; an exception
becomes `Error during execution: <message>`. Like BFCL, methods whose names start with `_` are not
tools, and a method called kill/exit/quit/remove/unlink/popen/Popen/run is refused.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

from rolepool.core import ToolCall, UserError
from rolepool.evals.bfcl.schema import convert_function
from rolepool.tools.tool import Tool

_MODULE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code."
CLASS_MODULES: dict[str, str] = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
"""Backend class -> its module in bfcl-eval (and its function docs: `<module>.json`)."""
STATELESS = frozenset({"MathAPI"})
_REFUSED = frozenset({"kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run"})


class Backends:
    """The backend instances of one case (see the module docstring)."""

    def __init__(
        self, classes: list[str], initial_config: dict[str, Any], *, long_context: bool = False
    ) -> None:
        self.instances: dict[str, Any] = {}
        self.log: list[tuple[str, dict[str, Any], str]] = []
        self.methods: dict[str, Callable[..., Any]] = {}
        for name in classes:
            instance = _backend_class(name)()
            if name not in STATELESS:
                state = copy.deepcopy(initial_config.get(name, {}))
                instance._load_scenario(state, long_context=long_context)
            self.instances[name] = instance
            for method, bound in inspect.getmembers(instance, predicate=inspect.ismethod):
                if not method.startswith("_"):
                    self.methods[method] = bound

    def execute(self, name: str, arguments: dict[str, Any], args: tuple[Any, ...] = ()) -> str:
        """Run one call and return its result as BFCL's executor writes it."""
        try:
            if name in _REFUSED:
                raise PermissionError(f"Function call {name} is not allowed.")
            method = self.methods.get(name)
            if method is None:
                raise NameError(f"name '{name}' is not defined")
            # a copy: backends keep what they are given (a tweet's mention list) and change it
            # later, which must not reach the caller's record of the call
            return _as_text(method(*copy.deepcopy(args), **copy.deepcopy(arguments)))
        except Exception as exc:  # the backend's own errors are the model's to read
            return f"Error during execution: {exc}"

    def execute_text(self, call: str) -> str:
        """Run one call written as Python source (`cd(folder='x')`, BFCL's ground truth)."""
        name, args, kwargs = parse_call_text(call)
        return self.execute(name, kwargs, args)

    def state(self) -> dict[str, dict[str, Any]]:
        """Each instance's public attributes: what BFCL's state check compares."""
        return {
            name: {k: v for k, v in vars(instance).items() if not k.startswith("_")}
            for name, instance in self.instances.items()
        }

    def tools(self, docs: list[dict[str, Any]]) -> list[Tool]:
        """The documented methods as rolepool tools that run on these instances. Each tool's
        function is async and runs the method before its first await, so the calls of one reply
        run in the reply's order, as BFCL runs them; `log` records every call made."""

        def make(name: str) -> Callable[..., Any]:
            async def run(**arguments: Any) -> str:
                result = self.execute(name, arguments)
                self.log.append((name, copy.deepcopy(arguments), result))
                return result

            return run

        self.log = []
        return [_template(doc).replace(fn=make(doc["name"])) for doc in docs]


_TEMPLATES: dict[str, Tool] = {}


def _template(doc: dict[str, Any]) -> Tool:
    """A doc's tool without a function, built (and its schema checked) once per process: the
    same few hundred docs serve every case."""
    key = json.dumps(doc, sort_keys=True)
    if key not in _TEMPLATES:
        spec = convert_function(doc, doc.get("name", "?"))
        _TEMPLATES[key] = Tool.from_schema(spec.name, spec.description, spec.parameters)
    return _TEMPLATES[key]


def _backend_class(name: str) -> type:
    if name not in CLASS_MODULES:
        raise UserError(f"BFCL multi-turn: unknown backend class {name!r}")
    try:
        module = importlib.import_module(_MODULE + CLASS_MODULES[name])
    except ImportError:
        raise UserError(
            "BFCL multi-turn needs BFCL's backends: pip install --no-deps bfcl-eval"
        ) from None
    return getattr(module, name)


def _as_text(result: Any) -> str:
    if type(result) is str:
        return result
    if type(result) is dict:
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            return str(result)
    return str(result)


def parse_call_text(call: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """`name(a, k=v)` as (name, positional values, keyword values); values are literals."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not a call: {call!r} ({exc.msg})") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, (ast.Name, ast.Attribute)):
        raise ValueError(f"not a call: {call!r}")
    name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
    args = tuple(ast.literal_eval(a) for a in node.args)
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
    return name, args, kwargs


def call_from_text(backends: Backends, call: str) -> ToolCall:
    """A ground-truth call as a `ToolCall` with keyword arguments only (positional values
    named by the method's signature), as a model would send it."""
    name, args, kwargs = parse_call_text(call)
    method = backends.methods.get(name)
    if method is not None and args:
        kwargs = dict(inspect.signature(method).bind_partial(*args, **kwargs).arguments)
    return ToolCall(name=name, arguments=kwargs)
