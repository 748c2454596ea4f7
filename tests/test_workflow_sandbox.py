"""Sandbox limits inside a workflow run: each hit is a tool error, and the run goes on."""

from __future__ import annotations

import os

import pytest
from workflow_scripts import calls, finish, last, role_worker

from rolepool import Workflow
from rolepool.runtime import EventStore

pytestmark = pytest.mark.anyio

HOSTILE = {
    "infinite loop": ("run_python", {"code": "while True:\n    pass", "timeout_s": 2}),
    "memory bomb": (
        "run_python",
        {"code": "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 2**20))"},
    ),
    "fork bomb": (
        "run_python",
        {
            "code": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
            "        pass",
            "timeout_s": 3,
        },
    ),  # fmt: skip
    "huge output": (
        "run_python",
        {"code": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"},
    ),
    "write outside": ("write_file", {"path": "../escape.txt", "content": "pwned"}),
    "socket": (
        "run_python",
        {
            "code": "import socket\ns = socket.socket()\ns.settimeout(3)\n"
            "s.connect(('203.0.113.1', 80))",
            "timeout_s": 5,
        },
    ),  # fmt: skip
}


async def test_every_limit_hit_is_a_tool_error_and_the_run_finishes(tmp_path, isolated_store):
    workspace = tmp_path / "ws"

    def coder(request):
        if last(request).role == "user":
            return calls(*HOSTILE.values())
        errors = [m.content for m in request.messages if m.role == "tool"]
        return finish(f"{len(errors)} calls came back")

    result = await Workflow().run("Go.", worker=role_worker(coder=coder), workspace=workspace)
    with EventStore(isolated_store) as store:
        events = store.events(result.run_id)
    finished = [e for e in events if e.type == "tool.finished" and e.agent == "coder"
                and e.tool != "finish"]  # fmt: skip
    assert len(finished) == len(HOSTILE)
    by_call = {e.call_id: e for e in finished}
    for index, label in enumerate(HOSTILE):
        event = by_call[f"c{index}"]
        assert event.error, f"{label}: expected a tool error, got {event.result!r}"
    assert "wall-clock timeout" in by_call["c0"].error
    assert "killed" in by_call["c3"].error or "output over" in by_call["c3"].error
    assert "'..'" in by_call["c4"].error
    assert not (tmp_path / "escape.txt").exists()
    assert events[-1].type == "run.finished"
    assert result.steps[0].answer == f"{len(HOSTILE)} calls came back"
    assert not [p for p in (workspace / ".sandbox").glob("*")]


async def test_run_python_sees_a_copy_of_the_workspace(tmp_path):
    def coder(request):
        done = [m for m in request.messages if m.role == "tool"]
        if not done:
            return calls(("write_file", {"path": "data/n.txt", "content": "41"}))
        if len(done) == 1:
            return calls(("run_python", {"code": "n = int(open('data/n.txt').read())\n"
                                                 "open('data/n.txt', 'w').write('0')\n"
                                                 "print(n + 1)"}))  # fmt: skip
        return finish(done[-1].content.split("--- stdout ---\n")[1].split("\n")[0])

    result = await Workflow().run("Go.", worker=role_worker(coder=coder), workspace=tmp_path)
    assert result.steps[0].answer == "42"
    assert (tmp_path / "data" / "n.txt").read_text() == "41"  # the code changed only its copy


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
async def test_snapshot_skips_links(tmp_path):
    from rolepool.tools.builtin.snapshot import snapshot_workspace

    ws, out = tmp_path / "ws", tmp_path / "out"
    ws.mkdir()
    out.mkdir()
    (tmp_path / "secret").write_text("s")
    (ws / "link").symlink_to(tmp_path / "secret")
    (ws / "ok.txt").write_text("fine")
    (ws / ".sandbox").mkdir()
    (ws / ".sandbox" / "junk").write_text("j")
    skipped = snapshot_workspace(ws, out, None)
    assert skipped == ["link"]
    assert sorted(p.name for p in out.iterdir()) == ["ok.txt"]
