"""The workspace snapshot `run_python` starts from: see `snapshot_workspace` and docs/sandbox.md."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

SNAPSHOT_MAX_FILES = 200
SNAPSHOT_MAX_BYTES = 16 * 2**20


def snapshot_workspace(workspace: Path, workdir: Path, uid: int | None) -> list[str]:
    """Copy the workspace's regular files into the sandbox's fresh working directory, so the code
    can read what `write_file` wrote. A copy, not the workspace itself: the code cannot change or
    delete the run's files (report.md included), plant links in them, or fill them up.

    Symlinks, hard-linked files, special files and `.sandbox/` are skipped, never followed; past
    `SNAPSHOT_MAX_FILES` files or `SNAPSHOT_MAX_BYTES` bytes the rest is skipped. Returns the
    skipped paths, so the model can be told.
    """
    skipped: list[str] = []
    files = size = 0
    for root, dirs, names in os.walk(workspace, followlinks=False):
        rel_root = Path(root).relative_to(workspace)
        dirs[:] = [d for d in dirs if not (rel_root == Path(".") and d == ".sandbox")]
        for name in sorted(names):
            source, rel = Path(root) / name, rel_root / name
            try:
                info = os.lstat(source)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                skipped.append(str(rel))
                continue
            if files >= SNAPSHOT_MAX_FILES or size + info.st_size > SNAPSHOT_MAX_BYTES:
                skipped.append(str(rel))
                continue
            target = workdir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_nofollow(source, target)
            files, size = files + 1, size + info.st_size
    if uid is not None:
        for root, dirs, names in os.walk(workdir):
            for name in dirs + names:
                os.lchown(Path(root) / name, uid, uid)
    return skipped


def _copy_nofollow(source: Path, target: Path) -> None:
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
