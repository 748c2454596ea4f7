"""argparse types for every option of the `rolepool` command: numbers within bounds, paths
checked before any work starts, and errors that are one line.

A bad value raises `argparse.ArgumentTypeError`, which `OneLineParser` prints as one line,
`error: argument --x: MESSAGE (see rolepool CMD --help)` (exit code 2, no traceback); text that
is not a number at all is "invalid int value: 'x'", as argparse words it.
Each type says what it checks in `kind`, so tests/test_cli_inputs.py can find every option of the
command from the parser itself and try the edges of its kind. A leaf module: it imports nothing
of rolepool, so the commands of every layer may use it.
"""

from __future__ import annotations

import argparse
import codecs
import math
import os
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NoReturn

MAX_COUNT = 1_000_000
"""The largest count an option takes unless it says otherwise: far above any real use, far below
what overflows SQLite, torch or a Python list."""
SEED_MAX = 2**64 - 1  # torch and numpy take seeds up to 64 bits
_UTF8_CHUNK = 1 << 20


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line in the style of the command's other errors,
    `error: MESSAGE (see PROG --help)`, without the usage block; subcommands made with
    `add_subparsers` are of this class too."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"error: {text} (see {self.prog} --help)\n")


def _shown(value: object, limit: int = 40) -> str:
    """A value as an error message echoes it: a 5,000-digit number is cut, not printed whole."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(bound: float) -> str:
    """A bound as people write it: 2592000, not 2.592e+06."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@dataclass(frozen=True)
class Int:
    """A whole number from `least` to `most`."""

    least: int
    most: int = MAX_COUNT
    kind = "int"
    __name__ = "int"  # argparse's word in "invalid int value"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # argparse's words, with a 5,000-digit text cut short
            raise argparse.ArgumentTypeError(f"invalid int value: {_shown(text)!r}") from None
        if value < self.least:
            raise argparse.ArgumentTypeError(f"must be at least {self.least}, not {_shown(value)}")
        if value > self.most:
            raise argparse.ArgumentTypeError(f"must be at most {self.most}, not {_shown(value)}")
        return value


def count(most: int = MAX_COUNT) -> Int:
    """A positive count: 1 to `most`."""
    return Int(1, most)


SEED = Int(0, SEED_MAX)


@dataclass(frozen=True)
class Float:
    """A finite number in a range; `low` is excluded (`above`) unless `low_included`, `high` is
    included (`at most`) unless `high_excluded`."""

    low: float
    high: float
    low_included: bool = False
    high_excluded: bool = False
    kind = "float"
    __name__ = "float"

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {_shown(text)!r}") from None
        too_low = value < self.low if self.low_included else value <= self.low
        too_high = value >= self.high if self.high_excluded else value > self.high
        if not math.isfinite(value) or too_low or too_high:
            low, high = _number(self.low), _number(self.high)
            lower = f"at least {low}" if self.low_included else f"above {low}"
            upper = f"below {high}" if self.high_excluded else f"at most {high}"
            raise argparse.ArgumentTypeError(f"must be {lower} and {upper}, not {value}")
        return value


@dataclass(frozen=True)
class Seconds:
    """A duration as `parse` reads it ('90s', '1h'), at most `most` seconds; kept as text."""

    parse: Callable[[str], float]
    most: float
    errors: tuple[type[Exception], ...] = (ValueError,)
    """What `parse` raises for text it cannot read."""
    kind = "duration"
    __name__ = "duration"

    def __call__(self, text: str) -> str:
        try:
            seconds = self.parse(text)
        except self.errors as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not seconds <= self.most:  # also NaN and infinity
            raise argparse.ArgumentTypeError(f"{_shown(text)!r}: at most {_number(self.most)} s")
        return text


@dataclass(frozen=True)
class Names:
    """A comma-separated list of at least one name; kept as text."""

    kind = "names"
    __name__ = "names"

    def __call__(self, text: str) -> str:
        if not [name for name in text.split(",") if name.strip()]:
            raise argparse.ArgumentTypeError("give at least one name, e.g. a,b")
        return text


def _fail(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def _check_utf8(path: Path, text: str, what: str) -> None:
    """Decode the whole file in chunks: the first bad byte is reported here, not as a traceback
    from whatever reads the file later."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_UTF8_CHUNK):
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        _fail(f"cannot read {what} {text}: not UTF-8 text (near byte {offset + exc.start})")
    except OSError as exc:
        _fail(f"cannot read {what} {text}: {exc.strerror or exc}")


class _PathType:
    """What argparse calls on a path option's text: `check` refuses a bad path; the text is kept
    as given (the commands take strings), `~` expanded only to check it."""

    kind: ClassVar[str] = "path"
    __name__ = "path"

    def __call__(self, text: str) -> str:
        if not text.strip():
            _fail("an empty path; name a file or directory")
        self.check(Path(text).expanduser(), text)
        return text

    def check(self, path: Path, text: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class InputFile(_PathType):
    """An existing, readable regular file; UTF-8 text throughout when `utf8`."""

    what: str = "file"
    utf8: bool = False
    kind = "input-file"

    def check(self, path: Path, text: str) -> None:
        if path.is_dir():
            _fail(f"cannot read {self.what} {text}: it is a directory")
        if not path.exists():
            _fail(f"no such file: {text}" if self.what == "file" else f"no {self.what} at {text}")
        if not path.is_file():
            _fail(f"cannot read {self.what} {text}: not a regular file")
        if not os.access(path, os.R_OK):
            _fail(f"cannot read {self.what} {text}: permission denied")
        if self.utf8:
            _check_utf8(path, text, self.what)


TEXT_FILE = InputFile(utf8=True)
"""A pool.toml, a suite or a replay file: read as UTF-8 text."""


@dataclass(frozen=True)
class NameOrFile:
    """The name of a built-in thing (one of `names()`, asked only when needed) or a file that
    `file` accepts. Kept as text."""

    names: Callable[[], Collection[str]]
    what: str
    file: InputFile = TEXT_FILE
    kind = "input-file"
    __name__ = "name or file"

    def __call__(self, text: str) -> str:
        names = self.names()
        if text in names:
            return text
        if text.strip() and not Path(text).expanduser().exists():
            known = ", ".join(names)
            _fail(f"unknown {self.what} {text!r}: not a built-in {self.what} ({known}) nor a file")
        return self.file(text)


@dataclass(frozen=True)
class InputDir(_PathType):
    """An existing directory that can be listed."""

    what: str = "directory"
    kind = "input-dir"

    def check(self, path: Path, text: str) -> None:
        if not path.exists():
            _fail(f"no {self.what} at {text}")
        if not path.is_dir():
            _fail(f"{text} is not a directory ({self.what} expected)")
        if not os.access(path, os.R_OK | os.X_OK):
            _fail(f"cannot read {self.what} {text}: permission denied")


@dataclass(frozen=True)
class InputPath(_PathType):
    """An existing file or directory (what is in it is for the command to judge)."""

    kind = "input-path"

    def check(self, path: Path, text: str) -> None:
        if not path.exists():
            _fail(f"no such file or directory: {text}")


def _writable_dir(directory: Path, text: str) -> None:
    """Whether a file can be made in `directory`, by making one and removing it: `os.access`
    says yes to root everywhere, also in /proc and on read-only mounts."""
    if not directory.exists():
        _fail(f"cannot write {text}: no directory {directory} (create it first)")
    if not directory.is_dir():
        _fail(f"cannot write {text}: {directory} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rolepool-probe-", dir=directory)
    except OSError as exc:
        _fail(f"cannot write in {directory}: {exc.strerror or exc}")
    os.close(fd)
    os.unlink(probe)


@dataclass(frozen=True)
class OutputFile(_PathType):
    """A file to write: an existing regular file, or a new one in a writable directory that
    exists."""

    kind = "output-file"

    def check(self, path: Path, text: str) -> None:
        if path.is_dir():
            _fail(f"cannot write {text}: it is a directory, not a file")
        if not path.exists():
            _writable_dir(path.parent, text)
        elif not path.is_file():
            _fail(f"cannot write {text}: not a regular file")
        elif not os.access(path, os.W_OK):
            _fail(f"cannot write {text}: permission denied")


@dataclass(frozen=True)
class OutputDir(_PathType):
    """A directory to write into: an existing writable one, or a new one that the command makes
    with its missing parents (`mkdir -p`, as `--out runs/quick` expects), so the nearest
    directory that exists must be writable. Nothing is created here."""

    kind = "output-dir"

    def check(self, path: Path, text: str) -> None:
        if path.exists() and not path.is_dir():
            _fail(f"cannot write into {text}: it is a file, not a directory")
        nearest = next(p for p in (path, *path.parents) if p.exists())
        _writable_dir(nearest, text)
