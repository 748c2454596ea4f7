"""A role-aware test worker for workflow tests: answers like a well-behaved model of each role."""

from __future__ import annotations

from collections.abc import Callable

from rolepool import FunctionWorker, ToolCall
from rolepool.core import Request

Plan = Callable[[Request], object]


def calls(*pairs: tuple[str, dict]) -> list[ToolCall]:
    return [ToolCall(id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(pairs)]


def finish(answer: str) -> list[ToolCall]:
    return calls(("finish", {"answer": answer}))


def last(request: Request):
    return request.messages[-1]


def role_worker(planner: Plan | None = None, **roles: Plan) -> FunctionWorker:
    """`planner` and each role's `fn(request)`; a role's default runs its first tool once on the
    task, then finishes with the tool's result."""

    def default(role: str) -> Plan:
        first = {
            "coder": lambda t: ("run_python", {"code": "print(2 + 3)"}),
            "search": lambda t: ("search_docs", {"query": "routing policy", "top_k": 2}),
            "writer": lambda t: ("write_section", {"title": "Results", "body": t}),
        }[role]

        def fn(request: Request):
            if last(request).role == "user":
                return calls(first(last(request).content))
            shown = last(request).content.split("--- stdout ---\n")[-1]
            return finish(shown.splitlines()[0][:200] if shown.strip() else "nothing")

        return fn

    def default_planner(request: Request):
        if last(request).role == "user":
            return calls(
                ("assign", {"role": "coder", "task": "print 2 + 3"}),
                ("assign", {"role": "search", "task": "routing policy"}),
            )
        results = [m.content for m in request.messages if m.role == "tool"]
        return finish("; ".join(results))

    table = {"planner": planner or default_planner}
    for role in ("coder", "search", "writer"):
        table[role] = roles.get(role) or default(role)

    async def answer(request: Request):
        reply = table[request.role](request)
        if hasattr(reply, "__await__"):
            reply = await reply
        return reply

    return FunctionWorker(answer, name="roles")


def meeting_steps(*roles: str) -> dict[str, Plan]:
    """Role scripts whose first turns wait until every one of `roles` has started: a test that
    uses them fails (after 20 s) unless those steps really run at the same time."""
    import anyio

    arrived: set[str] = set()
    everyone = anyio.Event()
    tools = {
        "coder": ("run_python", {"code": "print(2 + 3)"}),
        "search": ("search_docs", {"query": "routing policy", "top_k": 2}),
    }

    def script(role: str) -> Plan:
        async def fn(request: Request):
            if last(request).role == "user":
                arrived.add(role)
                if arrived >= set(roles):
                    everyone.set()
                with anyio.fail_after(20):
                    await everyone.wait()
                return calls(tools[role])
            shown = last(request).content.split("--- stdout ---\n")[-1]
            return finish(shown.splitlines()[0][:200])

        return fn

    return {role: script(role) for role in roles}
