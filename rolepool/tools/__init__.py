"""Tools: `@tool`, schemas from type hints, argument validation, and tool-call parsing."""

from rolepool.tools.parsing import ParseFailure, ParseResult, parse_tool_calls
from rolepool.tools.results import format_result
from rolepool.tools.tool import Tool, tool
from rolepool.tools.validation import ValidationIssue, check_schema, validate_arguments

__all__ = [
    "ParseFailure",
    "ParseResult",
    "Tool",
    "ValidationIssue",
    "check_schema",
    "format_result",
    "parse_tool_calls",
    "tool",
    "validate_arguments",
]
