"""The search role's document collection: local text files in SQLite FTS5, ranked by BM25.

SQLite ships with Python and FTS5 gives BM25 ranking and snippets without a search server, so the
offline default workflow can search real documents. One database file holds one collection:
`docs` keeps each document's id, title, source path and content hash; the FTS5 table `docs_fts`
(same rowid) keeps the searchable title and body.

Where the collection lives: `$ROLEPOOL_DOCS_DB`, else `$ROLEPOOL_HOME/docs.db`, else the user data
directory (the same conventions as the event store). `default_collection()` opens it and, while it
is empty, seeds it with the sample documents shipped in `sample_docs/`, so a fresh install has
something to find; a collection that anyone has filled is never seeded.

The tools `search_docs` and `read_doc` use the collection in the run's deps when there is one
(`deps` itself a `DocumentCollection`, or `deps.docs`, or `deps["docs"]`), else the default one.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from rolepool.core import ConfigError, UserError

ENV_DB = "ROLEPOOL_DOCS_DB"
ENV_HOME = "ROLEPOOL_HOME"
SAMPLE_DIR = Path(__file__).with_name("sample_docs")
TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst"})
MAX_FILE_BYTES = 5_000_000
READ_MAX_CHARS = 12_000
# A model's (or a user's) query is free text; bounding the terms keeps a 10k-character paste
# from becoming a 2,000-way OR that is slow and ranks nothing useful.
MAX_QUERY_TERMS = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    chars INTEGER NOT NULL,
    added REAL NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    title, body, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""
# Title matches count more than body matches: a document named after the query is the best hit.
_RANK = "bm25(docs_fts, 4.0, 1.0)"
_WORD = re.compile(r"\w+")
_STOP_WORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it of on or that the this to "
    "what when where which who why with you".split()
)
_ATX = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+|~+|\^+|\*+)\s*$")


def default_docs_path() -> Path:
    """`$ROLEPOOL_DOCS_DB`, else `$ROLEPOOL_HOME/docs.db`, else the user's data directory."""
    if os.environ.get(ENV_DB):
        return Path(os.environ[ENV_DB]).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser() / "docs.db"
    return Path(platformdirs.user_data_dir("rolepool")) / "docs.db"


@dataclass(frozen=True)
class Hit:
    """One search result; `score` is the negated BM25 rank, so higher is better."""

    doc_id: str
    title: str
    snippet: str
    score: float


@dataclass(frozen=True)
class Doc:
    """A document's text as read back, cut to a cap (`truncated` says whether it was)."""

    doc_id: str
    title: str
    source: str
    text: str
    chars: int
    truncated: bool


@dataclass(frozen=True)
class DocInfo:
    """A row of `rolepool docs list`."""

    doc_id: str
    title: str
    source: str
    chars: int
    added: float


@dataclass(frozen=True)
class FileProblem:
    """A file that could not be indexed; the others in the same `add` still are."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class AddResult:
    """What `add` did: the ids of every file it indexed or found unchanged, and the failures."""

    doc_ids: list[str] = field(default_factory=list)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[FileProblem] = field(default_factory=list)


Progress = Callable[[int, int, Path], None]


class DocumentCollection:
    """A searchable collection of text documents in one SQLite database (thread-safe)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_docs_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            if "fts5" in str(exc).lower():
                raise ConfigError(
                    f"this Python's SQLite ({sqlite3.sqlite_version}) has no FTS5 module",
                    where=str(self.path),
                ) from exc
            raise _open_error(self.path, exc) from exc
        except (OSError, sqlite3.Error) as exc:
            raise _open_error(self.path, exc) from exc
        self._lock = threading.Lock()

    # -- indexing ---------------------------------------------------------------------------

    def add(self, paths: Iterable[Path | str], *, progress: Progress | None = None) -> AddResult:
        """Index files and directories (recursively: *.md, *.markdown, *.txt, *.rst).

        A missing path is the caller's mistake and raises `UserError` before anything is indexed;
        a file that is binary, not UTF-8 or unreadable is reported in `errors` and skipped.
        """
        files = _expand([Path(p).expanduser() for p in paths])
        result = AddResult()
        for number, file in enumerate(files, 1):
            try:
                doc_id, status = self._add_file(file, file.resolve().as_posix())
            except _Unindexable as exc:
                result.errors.append(FileProblem(file, str(exc)))
            else:
                result.doc_ids.append(doc_id)
                setattr(result, status, getattr(result, status) + 1)
            if progress is not None:
                progress(number, len(files), file)
        return result

    def ensure_sample_docs(self) -> list[str]:
        """Seed an empty collection with the shipped sample docs; a no-op once it has any doc."""
        if len(self) > 0:
            return []
        return self.add(sorted(SAMPLE_DIR.glob("*.md"))).doc_ids

    def _add_file(self, file: Path, source: str) -> tuple[str, str]:
        text = _read_text(file)
        digest = hashlib.sha256(text.encode()).hexdigest()
        title = _title(text, file)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # check and write as one, across processes too
            try:
                row = self._db.execute(
                    "SELECT id, doc_id, sha256 FROM docs WHERE source = ?", (source,)
                ).fetchone()
                if row is not None and row[2] == digest:
                    self._db.execute("COMMIT")
                    return row[1], "unchanged"
                if row is None:
                    doc_id = self._free_id(file, source)
                    rowid = self._db.execute(
                        "INSERT INTO docs (doc_id, source, title, sha256, chars, added)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (doc_id, source, title, digest, len(text), time.time()),
                    ).lastrowid
                else:
                    rowid, doc_id = row[0], row[1]
                    self._db.execute(
                        "UPDATE docs SET title = ?, sha256 = ?, chars = ?, added = ? WHERE id = ?",
                        (title, digest, len(text), time.time(), rowid),
                    )
                    self._db.execute("DELETE FROM docs_fts WHERE rowid = ?", (rowid,))
                self._db.execute(
                    "INSERT INTO docs_fts (rowid, title, body) VALUES (?, ?, ?)",
                    (rowid, title, text),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return doc_id, "added" if row is None else "updated"

    def _free_id(self, file: Path, source: str) -> str:
        """The file's name as a slug, which a model can copy; a path hash only on a clash."""
        slug = re.sub(r"[^a-z0-9]+", "-", file.stem.lower()).strip("-") or "doc"
        taken = self._db.execute("SELECT 1 FROM docs WHERE doc_id = ?", (slug,)).fetchone()
        if taken is None:
            return slug
        return f"{slug}-{hashlib.sha256(source.encode()).hexdigest()[:6]}"

    # -- reading ----------------------------------------------------------------------------

    def search(self, query: str, top_k: int = 5) -> list[Hit]:
        """The `top_k` best documents for free text; the text is never parsed as FTS5 syntax."""
        if top_k < 1:
            raise UserError(f"top_k must be at least 1, got {top_k}")
        match = fts_query(query)
        sql = (
            "SELECT d.doc_id, d.title, snippet(docs_fts, 1, '', '', '…', 16), "
            f"{_RANK} AS score FROM docs_fts JOIN docs d ON d.id = docs_fts.rowid "
            "WHERE docs_fts MATCH ? ORDER BY score LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (match, top_k)).fetchall()
        return [Hit(d, t, " ".join(s.split()), -score) for d, t, s, score in rows]

    def read(self, doc_id: str, *, max_chars: int = READ_MAX_CHARS) -> Doc:
        """A document's full text, cut at `max_chars` with a marker that says so."""
        with self._lock:
            row = self._db.execute(
                "SELECT d.doc_id, d.title, d.source, f.body FROM docs d"
                " JOIN docs_fts f ON f.rowid = d.id WHERE d.doc_id = ?",
                (doc_id.strip(),),
            ).fetchone()
        if row is None:
            raise UserError(self._unknown(doc_id))
        found, title, source, full = row
        text = full
        if len(full) > max_chars:
            text = f"{full[:max_chars]}\n…[truncated: {len(full)} chars, showing first {max_chars}]"
        return Doc(found, title, source, text, len(full), len(full) > max_chars)

    def _unknown(self, doc_id: str) -> str:
        ids = self.ids()
        if not ids:
            return f"no document {doc_id!r}: the collection is empty"
        close = difflib.get_close_matches(doc_id, ids, n=5, cutoff=0.5)
        close += [i for i in ids if i.startswith(doc_id.strip()) and i not in close][:3]
        hint = f"; close ids: {', '.join(close)}" if close else "; search first to find ids"
        return f"no document {doc_id!r}{hint}"

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT doc_id FROM docs ORDER BY doc_id")]

    def documents(self) -> list[DocInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT doc_id, title, source, chars, added FROM docs ORDER BY doc_id"
            ).fetchall()
        return [DocInfo(*row) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> DocumentCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_collection() -> DocumentCollection:
    """The collection at the default path, seeded with the sample docs while it is empty."""
    collection = DocumentCollection()
    collection.ensure_sample_docs()
    return collection


def fts_query(text: str) -> str:
    """Free text as a safe FTS5 query: its words, each a quoted string, joined with OR.

    Operators (`AND`, `NEAR(`, `*`, `-`, quotes, column filters) come back as plain words or go,
    so no input can be an FTS5 syntax error. OR rather than AND because a model's query is often
    a sentence: BM25 still ranks documents that match more of the words first.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError("the search query is empty")
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))
    if not words:
        raise UserError(f"the search query {text[:80]!r} has no words to search for")
    # "how do I ..." would match every document through "how", "do" and "i"; such words go
    # unless they are all the query has.
    terms = [w for w in words if w not in _STOP_WORDS] or words
    terms = terms[:MAX_QUERY_TERMS]
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def _open_error(path: Path, exc: Exception) -> ConfigError:
    return ConfigError(f"cannot open the document collection: {exc}", where=str(path))


class _Unindexable(Exception):
    """A file that add() skips, with the reason it reports."""


def _expand(paths: list[Path]) -> list[Path]:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no such file or directory: {', '.join(missing)}")
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(_walk(path)) if path.is_dir() else [path])
    return list(dict.fromkeys(files))


def _walk(root: Path) -> Iterator[Path]:
    """Text files under `root`, skipping hidden directories (.git, .venv) and symlinked ones."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if Path(name).suffix.lower() in TEXT_SUFFIXES and not name.startswith("."):
                yield Path(folder, name)


def _read_text(file: Path) -> str:
    try:
        if not file.is_file():
            raise _Unindexable("not a regular file")
        if file.stat().st_size > MAX_FILE_BYTES:
            raise _Unindexable(f"larger than {MAX_FILE_BYTES // 1_000_000} MB")
        data = file.read_bytes()
    except OSError as exc:
        raise _Unindexable(f"cannot read: {exc.strerror or exc}") from None
    if b"\x00" in data[:8192]:
        raise _Unindexable("binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unindexable(f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise _Unindexable("empty")
    return text


def _title(text: str, file: Path) -> str:
    """The first heading (Markdown `#`, or a setext/reST underline), else the file name."""
    lines = text.splitlines()[:200]
    fenced = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if fenced:
            continue
        if match := _ATX.match(line):
            return match.group(1)[:200]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and _UNDERLINE.match(following) and not _UNDERLINE.match(line):
            if len(following.strip()) >= min(3, len(line.strip())):
                return line.strip()[:200]
    return file.stem.replace("_", " ").replace("-", " ").strip() or file.name


# -- tools ------------------------------------------------------------------------------------
