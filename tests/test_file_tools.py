"""read_file / write_file cannot leave the run's workspace, and fail with clear messages."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from rolepool.core import RunContext, ToolError
from rolepool.tools.builtin import read_file, write_file
from rolepool.tools.builtin.files import MAX_READ_BYTES, MAX_WRITE_BYTES
from rolepool.zoo import toolset

pytestmark = pytest.mark.anyio


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return RunContext(run_id="run-1", agent="coder", role="coder", workspace=workspace)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    return secret


async def _read(ctx: RunContext, path: str) -> str:
    return await read_file.call({"path": path}, ctx)


async def _write(ctx: RunContext, path: str, content: str) -> str:
    return await write_file.call({"path": path, "content": content}, ctx)


async def _read_error(ctx: RunContext, path: str) -> str:
    with pytest.raises(ToolError) as info:
        await _read(ctx, path)
    return str(info.value)


async def _write_error(ctx: RunContext, path: str, content: str = "pwned") -> str:
    with pytest.raises(ToolError) as info:
        await _write(ctx, path, content)
    return str(info.value)


@pytest.mark.parametrize("name", ["read_file", "write_file"])
def test_schemas_are_the_ones_the_models_were_trained_on(name: str) -> None:
    tool = {"read_file": read_file, "write_file": write_file}[name]
    assert tool.parameters == toolset.schema(name)
    assert tool.description == toolset.tool_spec(name).description
    assert tool.roles == frozenset({"coder"})


async def test_round_trip_creates_missing_directories(ctx: RunContext) -> None:
    assert await _write(ctx, "notes/today/plan.md", "# Plan\nünïcode\n") == (
        "wrote 17 bytes to notes/today/plan.md"
    )
    assert await _read(ctx, "notes/today/plan.md") == "# Plan\nünïcode\n"
    assert await _read(ctx, "./notes//today/plan.md") == "# Plan\nünïcode\n"
    await _write(ctx, "notes/today/plan.md", "short")
    assert (ctx.workspace / "notes/today/plan.md").read_text() == "short"  # replaced, not appended


async def test_missing_file_and_directory_are_clear_errors(ctx: RunContext) -> None:
    assert "no such file: 'nope.txt'" in await _read_error(ctx, "nope.txt")
    assert "no such directory: 'nodir'" in await _read_error(ctx, "nodir/x.txt")
    (ctx.workspace / "adir").mkdir()
    assert "'adir' is not a regular file" in await _read_error(ctx, "adir")
    assert "is a directory" in await _write_error(ctx, "adir")
    (ctx.workspace / "afile").write_text("x")
    assert "'afile' is not a directory" in await _read_error(ctx, "afile/x")


@pytest.mark.parametrize("path", ["../x", "a/../../x", "..", "a/.."])
async def test_parent_traversal_is_refused(ctx: RunContext, path: str) -> None:
    assert "uses '..'" in await _read_error(ctx, path)
    assert "uses '..'" in await _write_error(ctx, path)
    assert not (ctx.workspace.parent / "x").exists()


@pytest.mark.parametrize("path", ["/etc/passwd", "//etc/passwd", "\\etc\\passwd", "~/x"])
async def test_absolute_paths_are_refused(ctx: RunContext, path: str) -> None:
    assert "is absolute" in await _read_error(ctx, path)
    assert "is absolute" in await _write_error(ctx, path)


async def test_symlink_pointing_out_is_refused(ctx: RunContext, outside: Path) -> None:
    (ctx.workspace / "link.txt").symlink_to(outside)
    assert "'link.txt' is a symbolic link" in await _read_error(ctx, "link.txt")
    assert "'link.txt' is a symbolic link" in await _write_error(ctx, "link.txt")
    assert outside.read_text() == "top secret"


async def test_symlinked_directory_component_is_refused(ctx: RunContext, outside: Path) -> None:
    (ctx.workspace / "sub").mkdir()
    (ctx.workspace / "sub" / "escape").symlink_to(outside.parent, target_is_directory=True)
    message = await _read_error(ctx, "sub/escape/secret.txt")
    assert "'sub/escape' is a symbolic link" in message and "top secret" not in message
    assert "'sub/escape' is a symbolic link" in await _write_error(ctx, "sub/escape/secret.txt")
    assert "symbolic link" in await _write_error(ctx, "sub/escape/new.txt")
    assert outside.read_text() == "top secret"
    assert not (outside.parent / "new.txt").exists()


async def test_symlink_inside_the_workspace_is_refused_too(ctx: RunContext) -> None:
    (ctx.workspace / "real.txt").write_text("x")
    (ctx.workspace / "alias.txt").symlink_to("real.txt")
    assert "symbolic link" in await _read_error(ctx, "alias.txt")


async def test_hard_link_to_an_outside_file_is_refused(ctx: RunContext, outside: Path) -> None:
    os.link(outside, ctx.workspace / "hard.txt")
    assert "hard links" in await _read_error(ctx, "hard.txt")
    assert "hard links" in await _write_error(ctx, "hard.txt")
    assert outside.read_text() == "top secret"


async def test_fifo_does_not_hang_the_tool(ctx: RunContext) -> None:
    os.mkfifo(ctx.workspace / "pipe")
    with anyio.fail_after(5):
        assert "not a regular file" in await _read_error(ctx, "pipe")


async def test_no_workspace_is_a_clear_error() -> None:
    ctx = RunContext(run_id="run-1", agent="coder", role="coder")
    with pytest.raises(ToolError, match="no workspace for this run"):
        await _read(ctx, "a.txt")
    with pytest.raises(ToolError, match="no workspace for this run"):
        await _write(ctx, "a.txt", "x")


async def test_size_caps(ctx: RunContext) -> None:
    message = await _write_error(ctx, "big.txt", "x" * (MAX_WRITE_BYTES + 1))
    assert "over the 1000000-byte limit" in message
    assert not (ctx.workspace / "big.txt").exists()
    (ctx.workspace / "long.txt").write_bytes(b"y" * (MAX_READ_BYTES + 10))
    text = await _read(ctx, "long.txt")
    assert text.startswith("y" * 100)
    assert text.endswith(f"[truncated: {MAX_READ_BYTES + 10} bytes in all, showing the first "
                         f"{MAX_READ_BYTES}]")  # fmt: skip


async def test_empty_and_nul_paths_are_refused(ctx: RunContext) -> None:
    assert "path is empty" in await _read_error(ctx, "")
    assert "NUL" in await _read_error(ctx, "a\0b")
    assert "names the workspace itself" in await _write_error(ctx, "./")
