"""The document collection (SQLite FTS5), the search role's tools and `rolepool docs`."""

from __future__ import annotations

import sqlite3

import pytest

from rolepool import Agent, ScriptedWorker, ToolCall
from rolepool.cli import main
from rolepool.core import ConfigError, RunContext, ToolError, UserError
from rolepool.tools.builtin.docs import (
    SAMPLE_DIR,
    DocumentCollection,
    default_collection,
    default_docs_path,
    fts_query,
)
from rolepool.tools.builtin.search import collection_for, read_doc, search_docs


@pytest.fixture(autouse=True)
def isolated_docs(tmp_path, monkeypatch):
    """The default collection of every test is its own, never the user's."""
    monkeypatch.delenv("ROLEPOOL_HOME", raising=False)
    path = tmp_path / "default-docs.db"
    monkeypatch.setenv("ROLEPOOL_DOCS_DB", str(path))
    return path


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "guides" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "routing.md").write_text(
        "# Routing policy\n\nThe router sends each role to a worker. Routing uses weights.\n"
    )
    (root / "guides" / "breakers.txt").write_text(
        "Circuit breakers\n================\n\nA breaker opens after failures.\n"
    )
    (root / "guides" / "deep" / "sandbox.rst").write_text(
        "=======\nSandbox\n=======\n\nCode runs in a subprocess with limits.\n"
    )
    (root / "guides" / "no_heading.md").write_text("just some words about batching\n")
    (root / "guides" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / ".git" / "HEAD.md").write_text("# hidden\n")
    return root


@pytest.fixture
def docs(tmp_path):
    with DocumentCollection(tmp_path / "docs.db") as collection:
        yield collection


def test_add_indexes_text_files_recursively_with_titles(docs, corpus):
    result = docs.add([corpus])
    assert result.errors == [] and result.added == 4
    assert sorted(result.doc_ids) == ["breakers", "no-heading", "routing", "sandbox"]
    titles = {d.doc_id: d.title for d in docs.documents()}
    assert titles == {
        "routing": "Routing policy",  # Markdown ATX heading
        "breakers": "Circuit breakers",  # setext underline
        "sandbox": "Sandbox",  # reST over- and underline
        "no-heading": "no heading",  # the file name
    }
    assert len(docs) == 4


def test_bm25_puts_the_document_with_most_mentions_first(docs, tmp_path):
    folder = tmp_path / "bm25"
    folder.mkdir()
    filler = "unrelated words about pools and workers. " * 5
    (folder / "once.md").write_text(f"# One\n\n{filler} experts appear once.\n")
    (folder / "many.md").write_text(f"# Many\n\n{filler} experts experts experts and experts.\n")
    (folder / "none.md").write_text(f"# None\n\n{filler}\n")
    docs.add([folder])
    hits = docs.search("experts", top_k=5)
    assert [h.doc_id for h in hits] == ["many", "once"]
    assert hits[0].score > hits[1].score > 0
    assert "experts" in hits[0].snippet and "\n" not in hits[0].snippet


def test_search_stems_words_and_matches_any_of_them(docs, corpus):
    docs.add([corpus])
    assert docs.search("routed", 3)[0].doc_id == "routing"  # porter stemming
    found = {h.doc_id for h in docs.search("breaker subprocess", 5)}
    assert found == {"breakers", "sandbox"}
    assert len(docs.search("breaker subprocess", top_k=1)) == 1


HOSTILE = [
    '"',
    '"unbalanced',
    "*",
    "rout*",
    "NEAR(",
    "NEAR(routing sandbox, 2)",
    "AND OR NOT",
    "routing AND",
    "-",
    "-routing",
    "title:routing",
    "{title body}: x",
    "^routing",
    "(((",
    "'; DROP TABLE docs; --",
    "naïve café 日本語 Ωμέγα 🚀",
    "\x00\ud800 lone surrogate",
    "routing " * 1500,
    "x" * 10_000,
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_queries_never_reach_sqlite_as_syntax(docs, corpus, query):
    docs.add([corpus])
    try:
        hits = docs.search(query, 5)
    except UserError as exc:  # only "no words", said clearly
        assert "no words" in str(exc) or "empty" in str(exc)
    except sqlite3.Error as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"sqlite error for {query[:40]!r}: {exc}")
    else:
        assert isinstance(hits, list)
    assert len(docs) == 4  # and nothing was dropped


def test_fts_query_quotes_every_term_and_bounds_their_number():
    assert fts_query('NEAR( "x" AND y') == '"near" OR "x" OR "y"'
    assert fts_query("How do I roll out a canary?") == '"roll" OR "out" OR "canary"'
    assert fts_query("the and") == '"the" OR "and"'  # stop words alone are still a query
    assert fts_query(" ".join(f"w{i}" for i in range(500))).count(" OR ") == 31
    for empty in ("", "   \n"):
        with pytest.raises(UserError, match="empty"):
            fts_query(empty)
    with pytest.raises(UserError, match="no words"):
        fts_query('"*"')


def test_readding_is_a_no_op_and_a_changed_file_replaces_the_old(docs, corpus):
    first = docs.add([corpus])
    again = docs.add([corpus])
    assert again.added == again.updated == 0 and again.unchanged == 4
    assert sorted(again.doc_ids) == sorted(first.doc_ids)
    (corpus / "routing.md").write_text("# Dispatch rules\n\nNow about zebras.\n")
    changed = docs.add([corpus / "routing.md"])
    assert changed.updated == 1 and changed.doc_ids == ["routing"]
    assert len(docs) == 4
    assert [h.doc_id for h in docs.search("zebras", 5)] == ["routing"]
    assert docs.search("weights", 5) == []  # the old text is gone from the index
    assert docs.read("routing").title == "Dispatch rules"


def test_unreadable_files_are_reported_and_the_rest_still_index(docs, corpus):
    (corpus / "binary.md").write_bytes(b"# looks like text\x00\x01\x02")
    (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (corpus / "empty.md").write_text("   \n")
    result = docs.add([corpus])
    reasons = {p.path.name: p.reason for p in result.errors}
    assert set(reasons) == {"binary.md", "latin1.txt", "empty.md"}
    assert "binary" in reasons["binary.md"] and "UTF-8" in reasons["latin1.txt"]
    assert result.added == 4 and len(docs) == 4


def test_a_missing_path_is_a_user_error_and_nothing_is_indexed(docs, corpus, tmp_path):
    with pytest.raises(UserError, match="no such file or directory: .*nowhere"):
        docs.add([corpus, tmp_path / "nowhere"])
    assert len(docs) == 0


def test_same_file_name_in_two_folders_gets_distinct_stable_ids(docs, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.md").write_text(f"# Notes {folder}\n\ntext {folder}\n")
    ids = docs.add([tmp_path / "a", tmp_path / "b"]).doc_ids
    assert ids[0] == "notes" and ids[1].startswith("notes-") and len(ids[1]) == len("notes-") + 6
    assert docs.add([tmp_path / "b", tmp_path / "a"]).doc_ids == [ids[1], ids[0]]


def test_read_returns_full_text_and_truncates_with_a_marker(docs, tmp_path):
    (tmp_path / "long.md").write_text("# Long\n\n" + "word " * 5000)
    docs.add([tmp_path / "long.md"])
    whole = docs.read("long", max_chars=100_000)
    assert (
        not whole.truncated and whole.text.startswith("# Long") and whole.chars == len(whole.text)
    )
    cut = docs.read("long", max_chars=100)
    assert cut.truncated and cut.text.endswith(
        f"[truncated: {whole.chars} chars, showing first 100]"
    )


def test_reading_an_unknown_id_lists_close_ids(docs, corpus):
    with pytest.raises(UserError, match="collection is empty"):
        docs.read("routing")
    docs.add([corpus])
    with pytest.raises(UserError, match=r"no document 'routng'; close ids: routing"):
        docs.read("routng")
    with pytest.raises(UserError, match="search first"):
        docs.read("zzzzzz")


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    assert default_docs_path() == tmp_path / "default-docs.db"
    monkeypatch.delenv("ROLEPOOL_DOCS_DB")
    monkeypatch.setenv("ROLEPOOL_HOME", str(tmp_path / "home"))
    assert default_docs_path() == tmp_path / "home" / "docs.db"
    monkeypatch.delenv("ROLEPOOL_HOME")
    assert default_docs_path().name == "docs.db"


def test_an_unusable_database_path_is_a_config_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigError, match="cannot open the document collection"):
        DocumentCollection(tmp_path / "dir.db")


def test_the_default_collection_is_seeded_with_searchable_sample_docs(isolated_docs):
    shipped = sorted(p.stem for p in SAMPLE_DIR.glob("*.md"))
    assert len(shipped) >= 8
    with default_collection() as collection:
        assert collection.ids() == shipped
        assert collection.search("circuit breaker cooldown", 3)[0].doc_id == "failover-and-breakers"
        assert collection.search("mixture of experts", 3)[0].doc_id == "moe-vs-dense"
        assert collection.ensure_sample_docs() == []  # seeded once
    with default_collection() as collection:
        assert len(collection) == len(shipped)


def test_a_collection_someone_filled_is_never_seeded(docs, corpus):
    docs.add([corpus])
    assert docs.ensure_sample_docs() == []
    assert len(docs) == 4


def test_the_run_deps_choose_the_collection(docs):
    class Deps:
        def __init__(self, docs):
            self.docs = docs

    def ctx(deps):
        return RunContext(run_id="r", agent="a", role="search", deps=deps)

    assert collection_for(ctx(docs)) is docs
    assert collection_for(ctx(Deps(docs))) is docs
    assert collection_for(ctx({"docs": docs})) is docs
    assert collection_for(ctx(None)) is None and collection_for(ctx({"other": 1})) is None


def test_search_role_tools_in_a_real_agent_loop(docs, corpus):
    docs.add([corpus])
    worker = ScriptedWorker(
        [
            ToolCall(name="search_docs", arguments={"query": "circuit breaker", "top_k": 3}),
            ToolCall(name="read_doc", arguments={"doc_id": "breakers"}),
            ToolCall(name="read_doc", arguments={"doc_id": "breakrs"}),
            "A breaker opens after failures.",
        ]
    )
    agent = Agent("finder", role="search", tools=[search_docs, read_doc])
    result = agent.run_sync("what do breakers do?", worker=worker, deps=docs)
    assert result.output == "A breaker opens after failures."
    tool_messages = [m.content for m in result.messages if m.role == "tool"]
    assert tool_messages[0].startswith("[breakers] Circuit breakers — ")
    assert tool_messages[1].startswith("[breakers] Circuit breakers\n\nCircuit breakers\n====")
    assert (
        tool_messages[2].startswith("ERROR: ToolError")
        and "close ids: breakers" in tool_messages[2]
    )


def test_search_tools_use_the_seeded_default_collection_without_deps():
    worker = ScriptedWorker(
        [ToolCall(name="search_docs", arguments={"query": "sandbox memory limits"}), "done"]
    )
    agent = Agent("finder", role="search", tools=[search_docs, read_doc])
    result = agent.run_sync("find the sandbox limits", worker=worker)
    listing = next(m.content for m in result.messages if m.role == "tool")
    assert listing.splitlines()[0].startswith("[code-sandbox] The code sandbox behind run_python")
    assert len(listing.splitlines()) <= 5


@pytest.mark.anyio
async def test_tool_errors_for_bad_queries_and_no_results(docs, corpus):
    docs.add([corpus])
    ctx = RunContext(run_id="r", agent="a", role="search", deps=docs)
    assert await search_docs.call({"query": "xylophone"}, ctx) == "No results."
    with pytest.raises(ToolError, match="has no words"):
        await search_docs.call({"query": "*"}, ctx)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_add_search_list(corpus, tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    assert main(["docs", "add", str(corpus), "--db", db]) == 0
    assert "4 added, 0 updated, 0 unchanged, 0 skipped" in capsys.readouterr().out
    assert main(["docs", "search", "circuit breaker", "--db", db, "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. breakers  Circuit breakers") and "A breaker opens" in out
    assert main(["docs", "search", "xylophone", "--db", db]) == 0
    assert "No results." in capsys.readouterr().out
    assert main(["docs", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "4 documents" in out and "routing" in out and "Routing policy" in out


def test_cli_list_and_search_show_the_seeded_default_collection(capsys):
    assert main(["docs", "list"]) == 0
    assert "moe-vs-dense" in capsys.readouterr().out
    assert main(["docs", "search", "expert load batching"]) == 0
    assert "batching-and-expert-load" in capsys.readouterr().out


def test_cli_bad_input_is_exit_2_without_traceback(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    assert main(["docs", "add", str(tmp_path / "missing.md"), "--db", db]) == 2
    err = capsys.readouterr().err
    assert "no such file or directory" in err and "Traceback" not in err
    assert main(["docs", "search", '"', "--db", db]) == 2
    assert "no words" in capsys.readouterr().err
    assert main(["docs", "search", "x", "--top-k", "0", "--db", db]) == 2
    assert "--top-k" in capsys.readouterr().err


def test_cli_add_reports_skipped_files_and_progress(tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(25):
        (folder / f"doc{i:02}.md").write_text(f"# Doc {i}\n\nbody {i}\n")
    (folder / "bad.md").write_bytes(b"\x00\x00")
    assert main(["docs", "add", str(folder), "--db", str(tmp_path / "cli.db")]) == 1
    captured = capsys.readouterr()
    assert "indexed 26/26 files" in captured.err and "skipped" in captured.err
    assert "bad.md: binary file" in captured.err
    assert "25 added" in captured.out
