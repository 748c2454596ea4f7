"""From MCP wire types to rolepool's: a listed tool becomes a `Tool`, a result becomes text.

Everything a server sends is untrusted input. A tool whose schema is broken or huge, or whose name
cannot be a rolepool tool name, is left out (with the reason kept for `MCPServer.skipped`) rather
than failing the whole server; a result is cut to a bound before it is formatted.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rolepool.core import ConfigError, ToolError
from rolepool.tools.tool import Tool

if TYPE_CHECKING:
    import mcp_types as types

MAX_SCHEMA_CHARS = 100_000
"""A larger `inputSchema` is refused: it would fill the prompt on every turn."""
MAX_DESCRIPTION_CHARS = 2_000
MAX_RESULT_CHARS = 1_000_000
"""A result is cut here before rolepool formats it; the run's `max_result_chars` cuts further."""

_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")

Caller = Callable[[str, dict[str, Any]], Awaitable[str]]


class MCPTool(Tool):
    """A tool served by an MCP server: `server` names it in events and spans, `remote_name` is
    the name the server knows it by (the rolepool name may carry a prefix)."""

    remote_name: str

    def __init__(
        self,
        name: str,
        listed: types.Tool,
        call: Caller,
        *,
        server: str,
        roles: Iterable[str] | None,
        timeout: float,
        needs_approval: bool,
    ) -> None:
        remote = listed.name

        async def run(**arguments: Any) -> str:
            return await call(remote, arguments)

        description = (listed.description or listed.title or "")[:MAX_DESCRIPTION_CHARS]
        super().__init__(
            name,
            description,
            listed.input_schema,
            run,
            roles=roles,
            timeout=timeout,
            needs_approval=needs_approval,
        )
        self.server = server
        self.remote_name = remote


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a tool name matches any shell-style pattern (`get_*`, `git_*`, `*`)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def allowed_roles(
    name: str, allow: Mapping[str, Sequence[str]] | None
) -> frozenset[str] | None | bool:
    """The roles that may call the tool: `None` for every role, `False` for no role at all."""
    if allow is None:
        return None
    roles = frozenset(role for role, patterns in allow.items() if matches(name, patterns))
    return roles or False


def exposed_name(prefix: str, remote: str) -> str:
    """The name the model sees. The default prefix is the server's name and a dot, so tools of
    two servers, or a server's tool and a built-in, can never share a name."""
    name = f"{prefix}{remote}"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            "is not 1-64 letters, digits, '_', '.' or '-' (with the prefix)",
            where=f"tool name {name[:80]!r}",
        )
    return name


def check_listed(listed: types.Tool) -> None:
    """Refuse a schema no model should be shown; jsonschema checks the rest in `Tool`."""
    size = len(json.dumps(listed.input_schema, default=str))
    if size > MAX_SCHEMA_CHARS:
        raise ConfigError(
            f"inputSchema is {size:,} characters (limit {MAX_SCHEMA_CHARS:,})",
            where=f"tool {listed.name[:80]!r}",
        )


def result_text(result: types.CallToolResult, tool: str) -> str:
    """What the model reads: `structuredContent` as JSON when the server sent it, else the text
    blocks; binary content as a placeholder naming its type and size. An `isError` result is a
    `ToolError`, which the loop shows the model as the call's error."""
    import mcp_types as types

    parts = [
        _block_text(block)
        for block in result.content
        if result.structured_content is None or not isinstance(block, types.TextContent)
    ]
    if result.structured_content is not None:
        structured = json.dumps(result.structured_content, ensure_ascii=False, default=str)
        parts.insert(0, structured)
    text = "\n".join(part for part in parts if part)
    if len(text) > MAX_RESULT_CHARS:
        text = f"{text[:MAX_RESULT_CHARS]}\n…[truncated: {len(text):,} chars from the server]"
    if result.is_error:
        raise ToolError(text or "the server reported an error and said nothing more", tool=tool)
    return text


def _block_text(block: Any) -> str:
    import mcp_types as types

    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, (types.ImageContent, types.AudioContent)):
        return f"[{block.type}: {block.mime_type}, {_decoded_size(block.data):,} bytes]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        text = getattr(resource, "text", None)
        if isinstance(text, str):
            return text
        size = _decoded_size(getattr(resource, "blob", "") or "")
        return f"[resource {resource.uri}: {resource.mime_type or 'binary'}, {size:,} bytes]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link {block.uri}: {block.mime_type or 'unknown type'}]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _decoded_size(data: str) -> int:
    """The byte size of base64 `data` without decoding it."""
    return len(data) * 3 // 4 - data[-2:].count("=") if data else 0
