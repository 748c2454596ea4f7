"""The writer role's `write_section` and every role's `finish`.

`write_section` appends to `report.md` in the run's workspace, so a run leaves a readable artefact
next to its event trace. Each section is one `## title` heading; headings of level 1-2 inside a
body are pushed down to level 3, so the report's outline stays one entry per section and the
section count the tool reports stays true.

`finish` is an `ends_run` tool: a valid call to it ends the agent's run with its answer as the
output (a plain-text reply is a final answer too). The reference models answer this way.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from rolepool.core import RunContext, ToolError
from rolepool.tools.tool import tool

REPORT_NAME = "report.md"
_SECTION = re.compile(r"^## ")
_BODY_HEADING = re.compile(r"^ {0,3}#{1,2}(?=\s|$)")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
# Calls in one turn run concurrently in worker threads; appends to one report must not interleave.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def report_path(workspace: Path) -> Path:
    return workspace / REPORT_NAME


def count_sections(text: str) -> int:
    """How many `## ` section headings the report has, not counting lines inside code fences."""
    count, fenced = 0, False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and _SECTION.match(line):
            count += 1
    return count


def format_section(title: str, body: str) -> str:
    """The Markdown for one section: a one-line `##` title and the body with its top-level
    headings demoted, ending in a blank line so the next section starts cleanly."""
    heading = " ".join(title.split())
    lines, fenced = [], False
    for line in body.strip("\n").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and _BODY_HEADING.match(line):
            line = "###" + line.lstrip().lstrip("#")
        lines.append(line.rstrip())
    return f"## {heading}\n\n" + "\n".join(lines) + "\n\n"


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def append_section(workspace: Path, title: str, body: str) -> int:
    """Append one section to the workspace's report and return its section count.

    The report is opened without following symlinks: a `report.md` planted as a link must not
    make the writer append to a file outside the workspace.
    """
    if not title.strip():
        raise ToolError("the section title is empty", tool="write_section")
    if not workspace.is_dir():
        raise ToolError(f"the run's workspace {workspace} is not a directory", tool="write_section")
    path = report_path(workspace)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    with _lock_for(path.resolve()):
        try:
            fd = os.open(path, flags, 0o644)
            with os.fdopen(fd, "a", encoding="utf-8") as report:
                report.write(format_section(title, body))
            return count_sections(path.read_text(encoding="utf-8"))
        except OSError as exc:
            message = f"cannot write {path}: {exc.strerror or exc}"
            raise ToolError(message, tool="write_section") from None


@tool(name="write_section", description="Append a section to the run's report.", roles={"writer"})
def write_section(ctx: RunContext, title: str, body: str) -> str:
    """The confirmation opens like the one the reference models were trained on ("Added section
    'T' (N words)") and adds the section count, so the writer knows how far the report has got.

    Args:
        title: The section title.
        body: The section text.
    """
    if ctx.workspace is None:
        raise ToolError(
            "this run has no workspace to write the report in; start the run with a workspace",
            tool="write_section",
        )
    sections = append_section(Path(ctx.workspace), title, body)
    words, noun = len(body.split()), "section" if sections == 1 else "sections"
    heading = " ".join(title.split())
    return f"Added section '{heading}' ({words} words); the report has {sections} {noun}."


@tool(name="finish", description="Give the final answer.", ends_run=True)
def finish(answer: str) -> str:
    """Every role's way to end with an answer (see the module docstring for the loop side).

    Args:
        answer: The final answer.
    """
    return answer
