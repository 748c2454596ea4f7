"""README.md tells the truth: its Python examples run as written, and CI runs its test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_python_examples_run(tmp_path):
    blocks = python_blocks()
    assert blocks, "README has no python example"
    for i, block in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(block)
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        assert "Found two notes on MoE routing." in proc.stdout
        assert "tool.call.invalid $.top_k: 'two' is not of type 'integer'" in proc.stdout


def test_quickstart_runs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "answer: The phrase has 6 words." in proc.stdout
    assert "tool.call.invalid" in proc.stdout


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_command = next(c.strip() for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()
