"""The reference model zoo: tiny dense and MoE tool-callers trained by rolepool on a synthetic
corpus of the built-in roles' tool calls, shipped with the package so everything runs offline.

Importing this package is cheap; torch and transformers load only when training or evaluating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHECKPOINTS = Path(__file__).parent / "checkpoints"

__all__ = ["CHECKPOINTS", "checkpoint_path", "list_checkpoints"]


def checkpoint_path(name: str) -> Path:
    """The directory of a shipped checkpoint, e.g. `checkpoint_path("moe-s1")`; pass it to
    `AutoModelForCausalLM.from_pretrained` (add `dtype=torch.float32` on CPU if you like)."""
    path = CHECKPOINTS / name
    if not (path / "config.json").is_file():
        known = ", ".join(c["name"] for c in list_checkpoints()) or "none"
        raise FileNotFoundError(f"no shipped checkpoint {name!r} (shipped: {known})")
    return path


def list_checkpoints() -> list[dict[str, Any]]:
    """Every shipped checkpoint with its model card (`{}` when it has none yet), by name."""
    if not CHECKPOINTS.is_dir():
        return []
    found = []
    for path in sorted(CHECKPOINTS.iterdir()):
        if (path / "config.json").is_file():
            card_file = path / "card.json"
            card = json.loads(card_file.read_text()) if card_file.is_file() else {}
            found.append({"name": path.name, "path": path, "card": card})
    return found
