"""The planner's `assign`: give a task to an agent of another role. Several calls in one turn are
parallel steps (the run loop runs one turn's calls concurrently).

The tool itself only carries the schema the reference models were trained on; what a step *does*
belongs to the workflow running it, which hands its dispatcher in with `assign_tool(dispatch)`.
The `role` enum is the workflow's worker roles, so a call naming any other role fails validation
and is fed back to the model without running anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from rolepool.core import ConfigError, RunContext, ToolError
from rolepool.tools.tool import Tool

Dispatch = Callable[[RunContext, str, str], Awaitable[str]]
"""`dispatch(ctx, role, task)` runs one step and returns what the planner reads back."""

BUILTIN_WORKER_ROLES: tuple[str, ...] = ("coder", "search", "writer")
DESCRIPTION = "Give a task to an agent of another role. Several calls = parallel steps."


def assign_schema(roles: Sequence[str] = BUILTIN_WORKER_ROLES) -> dict[str, object]:
    """The parameters' JSON Schema; for the built-in roles exactly the zoo toolset's."""
    if not roles:
        raise ConfigError("a planner needs at least one role to assign to", where="assign roles")
    return {
        "type": "object",
        "properties": {
            "role": {
                "type": "string",
                "enum": list(roles),
                "description": "The role that does the task.",
            },
            "task": {"type": "string", "description": "What the agent should do."},
        },
        "required": ["role", "task"],
        "additionalProperties": False,
    }


async def _outside_a_workflow(ctx: RunContext, role: str, task: str) -> str:
    raise ToolError("assign runs the steps of a workflow; this run has none", tool="assign")


def assign_tool(
    dispatch: Dispatch | None = None, roles: Sequence[str] = BUILTIN_WORKER_ROLES
) -> Tool:
    """The `assign` tool for the planner role, running steps through `dispatch`."""
    tool = Tool(
        "assign",
        DESCRIPTION,
        assign_schema(roles),
        dispatch or _outside_a_workflow,
        roles={"planner"},
        takes_context=True,
    )
    tool.nests_agents = True  # a step's own tool calls take the run's tool slots
    return tool


assign = assign_tool()
"""The built-in `assign` (schema and role); a `Workflow` binds it to its own dispatcher."""
