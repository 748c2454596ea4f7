"""`results.jsonl`: one line per case x worker, appended as each case finishes, so an eval can be
killed at any moment and resumed.

Each line is written with a single `write` of the whole line and flushed (and fsynced) before the
next case is recorded, so a kill leaves at most one torn line: the bytes after the last newline.
On the next open those bytes are moved to `results.torn` (never silently dropped) and the file is
cut back to its last complete line; that case simply runs again. A case whose worker failed is
retried on the next run: its new line is appended, and readers take the last line per case. A
complete line that is not valid JSON was not written by us (a hand edit, another tool): that is an
error naming the line, not something to repair. An exclusive lock on the directory stops two
evals appending to one file.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from rolepool.core import UserError
from rolepool.evals.result_line import Key, ResultLine

RESULTS = "results.jsonl"
TORN = "results.torn"
LOCK = ".rolepool-eval.lock"
REQUIRED = ("suite", "case", "worker", "scores")


class ResultsFile:
    """The results of one eval directory: read (repairing a torn tail), then append."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / RESULTS
        self._lock: IO[str] | None = None
        self._out: IO[bytes] | None = None
        self.records: list[ResultLine] = []
        self.repaired = 0  # bytes of a torn last line moved aside on open

    def __enter__(self) -> ResultsFile:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = (self.dir / LOCK).open("w")
        except OSError as exc:
            raise UserError(f"cannot use {self.dir} as the eval output directory: {exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise UserError(
                f"another rolepool eval is writing to {self.dir}; wait for it or use another --out"
            ) from None
        self.records = self._read_and_repair()
        self._out = self.path.open("ab")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def latest(self) -> list[ResultLine]:
        """One line per case x worker: the last one written (a retried case appends a newer line
        and the older one stays in the file, so nothing is ever rewritten)."""
        return list({r.key: r for r in self.records}.values())

    def done(self) -> set[Key]:
        """What a resumed eval skips: every case x worker except those whose worker failed
        (a server down, a timeout): those are retried."""
        return {r.key for r in self.latest() if r.error_kind != "worker"}

    def append(self, record: ResultLine) -> None:
        """Write one complete line and make it durable before returning."""
        assert self._out is not None, "ResultsFile is not open"
        line = record.to_json() + "\n"
        self._out.write(line.encode())
        self._out.flush()
        os.fsync(self._out.fileno())
        self.records.append(record)

    def _read_and_repair(self) -> list[ResultLine]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            with (self.dir / TORN).open("ab") as torn:
                torn.write(data[cut:] + b"\n")
            with self.path.open("r+b") as fh:
                fh.truncate(cut)
            self.repaired = len(data) - cut
        return [self._parse(i, line) for i, line in enumerate(data[:cut].splitlines(), 1) if line]

    def _parse(self, lineno: int, line: bytes) -> ResultLine:
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(
                f"{self.path}:{lineno}: not a JSON line ({exc}); this file was not written by "
                "rolepool eval as it is: fix or remove that line, or use another --out"
            ) from None
        missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
        if missing:
            raise UserError(
                f"{self.path}:{lineno}: not an eval result (missing {', '.join(missing)}); "
                "use another --out"
            )
        try:
            return ResultLine.model_validate(record)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise UserError(
                f"{self.path}:{lineno}: not an eval result ({where}: {problem['msg']}); "
                "use another --out"
            ) from None


def load_results(directory: str | Path) -> list[ResultLine]:
    """Read a results file without repairing or locking it (reports, tests)."""
    path = Path(directory) / RESULTS
    if not path.exists():
        raise UserError(f"no {RESULTS} in {directory}")
    out = []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    for lineno, line in enumerate(complete.splitlines(), 1):
        if line:
            out.append(ResultsFile(directory)._parse(lineno, line))
    return out
