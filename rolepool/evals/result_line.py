"""`ResultLine`: one line of `results.jsonl`, the record every later step reads (summary, reports,
figures, resume), typed so no reader looks a field up by a string key.

The file format is the one earlier versions wrote, byte for byte: the fields are declared in the
order they were written and `to_json()` writes them with the same JSON settings. A line holds the
keys it was given and no others (`exclude_unset`): the runner sets every field, a replay's line has
no `error_kind` (as before), and a line read back and written again is the same bytes, whichever
version wrote it (tests hold real lines to that). A field a line lacks reads as the default every
reader used before the fields were typed; keys this version does not know are kept as they are
(`extra="allow"`), so a line from a newer version survives.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rolepool.core import ToolCall, Usage
from rolepool.evals.cases import Attempt
from rolepool.evals.scoring import Scores

MAX_TEXT = 4000  # characters of model text kept per attempt

ErrorKind = Literal["refused", "worker", "run"]
"""Why a case ended in an error: `refused`, the prompt does not fit the model (not retried);
`worker`, the worker failed (a resumed eval retries the case); `run`, the model's own behaviour
ended the run (scored as it is)."""

Key = tuple[str, str, str]  # suite, case id, worker


class CallRecord(BaseModel):
    """A tool call as a result line keeps it: no call id (the run's events have those)."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, call: ToolCall) -> CallRecord:
        return cls(name=call.name, arguments=call.arguments)


class AttemptRecord(BaseModel):
    """One attempt of the scored turn (see `cases.Attempt`), its text cut to `MAX_TEXT`."""

    parse_error: str | None = None
    invalid: list[str] = Field(default_factory=list)
    text: str = ""
    calls: list[CallRecord] = Field(default_factory=list)

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptRecord:
        return cls(
            parse_error=attempt.parse_error,
            invalid=list(attempt.invalid),
            text=attempt.text[:MAX_TEXT],
            calls=[CallRecord.of(c) for c in attempt.calls],
        )


class ResultLine(BaseModel):
    """One case on one worker: what it was, how it scored, what the model did, what it cost."""

    model_config = ConfigDict(extra="allow")

    suite: str
    case: str
    """The case id."""
    worker: str
    """The name the results and report use for the worker (a replay: the file's name)."""
    model: str = ""
    architecture: str = "unknown"
    role: str | None = None
    category: str | None = None
    scores: Scores
    calls: list[CallRecord] = Field(default_factory=list)
    """The final attempt's calls."""
    attempts: list[AttemptRecord] = Field(default_factory=list)
    error: str | None = None
    """`ErrorType: message` when the run ended without an answer."""
    turns: int = 0
    """Model turns (a prompt asked again after a refusal is the same turn)."""
    latency: float | int = 0
    """Model seconds summed over the case's calls. `int` only for the `0` of a case without a
    model call (a replay), which earlier versions wrote as `0`: kept so such lines round-trip."""
    wall: float = 0.0
    """Seconds the case took end to end."""
    started: float | None = None
    """Unix time the case started; None for a replay."""
    ended: float | None = None
    usage: Usage = Field(default_factory=Usage)
    expert_load: list[list[int]] | None = None
    """Tokens per `[layer][expert]` summed over the case's calls; None for a dense model."""
    run_id: str | None = None
    """The run behind the line, in the eval directory's `events.db`."""
    error_kind: ErrorKind | None = None
    decoding: str | None = None
    """The decoding mode of a constrained run (`rolepool.evals.decoding`); unset for free."""

    @property
    def key(self) -> Key:
        return self.suite, self.case, self.worker

    @property
    def case_key(self) -> tuple[str, str]:
        return self.suite, self.case

    def to_json(self) -> str:
        """The line as written to `results.jsonl`, without its newline: the keys it was given."""
        record = self.model_dump(exclude_unset=True)
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
