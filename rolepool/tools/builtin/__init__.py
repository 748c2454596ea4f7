"""The built-in roles' tools. Their schemas match `rolepool.zoo.toolset`, which the reference
models were trained on (tests assert it).

| role | tools |
| --- | --- |
| planner | `assign` (a step for another role; a workflow runs it) |
| coder | `run_python` (sandboxed), `read_file`, `write_file` (inside the run's workspace) |
| search | `search_docs`, `read_doc` (SQLite FTS5 over a `DocumentCollection`) |
| writer | `write_section` (appends to the run's `report.md`) |
| every role | `finish` (ends the agent's run with its answer) |
"""

from rolepool.tools.builtin.assign import assign, assign_tool
from rolepool.tools.builtin.docs import DocumentCollection, default_collection
from rolepool.tools.builtin.files import read_file, write_file
from rolepool.tools.builtin.report import finish, write_section
from rolepool.tools.builtin.sandbox import SandboxLimits, SandboxResult, run_python, run_sandboxed
from rolepool.tools.builtin.search import read_doc, search_docs

__all__ = [
    "DocumentCollection",
    "SandboxLimits",
    "SandboxResult",
    "assign",
    "assign_tool",
    "default_collection",
    "finish",
    "read_doc",
    "read_file",
    "run_python",
    "run_sandboxed",
    "search_docs",
    "write_file",
    "write_section",
]
