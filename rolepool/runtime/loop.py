"""The agent run loop: ask the model, parse, validate, run the valid calls, feed results back.

One turn is one model call. An invalid call (unparseable, unknown tool, another role's tool, or
arguments that break the schema) is never executed: its error goes back to the model as a tool
message, and a run of consecutive invalid turns longer than `max_retries` ends the agent with
`ModelBehaviorError`. Every step is an event, with `attempt` counting consecutive retries, so evals
can tell first-try validity from validity after feedback.

A prompt the worker refuses (`RequestRefused`: longer than the model's context) is asked again with
the oldest tool result shown as a one-line marker, then the next oldest, until it is served or
nothing is left to elide: first the results before the latest valid call, then the unreadable
replies the model is retrying from, oldest first (a reply that ran on to the token limit can fill
a small model's context by itself; the feedback that follows it still says what was wrong). The
results of the latest valid call are never elided. The agent's transcript keeps every message
whole; `ModelRequested.elided` says how many a request left out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from rolepool.core import (
    Completion,
    Decoding,
    MaxTurnsExceeded,
    Message,
    ModelBehaviorError,
    Request,
    RequestRefused,
    Sampling,
    ToolCall,
    Usage,
    new_span_id,
)
from rolepool.core.events import (
    AgentFinished,
    AgentStarted,
    ModelCompleted,
    ModelRequested,
    ToolCallInvalid,
)
from rolepool.core.messages import assistant, system, tool_message, user
from rolepool.pools.worker import Worker
from rolepool.runtime.failures import clean_completion, unique_ids, worker_error
from rolepool.runtime.replay import prompt_digest
from rolepool.runtime.run import BodyResult, RunScope
from rolepool.runtime.tool_calls import InvalidCall, ToolCalls, ValidCall
from rolepool.tools.parsing import argument_problem, parse_tool_calls
from rolepool.tools.tool import Tool


@dataclass(frozen=True)
class LoopInputs:
    """What the loop needs from an agent; `agents.Agent` builds it."""

    name: str
    role: str
    instructions: str
    tools: Sequence[Tool] = ()
    max_turns: int | None = None
    max_retries: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    decoding: Decoding = field(default_factory=Decoding)
    """What the worker may constrain in the model's replies (`Decoding`); free by default."""
    forbidden_tools: frozenset[str] = frozenset()
    """Names of other roles' tools: calling one is `forbidden` rather than `unknown_tool`."""


class AgentLoop:
    """One agent's turns inside a run. Use `run_agent` rather than this class."""

    def __init__(self, inputs: LoopInputs, worker: Worker, scope: RunScope, parent_id: str) -> None:
        self.inputs = inputs
        self.worker = worker
        self.scope = scope
        self.span_id = new_span_id()
        self.parent_id = parent_id
        self.tools = {t.name: t for t in inputs.tools}
        self.tool_calls = ToolCalls(  # scope, agent, role, parent span, tools, forbidden
            scope, inputs.name, inputs.role, self.span_id, self.tools, inputs.forbidden_tools
        )
        # once per agent, not per turn (`Tool.spec()` copies the schema); requests share them
        self.tool_specs = [t.spec() for t in inputs.tools]
        self.max_turns = inputs.max_turns or scope.limits.max_turns
        self.max_retries = (
            inputs.max_retries if inputs.max_retries is not None else scope.limits.max_retries
        )
        self.retries = 0  # consecutive invalid turns so far
        self.usage = Usage()
        self.messages: list[Message] = []
        self.elided = 0  # requests show this many of the oldest tool results as a marker
        # Messages from this index on answer the latest turn whose calls were all valid; its
        # results are never elided: what the model acts on, also while it retries an invalid
        # reply (the unreadable replies of that retry may be).
        self.kept_from = 0
        self.unreadable_at: list[int] = []  # where the unreadable replies are in `messages`

    def _base(self) -> dict[str, object]:
        return {"run_id": self.scope.run_id, "parent_id": self.span_id, "agent": self.inputs.name}

    async def run(self, messages: list[Message]) -> BodyResult:
        self.messages = messages
        self.kept_from = max(
            (i for i, m in enumerate(messages) if m.role == "assistant" and m.tool_calls),
            default=0,
        )
        started = time.perf_counter()
        task = next((m.content for m in reversed(messages) if m.role == "user"), "")
        self.scope.emit(
            AgentStarted(
                run_id=self.scope.run_id,
                span_id=self.span_id,
                parent_id=self.parent_id,
                agent=self.inputs.name,
                role=self.inputs.role,
                task=task,
            )
        )
        output: str | None = None
        error: BaseException | None = None
        turn = 0
        try:
            for turn in range(1, self.max_turns + 1):
                output = await self._turn(turn)
                if output is not None:
                    return BodyResult(output=output, messages=self.messages, turns=turn)
            raise MaxTurnsExceeded(
                f"agent {self.inputs.name!r} reached max_turns={self.max_turns} "
                "without a final answer"
            )
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.scope.emit(
                AgentFinished(
                    run_id=self.scope.run_id,
                    span_id=self.span_id,
                    parent_id=self.parent_id,
                    agent=self.inputs.name,
                    role=self.inputs.role,
                    output=output,
                    turns=turn,
                    usage=self.usage,
                    duration=time.perf_counter() - started,
                    error=None if error is None else f"{type(error).__name__}: {error}",
                )
            )

    async def _turn(self, turn: int) -> str | None:
        """One model call and what follows it; returns the final answer or None to go on."""
        completion = await self._ask(turn)
        problem = completion.unreadable or _native_call_problem(completion)
        if problem is not None:  # the model's output, refused as the text parser would
            self._reject_unparseable(_reply_summary(completion), problem)
            return None
        if completion.tool_calls is not None and completion.tool_calls:
            calls, text = unique_ids(completion.tool_calls), completion.text
        else:
            parsed = parse_tool_calls(completion.text)
            if parsed.failure is not None:
                self._reject_unparseable(completion.text, str(parsed.failure))
                return None
            calls, text = unique_ids(parsed.calls), parsed.text
            if not calls and not text.strip():
                self._reject_unparseable(completion.text, "the reply was empty")
                return None
        if not calls:
            return text.strip()
        checked = [self.tool_calls.check(call, self.retries) for call in calls]
        valid = [item for item in checked if isinstance(item, ValidCall)]
        invalid = [item for item in checked if isinstance(item, InvalidCall)]
        self.messages.append(assistant(text.strip(), tool_calls=calls))
        results = await self.tool_calls.run(valid)
        results |= {item.call.id: item.result() for item in invalid}
        self.messages.extend(tool_message(results[c.id]) for c in calls)
        if invalid:
            self._spend_retry("; ".join(e for item in invalid for e in item.errors))
            return None
        self.retries = 0
        self.kept_from = len(self.messages) - len(calls) - 1  # this turn's call and its results
        for item in valid:  # a successful call to an ends_run tool (`finish`) is the answer
            result = results[item.call.id]
            if item.tool.ends_run and result.ok:
                return result.content
        return None

    async def _ask(self, turn: int) -> Completion:
        """The model's reply; a prompt the worker refuses is asked again with one more of the
        oldest tool results elided, while the results of the latest valid call stay whole."""
        while True:
            try:
                return await self._ask_once(turn)
            except RequestRefused:
                if self.elided >= len(self._elidable()):
                    raise
                self.elided += 1

    def _elidable(self) -> list[int]:
        """Indexes of the messages a request may elide, in the order it elides them, each longer
        than its marker: the tool messages before the latest turn whose calls were all valid (an
        unparseable or invalid retry does not move that line), then the unreadable replies (no
        calls) after it."""
        results = [
            i
            for i, m in enumerate(self.messages[: self.kept_from])
            if m.role == "tool" and len(m.content) > len(_elided(m.content))
        ]
        unreadable = [
            i
            for i in self.unreadable_at
            if i > self.kept_from
            and len(self.messages[i].content) > len(_elided(self.messages[i].content))
        ]
        return results + unreadable

    def _prompt(self) -> list[Message]:
        messages = list(self.messages)
        for i in self._elidable()[: self.elided]:
            messages[i] = messages[i].model_copy(update={"content": _elided(messages[i].content)})
        return messages

    async def _ask_once(self, turn: int) -> Completion:
        span = new_span_id()
        base = {
            "run_id": self.scope.run_id,
            "span_id": span,
            "parent_id": self.span_id,
            "agent": self.inputs.name,
            "role": self.inputs.role,
            "turn": turn,
        }
        request = Request(
            messages=self._prompt(),
            tools=list(self.tool_specs),
            sampling=self.inputs.sampling,
            decoding=self.inputs.decoding,
            role=self.inputs.role,
            run_id=self.scope.run_id,
            agent=self.inputs.name,
            span_id=span,
            tenant=self.scope.tenant,
        )
        self.scope.emit(
            ModelRequested(
                **base,
                message_count=len(self.messages),
                tools=list(self.tools),
                elided=self.elided,
                # only a stored run can be resumed, so only it pays for the digest (~0.1 ms)
                prompt_digest=prompt_digest(request) if self.scope.stream.store else None,
            )
        )
        replay = self.scope.replay  # a resumed run answers from the stored reply where there is one
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.scope.limits.model_timeout):
                if replay is not None:
                    completion = await replay.complete(self.worker, request)
                else:
                    completion = await self.worker.complete(request)
        except BaseException as exc:
            error = worker_error(exc, self.worker, self.scope.limits.model_timeout)
            self.scope.emit(
                ModelCompleted(
                    **base, latency=time.perf_counter() - started, error=str(error or exc)
                )
            )
            if error is None:
                raise
            raise error from exc
        completion = _refused_calls_named(clean_completion(completion))
        self.scope.emit(
            ModelCompleted(
                **base,
                worker=completion.worker,
                model=completion.model,
                architecture=completion.architecture,
                policy_version=completion.policy_version,
                usage=completion.usage,
                latency=completion.latency or time.perf_counter() - started,
                text=completion.text,
                expert_load=completion.expert_load,
                tool_calls=completion.tool_calls,
                unreadable=completion.unreadable,
                reasoning=completion.reasoning,
                time_to_first_token=completion.time_to_first_token,
                cached_prompt_tokens=completion.cached_prompt_tokens,
                response_id=completion.response_id,
            )
        )
        self.usage = self.usage + completion.usage
        self.scope.add_usage(completion.usage)
        return completion

    def _reject_unparseable(self, text: str, problem: str) -> None:
        self.scope.emit(
            ToolCallInvalid(
                **self._base(),
                kind="parse",
                errors=[problem],
                raw=text[:4000],
                attempt=self.retries,
            )
        )
        self.unreadable_at.append(len(self.messages))
        self.messages.append(assistant(text))
        self.messages.append(
            user(
                f"Your reply could not be read: {problem}. Reply with a valid tool call, "
                "or with a plain-text final answer."
            )
        )
        self._spend_retry(problem)

    def _spend_retry(self, problem: str) -> None:
        self.retries += 1
        if self.retries > self.max_retries:
            raise ModelBehaviorError(
                f"agent {self.inputs.name!r}: {self.retries} consecutive invalid replies "
                f"(max_retries={self.max_retries}); last problem: {problem}",
                attempts=self.retries,
                last_error=problem,
            )


def _native_call_problem(completion: Completion) -> str | None:
    """The first call a worker parsed whose arguments the text parser would have refused."""
    for call in completion.tool_calls or []:
        problem = argument_problem(call.arguments)
        if problem is not None:
            return f"arguments of {call.name!r}: {problem}"
    return None


def _refused_calls_named(completion: Completion) -> Completion:
    """A reply whose worker-parsed calls the loop will refuse, with the reason in `unreadable`
    and the calls by name only: what the turn needs of it, and storable as the event that lets
    a resumed run replay it (arguments 5,000 levels deep cannot be written as JSON)."""
    problem = None if completion.unreadable else _native_call_problem(completion)
    if problem is None:
        return completion
    named = [ToolCall(id=c.id, name=c.name) for c in completion.tool_calls or []]
    return completion.model_copy(update={"unreadable": problem, "tool_calls": named})


def _reply_summary(completion: Completion) -> str:
    """What the transcript keeps of a refused reply: its text, and each parsed call by name
    (their arguments may be what could not be held)."""
    calls = " ".join(f"[call {c.name}(…)]" for c in completion.tool_calls or [])
    return f"{completion.text} {calls}".strip()[:4000]


def _elided(text: str) -> str:
    return f"…[elided: {len(text)} chars, to fit the model's context]"


async def run_agent(
    inputs: LoopInputs,
    task: str | list[Message],
    worker: Worker,
    scope: RunScope,
    *,
    parent_id: str | None = None,
) -> BodyResult:
    """Run one agent to its final answer inside `scope`."""
    if isinstance(task, str):
        messages = (
            [system(inputs.instructions), user(task)] if inputs.instructions else [user(task)]
        )
    else:
        messages = list(task)
    loop = AgentLoop(inputs, worker, scope, parent_id or scope.span_id)
    return await loop.run(messages)
