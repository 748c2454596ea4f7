"""Agents, the built-in roles and workflows."""

from rolepool.agents.agent import Agent

__all__ = ["Agent"]
