"""The context a tool may ask for as its first parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunContext:
    """Handed to tools whose first parameter is annotated `RunContext`.

    It is left out of the tool's JSON Schema: the model never sees or fills it.
    """

    run_id: str
    agent: str
    role: str
    call_id: str = ""
    workspace: Path | None = None
    deps: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
