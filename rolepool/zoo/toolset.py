"""The built-in roles' tools as JSON Schemas: the one definition the corpus, the chat template and
the scorer share. The agents' real `@tool` functions must produce these same schemas."""

from __future__ import annotations

import copy
from typing import Any

from rolepool.core import ToolSpec

ROLES: tuple[str, ...] = ("planner", "coder", "search", "writer")
WORKER_ROLES: tuple[str, ...] = ("coder", "search", "writer")


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _str(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _int(description: str, minimum: int, maximum: int, default: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": minimum,
        "maximum": maximum,
        "default": default,
        "description": description,
    }


_SPECS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in [
        ToolSpec(
            name="assign",
            description="Give a task to an agent of another role. Several calls = parallel steps.",
            parameters=_object(
                {
                    "role": {
                        "type": "string",
                        "enum": list(WORKER_ROLES),
                        "description": "The role that does the task.",
                    },
                    "task": _str("What the agent should do."),
                },
                ["role", "task"],
            ),
        ),
        ToolSpec(
            name="run_python",
            description="Run Python code in a sandbox and return its output.",
            parameters=_object(
                {
                    "code": _str("The Python source to run."),
                    "timeout_s": _int("Wall-clock limit in seconds.", 1, 60, 10),
                },
                ["code"],
            ),
        ),
        ToolSpec(
            name="read_file",
            description="Read a file from the workspace.",
            parameters=_object({"path": _str("Path inside the workspace.")}, ["path"]),
        ),
        ToolSpec(
            name="write_file",
            description="Write a file in the workspace.",
            parameters=_object(
                {"path": _str("Path inside the workspace."), "content": _str("The file's text.")},
                ["path", "content"],
            ),
        ),
        ToolSpec(
            name="search_docs",
            description="Search the document collection.",
            parameters=_object(
                {
                    "query": _str("What to look for."),
                    "top_k": _int("How many results.", 1, 20, 5),
                },
                ["query"],
            ),
        ),
        ToolSpec(
            name="read_doc",
            description="Read one document by its id.",
            parameters=_object({"doc_id": _str("The document id.")}, ["doc_id"]),
        ),
        ToolSpec(
            name="write_section",
            description="Append a section to the run's report.",
            parameters=_object(
                {"title": _str("The section title."), "body": _str("The section text.")},
                ["title", "body"],
            ),
        ),
        ToolSpec(
            name="finish",
            description="Give the final answer.",
            parameters=_object({"answer": _str("The final answer.")}, ["answer"]),
        ),
    ]
}

ROLE_TOOLS: dict[str, tuple[str, ...]] = {
    "planner": ("assign", "finish"),
    "coder": ("run_python", "read_file", "write_file", "finish"),
    "search": ("search_docs", "read_doc", "finish"),
    "writer": ("write_section", "finish"),
}

TOOL_OWNER: dict[str, str] = {
    name: role for role, names in ROLE_TOOLS.items() for name in names if name != "finish"
}


def tool_spec(name: str) -> ToolSpec:
    """A copy of one tool's spec, so callers may not edit the shared schema."""
    return _SPECS[name].model_copy(deep=True)


def role_specs(role: str) -> list[ToolSpec]:
    """The tools a role may call, in a fixed order (its own tools, then `finish`)."""
    return [tool_spec(name) for name in ROLE_TOOLS[role]]


def openai_tools(role: str) -> list[dict[str, Any]]:
    """The role's tools as the `tools=` list of an OpenAI request or `apply_chat_template`."""
    return [spec.to_openai() for spec in role_specs(role)]


def schema(name: str) -> dict[str, Any]:
    return copy.deepcopy(_SPECS[name].parameters)


def with_defaults(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with the schema's defaults filled in: an omitted `top_k` equals `top_k: 5`."""
    out = dict(arguments)
    for key, prop in _SPECS[name].parameters["properties"].items():
        if "default" in prop and key not in out:
            out[key] = prop["default"]
    return out
