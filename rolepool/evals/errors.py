"""The error a malformed suite raises."""

from __future__ import annotations

from rolepool.core import UserError


class SuiteError(UserError):
    """A suite file (or BFCL data file) is malformed; `where` is `FILE:LINE`."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")
