"""Agents, the built-in roles and workflows."""

from rolepool.agents.agent import Agent
from rolepool.agents.roles import BUILTIN_ROLES, builtin_agent, builtin_agents
from rolepool.agents.workflow import Step, Workflow, WorkflowResult

__all__ = [
    "BUILTIN_ROLES",
    "Agent",
    "Step",
    "Workflow",
    "WorkflowResult",
    "builtin_agent",
    "builtin_agents",
]
