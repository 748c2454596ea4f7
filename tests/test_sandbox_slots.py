"""SECURITY.md section 3: one process runs at most `max_sandboxes()` sandboxes at once, however
many runs and parallel calls ask (issue 28.5: 300 parallel `run_python` calls started 300
interpreters). Real sandboxes: each prints when its code started and ended."""

from __future__ import annotations

import anyio
import pytest

from rolepool.tools.builtin.sandbox.runner import MAX_SANDBOXES_ENV, max_sandboxes, run_sandboxed

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

CODE = "import time\nprint(time.time())\ntime.sleep(0.4)\nprint(time.time())\n"


async def test_concurrent_sandboxes_are_bounded_per_process(monkeypatch, tmp_path):
    monkeypatch.setenv(MAX_SANDBOXES_ENV, "3")
    spans: list[tuple[float, float]] = []

    async def one() -> None:
        result = await run_sandboxed(CODE, 30, parent_dir=tmp_path)
        start, end = (float(x) for x in result.stdout.split())
        spans.append((start, end))

    async with anyio.create_task_group() as tg:  # two "runs" of eight parallel calls each
        for _ in range(16):
            tg.start_soon(one)
    assert len(spans) == 16
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 3


def test_the_limit_reads_the_environment(monkeypatch):
    monkeypatch.setenv(MAX_SANDBOXES_ENV, "not a number")
    assert max_sandboxes() >= 4
    monkeypatch.setenv(MAX_SANDBOXES_ENV, "0")
    assert max_sandboxes() == 1
