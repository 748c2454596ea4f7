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


def run_block(block: str, tmp_path: Path) -> str:
    script = tmp_path / "example.py"
    script.write_text(block)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_readme_python_examples_run(tmp_path):
    blocks = python_blocks()
    assert len(blocks) == 4, "a new README example needs its expectations here"
    out = run_block(blocks[0], tmp_path)
    assert "Found two notes on MoE routing." in out
    assert "tool.call.invalid $.top_k: 'two' is not of type 'integer'" in out
    out = run_block(blocks[1], tmp_path)
    assert "pool.failover {'from_worker': 'moe'}" in out
    assert "served by dense dense under policy 2026-11-26.1" in out
    assert out.strip().endswith("Plan: 1. write tests.")
    out = run_block(blocks[2], tmp_path)
    assert "approve word_count({'text': 'to be or not to be'})? yes" in out
    assert "step 0: analyst -> 6 words" in out
    assert "## Results\n\nanalyst: 6 words" in out
    # the run's output: the writer's answer, then the section it wrote
    assert out.strip().endswith("answer: The phrase has 6 words.\n\nanalyst: 6 words.")
    out = run_block(blocks[3], tmp_path)  # the MCP example: mcp-server-time (the dev extra)
    assert "['time.convert_time', 'time.get_current_time']" in out
    assert "$.timezone: 9 is not of type 'string'" in out
    assert '{"source": {"timezone": "Europe/Paris", "datetime": "' in out
    assert out.strip().endswith("Half past nine in Paris is half past five in Tokyo.")


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
