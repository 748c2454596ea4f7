"""`write_section` and `finish`, and the built-in search/writer tools' schemas against the zoo's."""

from __future__ import annotations

import pytest

from rolepool import Agent, ScriptedWorker, ToolCall
from rolepool.core import ConfigError, RunContext, ToolError
from rolepool.tools.builtin.report import (
    append_section,
    count_sections,
    finish,
    format_section,
    write_section,
)
from rolepool.tools.builtin.search import read_doc, search_docs
from rolepool.zoo import toolset

OURS = {t.name: t for t in (search_docs, read_doc, write_section, finish)}


@pytest.mark.parametrize("name", sorted(OURS))
def test_schemas_equal_the_ones_the_reference_models_were_trained_on(name):
    ours, trained = OURS[name], toolset.tool_spec(name)
    assert ours.parameters == trained.parameters
    assert ours.description == trained.description
    assert ours.spec() == trained


def test_roles_match_the_zoo_role_table():
    for name, owner in (("search_docs", "search"), ("read_doc", "search")):
        assert OURS[name].roles == {owner} and toolset.TOOL_OWNER[name] == owner
    assert write_section.roles == {"writer"} and toolset.TOOL_OWNER["write_section"] == "writer"
    assert finish.roles is None  # every role may finish
    assert all("finish" in toolset.ROLE_TOOLS[role] for role in toolset.ROLES)


def test_another_roles_tool_is_refused_at_definition():
    with pytest.raises(ConfigError, match="write_section"):
        Agent("w", role="search", tools=[write_section])
    with pytest.raises(ConfigError, match="search_docs"):
        Agent("w", role="writer", tools=[search_docs])
    Agent("w", role="planner", tools=[finish])


def test_writer_appends_sections_to_the_report_in_a_real_loop(tmp_path):
    worker = ScriptedWorker(
        [
            ToolCall(name="write_section", arguments={"title": "Summary", "body": "MoE wins."}),
            [
                ToolCall(name="write_section", arguments={"title": "Detail", "body": "One two."}),
                ToolCall(name="finish", arguments={"answer": "Report written."}),
            ],
            "Report written.",
        ]
    )
    agent = Agent("scribe", role="writer", tools=[write_section, finish])
    result = agent.run_sync("write it up", worker=worker, workspace=tmp_path)
    assert result.output == "Report written."
    replies = [m.content for m in result.messages if m.role == "tool"]
    assert replies[0] == "Added section 'Summary' (2 words); the report has 1 section."
    assert replies[1] == "Added section 'Detail' (2 words); the report has 2 sections."
    assert replies[2] == "Report written."  # finish echoes its answer
    report = (tmp_path / "report.md").read_text()
    assert report == "## Summary\n\nMoE wins.\n\n## Detail\n\nOne two.\n\n"


def test_write_section_without_a_workspace_is_a_tool_error_fed_back():
    worker = ScriptedWorker(
        [ToolCall(name="write_section", arguments={"title": "T", "body": "b"}), "gave up"]
    )
    result = Agent("scribe", role="writer", tools=[write_section]).run_sync("go", worker=worker)
    reply = next(m.content for m in result.messages if m.role == "tool")
    assert reply.startswith("ERROR: ToolError") and "no workspace" in reply


def test_body_headings_are_demoted_so_the_section_count_stays_true(tmp_path):
    body = "# Big\n## Medium\n### Small\n```\n## inside a fence\n```\ntext"
    text = format_section("  Multi\nline   title ", body)
    assert text.startswith("## Multi line title\n\n### Big\n### Medium\n### Small\n```\n## inside")
    assert count_sections(text) == 1
    assert append_section(tmp_path, "A", body) == 1
    assert append_section(tmp_path, "B", "plain") == 2


def test_bad_titles_workspaces_and_symlinked_reports_are_tool_errors(tmp_path):
    with pytest.raises(ToolError, match="title is empty"):
        append_section(tmp_path, "  ", "body")
    with pytest.raises(ToolError, match="not a directory"):
        append_section(tmp_path / "missing", "T", "body")
    outside = tmp_path / "outside.md"
    outside.write_text("keep\n")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "report.md").symlink_to(outside)
    with pytest.raises(ToolError, match="cannot write"):
        append_section(workspace, "T", "body")
    assert outside.read_text() == "keep\n"


@pytest.mark.anyio
async def test_concurrent_sections_do_not_interleave(tmp_path):
    import anyio

    ctx = RunContext(run_id="r", agent="w", role="writer", workspace=tmp_path)

    async def write(i: int) -> None:
        await write_section.call({"title": f"S{i}", "body": f"line {i}\n" * 200}, ctx)

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(write, i)
    report = (tmp_path / "report.md").read_text()
    assert count_sections(report) == 8
    for chunk in report.split("## ")[1:]:
        title, _, rest = chunk.partition("\n\n")
        assert set(rest.split()) <= {"line", title[1:]}


@pytest.mark.anyio
async def test_finish_returns_its_answer():
    assert await finish.call({"answer": "42"}) == "42"
    assert finish.validate({}) and finish.validate({"answer": "x", "extra": 1})
