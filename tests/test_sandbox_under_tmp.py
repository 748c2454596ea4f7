"""The sandbox's private /tmp must not hide the interpreter it runs. CI (or a user) may run
rolepool from a virtualenv or a checkout under /tmp; a tmpfs mounted over /tmp hid it, and every
`run_python` failed to start (`FileNotFoundError` in the bootstrap)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import anyio, sys
from rolepool.tools.builtin.sandbox.runner import run_sandboxed
assert sys.prefix.startswith("/tmp/"), sys.prefix
result = anyio.run(run_sandboxed, "print(2 + 3)", 20)
print(result.exit_code, result.stdout.strip(), result.setup_error)
"""


def test_a_virtualenv_under_tmp_still_runs_sandboxed_code(tmp_path):
    assert str(tmp_path).startswith("/tmp/")  # pytest's own temporary directories
    venv = tmp_path / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", SCRIPT],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "5", "None"], proc.stdout
