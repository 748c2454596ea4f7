"""The Berkeley Function Calling Leaderboard (BFCL v4) as rolepool suites, scored as BFCL scores
them: `data` reads BFCL's files (from `bfcl-eval` or a directory), `schema` turns its function
docs into tools, `checker` gives BFCL's single-turn verdict, `multi_turn` runs and scores the
multi-turn categories on BFCL's `backends`, `groups` makes the leaderboard's groups."""

from rolepool.evals.bfcl.data import (
    BFCL_ENV,
    CATEGORIES,
    GROUPS,
    LIVE,
    MULTI_TURN_CATEGORIES,
    NON_LIVE,
    expected_calls,
    find_bfcl_dir,
    installed_bfcl_data,
    load_bfcl,
)
from rolepool.evals.bfcl.schema import checked_tool, convert_function, to_json_schema

__all__ = [
    "BFCL_ENV",
    "CATEGORIES",
    "GROUPS",
    "LIVE",
    "MULTI_TURN_CATEGORIES",
    "NON_LIVE",
    "checked_tool",
    "convert_function",
    "expected_calls",
    "find_bfcl_dir",
    "installed_bfcl_data",
    "load_bfcl",
    "to_json_schema",
]
