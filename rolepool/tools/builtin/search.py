"""The search role's tools over a `DocumentCollection`: `search_docs` and `read_doc`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from rolepool.core import RunContext, ToolError, UserError
from rolepool.tools.builtin.docs import DocumentCollection, default_collection
from rolepool.tools.tool import tool


def collection_for(ctx: RunContext | None) -> DocumentCollection | None:
    """The collection the run's deps carry (`deps`, `deps.docs` or `deps["docs"]`), if any."""
    deps: Any = ctx.deps if ctx is not None else None
    if deps is None:
        return None
    candidates = [deps, getattr(deps, "docs", None)]
    if isinstance(deps, dict):
        candidates.append(deps.get("docs"))
    return next((c for c in candidates if isinstance(c, DocumentCollection)), None)


def _with_collection(ctx: RunContext, name: str, use: Callable[[DocumentCollection], str]) -> str:
    """Run `use` on the run's collection, or on the default one (opened and closed per call, so
    no connection outlives the worker thread and env changes take effect)."""
    given = collection_for(ctx)
    try:
        if given is not None:
            return use(given)
        with default_collection() as collection:
            return use(collection)
    except UserError as exc:  # a bad query or id is the model's to fix, as a tool error
        raise ToolError(str(exc), tool=name) from None


@tool(name="search_docs", description="Search the document collection.", roles={"search"})
def search_docs(ctx: RunContext, query: str, top_k: Annotated[int, Field(ge=1, le=20)] = 5) -> str:
    """One line per hit, `[doc_id] title — snippet`: the `[doc_id] title` form is what the
    reference models saw in training, and the snippet lets the model pick without reading.

    Args:
        query: What to look for.
        top_k: How many results.
    """

    def run(collection: DocumentCollection) -> str:
        hits = collection.search(query, top_k)
        if not hits:
            return "No results."
        return "\n".join(f"[{h.doc_id}] {h.title} — {h.snippet}" for h in hits)

    return _with_collection(ctx, "search_docs", run)


@tool(name="read_doc", description="Read one document by its id.", roles={"search"})
def read_doc(ctx: RunContext, doc_id: str) -> str:
    """The document's title line and text (capped, with a marker when cut).

    Args:
        doc_id: The document id.
    """

    def run(collection: DocumentCollection) -> str:
        doc = collection.read(doc_id)
        return f"[{doc.doc_id}] {doc.title}\n\n{doc.text}"

    return _with_collection(ctx, "read_doc", run)
