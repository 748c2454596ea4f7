"""The runner: cases go through the real agent loop (validation retries included), the attempts
come back from the run's events, lines land in results.jsonl, workers batch concurrent cases."""

from __future__ import annotations

import json

import anyio
import pytest

from rolepool.core import Completion, Message, Request, RequestRefused, WorkerError
from rolepool.evals.cases import Case, ExpectedCall
from rolepool.evals.result_line import ResultLine
from rolepool.evals.results import ResultsFile
from rolepool.evals.runner import Target, run_case, run_eval
from rolepool.evals.scoring import Scores
from rolepool.pools.testing import FunctionWorker, ScriptedWorker
from rolepool.runtime import EventStore, Limits

WEATHER = {
    "name": "get_weather",
    "description": "Weather forecast for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Local time in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def case(id="c1", expected=None, tools=(WEATHER, TIME), text="Weather in Paris for 2 days?"):
    if expected is None:
        expected = [ExpectedCall(name="get_weather", arguments={"city": ["Paris"], "days": [2]})]
    return Case(
        id=id,
        suite="t",
        role="search",
        category="single" if expected else "no_call",
        messages=[
            Message(role="system", content="You are the search agent."),
            Message(role="user", content=text),
        ],
        tools=list(tools),
        expected=expected,
    )


def call(name, **arguments):
    return json.dumps({"name": name, "arguments": arguments})


def run(c, worker, store=None, limits=None):
    return anyio.run(lambda: run_case(c, Target("w", worker), store=store, limits=limits))


def test_valid_call_first_try_ends_the_run_after_one_turn():
    worker = ScriptedWorker([call("get_weather", city="Paris", days=2)], architecture="dense")
    line = run(case(), worker)
    assert line.scores.exact and line.scores.schema_valid_first_try
    assert line.turns == 1 and len(line.attempts) == 1 and line.error is None
    assert [c.model_dump() for c in line.calls] == [
        {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}
    ]
    assert line.architecture == "dense" and line.worker == "w"
    assert worker.remaining == 0


def test_invalid_call_is_retried_by_the_loop_and_both_attempts_are_kept():
    worker = ScriptedWorker(
        [call("get_weather", city="Paris", days="two"), call("get_weather", city="Paris", days=2)]
    )
    line = run(case(), worker)
    first, final = line.attempts
    assert first.invalid and "days" in first.invalid[0]
    # the invalid call's arguments are recovered from the text, in the order the loop saw them
    assert [c.model_dump() for c in first.calls] == [
        {"name": "get_weather", "arguments": {"city": "Paris", "days": "two"}}
    ]
    assert final.invalid == [] and line.turns == 2
    scores = line.scores
    assert scores.schema_valid_first_try is False and scores.schema_valid and scores.exact
    # the retry saw the validation error as a tool message
    assert any(m.role == "tool" and "days" in m.content for m in worker.requests[1].messages)


def test_unparseable_until_the_retry_budget_runs_out():
    worker = ScriptedWorker(['<tool_call>{"name": "get_weather", "arguments": {"city": '] * 3)
    line = run(case(), worker, limits=Limits(max_retries=2))
    assert len(line.attempts) == 3 and all(a.parse_error for a in line.attempts)
    assert line.error.startswith("ModelBehaviorError")
    assert line.scores.json_valid is False and line.scores.exact is False


def test_no_call_case_answered_in_text():
    line = run(
        case(expected=[], text="Tell me a joke."),
        ScriptedWorker(["I can only look up weather and time."]),
    )
    assert line.scores.no_call_correct and line.scores.exact
    assert line.scores.false_call is False and line.calls == []


def test_parallel_calls_in_another_order_match():
    expected = [
        ExpectedCall(name="get_weather", arguments={"city": ["Paris"], "days": ["", 1]}),
        ExpectedCall(name="get_time", arguments={"city": ["Oslo"]}),
    ]
    text = json.dumps(
        [
            {"name": "get_time", "arguments": {"city": "Oslo"}},
            {"name": "get_weather", "arguments": {"city": "Paris"}},
        ]
    )
    line = run(case(expected=expected), ScriptedWorker([text]))
    assert line.scores.exact and len(line.calls) == 2


def test_native_tool_calls_from_an_openai_style_worker():
    from rolepool.core import ToolCall

    worker = FunctionWorker(
        lambda r: Completion(
            tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris", "days": 2})]
        )
    )
    assert run(case(), worker).scores.exact


def test_worker_failure_is_recorded_not_raised():
    def down(request: Request):
        raise WorkerError("connection refused", worker="w")

    line = run(case(), FunctionWorker(down))
    assert line.error.startswith("WorkerError") and line.attempts == []
    assert line.scores.exact is False


def test_run_eval_writes_lines_to_its_own_store_and_skips_done_cases(tmp_path, isolated_store):
    cases = [case(id=f"c{i}") for i in range(5)]
    calls = []

    def answer(request: Request) -> str:
        calls.append(request)
        return call("get_weather", city="Paris", days=2)

    store = EventStore(tmp_path / "out" / "events.db")
    with ResultsFile(tmp_path / "out") as results:
        results.append(ResultLine(suite="t", case="c0", worker="w", scores=Scores()))
        seen = []
        ran = anyio.run(
            lambda: run_eval(
                cases,
                [Target("w", FunctionWorker(answer))],
                results,
                store=store,
                on_result=seen.append,
            )
        )
    assert ran.recorded == 4 and ran.worker_errors == [] and len(calls) == 4 and len(seen) == 4
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["case"] for x in lines) == [f"c{i}" for i in range(5)]
    run_ids = {json.loads(x)["run_id"] for x in lines[1:]}
    assert {r.run_id for r in store.runs(limit=100)} == run_ids  # traces kept beside results
    assert not isolated_store.exists()  # the user's event store is untouched


@pytest.mark.slow
def test_tiny_models_batch_and_report_expert_load(tmp_path, tiny_dense_dir, tiny_moe_dir):
    from rolepool.pools.transformers_worker import TransformersWorker

    dense = TransformersWorker(tiny_dense_dir, name="tiny-dense")
    moe = TransformersWorker(tiny_moe_dir, name="tiny-moe")
    cases = [case(id=f"c{i}", text=f"Weather in city {i}?") for i in range(6)]
    limits = Limits(max_retries=0)

    async def main():
        with ResultsFile(tmp_path) as results:
            await run_eval(
                cases,
                [Target("tiny-dense", dense), Target("tiny-moe", moe)],
                results,
                store=None,
                limits=limits,
            )
            return results.records

    records = anyio.run(main)
    assert len(records) == 12
    assert not [r.error for r in records if r.error]
    assert max(dense.stats["batch_sizes"]) > 1 and max(moe.stats["batch_sizes"]) > 1
    for r in records:
        assert r.turns >= 1 and r.usage.completion_tokens > 0
        if r.worker == "tiny-moe":
            assert r.architecture == "moe"
            assert len(r.expert_load) == 2 and len(r.expert_load[0]) == 4
        else:
            assert r.architecture == "dense" and r.expert_load is None


def test_worker_failures_are_recorded_and_retried_on_the_next_run(tmp_path):
    cases = [case(id=f"c{i}") for i in range(4)]

    def flaky(request: Request) -> str:
        flaky.calls.append(request)
        if len(flaky.calls) % 2 == 0:
            raise WorkerError("server went away", worker="w")
        return call("get_weather", city="Paris", days=2)

    flaky.calls = []
    with ResultsFile(tmp_path) as results:
        counts = anyio.run(
            lambda: run_eval(
                cases, [Target("w", FunctionWorker(flaky))], results, store=None, concurrency=1
            )
        )
        assert counts.recorded == 4 and len(counts.worker_errors) == 2
        assert "server went away" in counts.worker_errors[0]
        failed = [r for r in results.records if r.error_kind == "worker"]
        assert len(failed) == 2 and all(r.scores.exact is False for r in failed)
        assert len(results.done()) == 2  # the failed two are not done
        healthy = FunctionWorker(lambda r: call("get_weather", city="Paris", days=2))
        again = anyio.run(lambda: run_eval(cases, [Target("w", healthy)], results, store=None))
    assert again.recorded == 2 and len(healthy.requests) == 2
    with ResultsFile(tmp_path) as results:
        assert len(results.records) == 6  # nothing rewritten: the failures stay in the file
        latest = results.latest()
        assert len(latest) == 4 and all(r.error is None for r in latest)
        assert len(results.done()) == 4


def test_a_case_the_worker_refuses_is_a_failure_for_good(tmp_path):
    """A prompt over the model's context will not fit next time either: scored as a failure,
    recorded as `refused`, and not run again on resume."""
    cases = [case(id=f"c{i}") for i in range(3)]

    def short_context(request: Request) -> str:
        if len(short_context.calls) == 1:
            short_context.calls.append(request)
            raise RequestRefused("prompt of 900 tokens does not fit the context of 512")
        short_context.calls.append(request)
        return call("get_weather", city="Paris", days=2)

    short_context.calls = []
    worker = FunctionWorker(short_context)
    with ResultsFile(tmp_path) as results:
        counts = anyio.run(
            lambda: run_eval(cases, [Target("w", worker)], results, store=None, concurrency=1)
        )
        assert counts.recorded == 3 and counts.worker_errors == []
        assert len(counts.refused) == 1 and "context of 512" in counts.refused[0]
        refused = [r for r in results.records if r.error_kind == "refused"]
        assert len(refused) == 1 and refused[0].scores.exact is False
        assert len(results.done()) == 3
        again = anyio.run(lambda: run_eval(cases, [Target("w", worker)], results, store=None))
    assert again.recorded == 0 and len(short_context.calls) == 3


def test_a_case_served_after_a_refused_prompt_is_scored_on_what_the_model_replied():
    """The loop asks a refused prompt again with old results elided: the scored attempt is the
    reply to the shortened prompt, and the re-ask is not another turn."""
    from rolepool.core import ToolCall

    c = case()
    for city in ("Oslo", "Rome"):  # two earlier calls with long results
        c.messages.append(
            Message(role="assistant", tool_calls=[ToolCall(id=city, name="get_time", arguments={})])
        )
        c.messages.append(Message(role="tool", tool_call_id=city, content=city * 80))

    def fn(request):
        if sum(len(m.content) for m in request.messages) > 500:
            raise RequestRefused("prompt of 700 tokens does not fit the model's context of 512")
        return call("get_weather", city="Paris", days=2)

    line = run(c, FunctionWorker(fn))
    assert line.error is None and line.turns == 1
    assert len(line.attempts) == 1 and line.scores.exact
