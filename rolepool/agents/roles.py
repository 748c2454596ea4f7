"""The four built-in roles: each one's instructions and tools.

The instructions are exactly the system prompt the reference models were trained with
(`rolepool.zoo.corpus`: "You are the coder agent."), and the tools are the built-in ones whose
schemas equal `rolepool.zoo.toolset`; the chat template appends the tool signatures itself. A
longer prompt would read better to a large model and push the tiny shipped models off the only
distribution they know, so the built-in roles keep to it; a custom `Agent` may say more.
"""

from __future__ import annotations

from rolepool.agents.agent import Agent
from rolepool.core import ConfigError, Sampling
from rolepool.tools.builtin import (
    assign,
    finish,
    read_doc,
    read_file,
    run_python,
    search_docs,
    write_file,
    write_section,
)
from rolepool.tools.tool import Tool

PLANNER, CODER, SEARCH, WRITER = "planner", "coder", "search", "writer"
BUILTIN_ROLES: tuple[str, ...] = (PLANNER, CODER, SEARCH, WRITER)

ROLE_TOOLS: dict[str, tuple[Tool, ...]] = {
    PLANNER: (assign, finish),
    CODER: (run_python, read_file, write_file, finish),
    SEARCH: (search_docs, read_doc, finish),
    WRITER: (write_section, finish),
}


STEP_TEMPLATES: dict[str, str] = {
    CODER: "Use python to run: {task}",
    SEARCH: "Search the docs for {task}.",
}
"""How a workflow words an assigned task for a built-in role: the request shapes each role was
trained on (a tiny coder only runs code, a tiny searcher answers "search the docs for ...").
Both still read naturally to a large model. Roles without a template get the task as it is."""


def role_instructions(role: str) -> str:
    """The system prompt of a built-in role, word for word the one of the training corpus."""
    return f"You are the {role} agent."


def builtin_agent(
    role: str,
    *,
    name: str | None = None,
    sampling: Sampling | None = None,
    decoding: str = "free",
) -> Agent:
    """A fresh agent of one built-in role, named after it unless `name` says otherwise."""
    if role not in ROLE_TOOLS:
        raise ConfigError(f"not a built-in role; choose one of {list(BUILTIN_ROLES)}", where=role)
    tools = ROLE_TOOLS[role]
    return Agent(
        name or role, role, role_instructions(role), tools, sampling=sampling, decoding=decoding
    )


def builtin_agents(sampling: Sampling | None = None, decoding: str = "free") -> list[Agent]:
    """One agent per built-in role: the default workflow's team."""
    return [builtin_agent(role, sampling=sampling, decoding=decoding) for role in BUILTIN_ROLES]
