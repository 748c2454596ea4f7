"""The embedded event store: every event of every run, appended to a local SQLite database.

Durability: the database runs in WAL mode. `append` commits one event before it returns;
`append_soon` (what the event stream uses inside an event loop) groups every event appended in the
same loop iteration into one transaction, committed at the start of the next iteration, and only
then hands each event back to its `CommitSink` to be published. Either way, an event becomes visible
to anyone (subscriber, listener, the stored trace) only after its commit, so a killed process
loses no event that anybody observed; group commit only shortens the window in which an event
exists but nobody can have seen it yet. With the default `synchronous=NORMAL` a power cut may lose
the last transactions; pass `durability="full"` to fsync every commit as well.

Beside the append-only events, one row per run in `run_owners` names the process that runs it and
its latest heartbeat (see `runtime/owner.py`): the only row ever updated, once per heartbeat. A
database from before that table gets it on open; one that cannot be written lists its runs
without owners (status `unknown` for a run with no end).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import platformdirs

from rolepool.core import ConfigError, Event, UserError, event_from_json
from rolepool.runtime.owner import Liveness, RunOwner, liveness

ENV_DB = "ROLEPOOL_EVENTS_DB"
ENV_HOME = "ROLEPOOL_HOME"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    span_id TEXT,
    parent_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, seq);
CREATE INDEX IF NOT EXISTS events_type ON events (type, ts);
"""
_OWNERS = """
CREATE TABLE IF NOT EXISTS run_owners (
    run_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    process_start REAL,
    heartbeat REAL NOT NULL,
    interval REAL NOT NULL,
    resumed_from TEXT UNIQUE
);
"""
_OWNER_COLUMNS = "run_id, pid, host, process_start, heartbeat, interval, resumed_from"
RunStatus = Literal["running", "interrupted", "stalled", "unknown", "finished", "failed"]
"""`unknown`: no end and no owner recorded (a run from before owners were recorded)."""

_RUN_TYPES = ("run.started", "run.finished", "run.failed")
_INSERT = (
    "INSERT INTO events (run_id, seq, type, ts, span_id, parent_id, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class CommitSink(Protocol):
    """Who is told when an event from `append_soon` is durable (or could not be stored)."""

    def committed(self, event: Event) -> None: ...

    def commit_failed(self, error: BaseException) -> None: ...


# an event waiting for its group commit, with the sink to tell and the context it was emitted in
_Pending = tuple[Event, "CommitSink", contextvars.Context | None]


def _row(event: Event) -> tuple[object, ...]:
    return (
        event.run_id,
        event.seq,
        event.type,
        event.ts,
        event.span_id,
        event.parent_id,
        event.model_dump_json(),
    )


def default_store_path() -> Path:
    """`$ROLEPOOL_EVENTS_DB`, else `$ROLEPOOL_HOME/events.db`, else the user's data directory."""
    if os.environ.get(ENV_DB):
        return Path(os.environ[ENV_DB]).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser() / "events.db"
    return Path(platformdirs.user_data_dir("rolepool")) / "events.db"


@dataclass(frozen=True)
class RunState:
    """How a run stands, for `trace show` and the viewer: its status and who resumed it."""

    status: RunStatus
    resumed_by: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """One row of `rolepool trace list`."""

    run_id: str
    started: float
    task: str
    agent: str | None
    status: RunStatus
    ended: float | None
    events: int
    resumed_from: str | None = None
    """The interrupted run this one continues."""
    resumed_by: str | None = None
    """The run that continues this one, once it was resumed."""
    tenant: str | None = None
    """The tenant the run belongs to, if any."""


class EventStore:
    """Append-only SQLite store of events. Safe to share between threads and processes."""

    def __init__(
        self, path: str | Path | None = None, *, durability: Literal["normal", "full"] = "normal"
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the event store: {exc}", where=str(self.path)) from exc
        try:
            self._db.executescript(_OWNERS)
            self._owners = True
        except sqlite3.Error:  # an old database opened read-only: no owners to show
            self._owners = False
        self._lock = threading.Lock()
        # events waiting for their group commit, per event loop (a loop runs in one thread);
        # asyncio rather than anyio here: docs/design-notes.md says why
        self._pending: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}

    def append(self, event: Event) -> None:
        """Commit one event; when this returns, the event survives a crash of this process."""
        self.flush()  # what this thread's loop has pending goes first: per-run order holds
        with self._lock:
            self._db.execute(_INSERT, _row(event))

    def append_soon(self, event: Event, sink: CommitSink) -> None:
        """Commit `event` with the others appended in this event-loop iteration, in one
        transaction at the start of the next iteration; then call `sink.committed(event)`.

        Outside an event loop there is nothing to group with: the event is committed now and the
        sink told before this returns. A failed commit calls `sink.commit_failed(error)` instead.
        `committed` runs in the context `append_soon` was called in (a copy), so what listens to
        publication (OTel: the current span) sees the emitter's context variables, as if it had
        run inside the emit.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._commit([(event, sink, None)])
            return
        batch = self._pending.get(loop)
        if batch is None:
            batch = self._pending[loop] = []
            loop.call_soon(self._flush_loop, loop)
        batch.append((event, sink, contextvars.copy_context()))

    def flush(self) -> None:
        """Commit now what this thread's event loop has pending (a run's end calls this)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flush_loop(loop)

    def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, None)
        if batch:
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for the batch, then publication in append order."""
        try:
            rows = [_row(event) for event, _, _ in batch]
            with self._lock:
                if len(rows) == 1:
                    self._db.execute(_INSERT, rows[0])
                else:
                    self._db.execute("BEGIN")
                    try:
                        self._db.executemany(_INSERT, rows)
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
        except Exception as exc:
            for sink in {id(s): s for _, s, _ in batch}.values():
                sink.commit_failed(exc)
            return
        for event, sink, context in batch:
            if context is None:
                sink.committed(event)
            else:
                context.run(sink.committed, event)

    def events(self, run_id: str, *, after_seq: int = -1, limit: int | None = None) -> list[Event]:
        """A run's events in emission order, those with `seq > after_seq`."""
        sql = "SELECT body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq, id"
        params: tuple[object, ...] = (run_id, after_seq)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [event_from_json(body) for (body,) in rows]

    def events_since(self, types: tuple[str, ...], since: float) -> list[Event]:
        """Events of `types` newer than `since` across runs, in run order (run_id, seq); served
        by the (type, ts) index, for stats over time windows."""
        marks = ",".join("?" * len(types))
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM events WHERE type IN ({marks}) AND ts >= ? ORDER BY run_id, seq",
                (*types, since),
            ).fetchall()
        return [event_from_json(body) for (body,) in rows]

    def find_run(self, prefix: str) -> list[str]:
        """Run ids that start with `prefix`, so the CLI accepts an unambiguous prefix."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT run_id FROM events WHERE substr(run_id, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        return [r[0] for r in rows]

    def claim_run(self, owner: RunOwner) -> None:
        """Record `owner` as the process running `owner.run_id`. A run resuming another claims
        it: a second claim on the same interrupted run is refused (`UserError`), so two resumes
        can never both replay it. A run id used again (a caller's own ids) takes the row over."""
        try:
            with self._lock:
                self._db.execute(
                    f"INSERT INTO run_owners ({_OWNER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (run_id) DO UPDATE SET pid = excluded.pid, host = excluded.host,"
                    " process_start = excluded.process_start, heartbeat = excluded.heartbeat,"
                    " interval = excluded.interval, resumed_from = excluded.resumed_from",
                    (owner.run_id, owner.pid, owner.host, owner.process_start,
                     owner.heartbeat, owner.interval, owner.resumed_from),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            by = self.resumed_by(owner.resumed_from or "")
            raise UserError(
                f"run {owner.resumed_from} was already resumed as {by}; resume that run instead"
            ) from None

    def beat(self, run_id: str, now: float) -> None:
        """The owner's heartbeat: one UPDATE of the run's owner row."""
        with self._lock:
            self._db.execute("UPDATE run_owners SET heartbeat = ? WHERE run_id = ?", (now, run_id))

    def owner(self, run_id: str) -> RunOwner | None:
        """Who runs (or ran) `run_id`; None for a run from before owners were recorded."""
        if not self._owners:
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT {_OWNER_COLUMNS} FROM run_owners WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else RunOwner(*row)

    def resumed_by(self, run_id: str) -> str | None:
        """The run that resumed `run_id`, if one did."""
        if not self._owners:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT run_id FROM run_owners WHERE resumed_from = ?", (run_id,)
            ).fetchone()
        return None if row is None else row[0]

    def status(self, run_id: str) -> RunStatus:
        """`finished` or `failed` by the run's last event, else what its owner says."""
        with self._lock:
            end = self._end(run_id)
        return _status(end, self.owner(run_id))

    def state(self, run_id: str) -> RunState:
        return RunState(self.status(run_id), self.resumed_by(run_id))

    def _end(self, run_id: str) -> tuple[str, float] | None:
        return self._db.execute(
            "SELECT type, ts FROM events WHERE run_id = ? AND type IN (?, ?)"
            " ORDER BY seq DESC LIMIT 1",
            (run_id, *_RUN_TYPES[1:]),
        ).fetchone()

    def runs(self, limit: int = 50, *, tenant: str | None = None) -> list[RunSummary]:
        """The most recent runs first, with their status; with `tenant`, only that tenant's."""
        with self._lock:
            query = "SELECT run_id, ts, body FROM events WHERE type = 'run.started'"
            if tenant is not None:  # the tenant is in the body; JSON1 reads it where it is
                query += " AND json_extract(body, '$.tenant') = ?"
            started = self._db.execute(
                query + " ORDER BY ts DESC LIMIT ?",
                (tenant, limit) if tenant is not None else (limit,),
            ).fetchall()
            out = []
            for run_id, ts, body in started:
                end = self._end(run_id)
                (count,) = self._db.execute(
                    "SELECT COUNT(*) FROM events WHERE run_id = ?", (run_id,)
                ).fetchone()
                first = event_from_json(body)
                out.append(
                    RunSummary(
                        run_id=run_id,
                        started=ts,
                        task=getattr(first, "task", ""),
                        agent=getattr(first, "agent", None) or getattr(first, "workflow", None),
                        status=end[0].split(".")[1] if end else "unknown",  # type: ignore[arg-type]
                        ended=end[1] if end else None,
                        events=count,
                        resumed_from=getattr(first, "resumed_from", None),
                        tenant=first.tenant,
                    )
                )
        return [self._with_owner(summary) for summary in out]

    def _with_owner(self, summary: RunSummary) -> RunSummary:
        """The summary with what the run's owner row says: liveness and who resumed it."""
        owner = None if summary.ended is not None else self.owner(summary.run_id)
        status = summary.status if owner is None else _status(None, owner)
        by = self.resumed_by(summary.run_id)
        return dataclasses.replace(summary, status=status, resumed_by=by)

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status(end: tuple[str, float] | None, owner: RunOwner | None) -> RunStatus:
    if end is not None:
        return "finished" if end[0] == "run.finished" else "failed"
    if owner is None:
        return "unknown"
    state: Liveness = liveness(owner)
    return state
