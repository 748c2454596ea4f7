"""SECURITY.md, promise 9: one client's input never counts against a worker.

The red-team pass of 2026-12-03 opened both breakers of a served pool with eight requests carrying
`seed = 2**64`: the value passed validation, torch refused it, and the pool charged the worker.
Every field a client sends is now checked to what a worker can take (`Sampling`, the wire's strict
types), and the pool's breakers count only the worker's own faults (it raised, or gave no answer in
time); a request the worker refused or reported as bad input is the request's fault.
"""

from __future__ import annotations

import itertools
import json

import anyio
import httpx
import pytest
from pydantic import ValidationError
from serving import running

from rolepool import FunctionWorker
from rolepool.core import (
    Message,
    Request,
    RequestRefused,
    Sampling,
    UserError,
    WorkerError,
)
from rolepool.pools.breaker import BreakerSettings
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

# Values at and past every edge of each sampling field, of the kinds JSON can carry.
TEMPERATURES = [0, 5e-324, 1e-300, 9.99e-6, 1e-5, 0.7, 2, 1e308, float("inf"), float("nan"), -1]
SEEDS = [None, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**40]
TOP_PS = [5e-324, 1e-300, 0.5, 1, 0, 1.0000001, float("nan")]
STOPS = [[], ["</s>"], [""], ["\u00e9\u6f22"], ["x"] * 64, ["x"] * 65]


def tiny_pool(tiny_dense_dir, tiny_moe_dir, **kw) -> Pool:
    from rolepool.pools.transformers_worker import TransformersWorker

    workers = {
        "moe": TransformersWorker(tiny_moe_dir, name="moe"),
        "dense": TransformersWorker(tiny_dense_dir, name="dense"),
    }
    route = Route(choices=[Choice(worker="moe")], fallbacks=["dense"])
    return Pool(workers, RoutingPolicy(version="t1", default=route), **kw)


def ask(**sampling) -> Request:
    return Request(
        messages=[Message(role="user", content="hi")],
        sampling=Sampling(max_tokens=2, **sampling),
        role="coder",
    )


@pytest.mark.slow
async def test_every_sampling_value_is_refused_up_front_or_served(tiny_dense_dir, tiny_moe_dir):
    """The whole class: each edge value either fails `Sampling` validation (a clear error
    before any worker sees it) or is served by a real model. Nothing in between."""
    pool = tiny_pool(tiny_dense_dir, tiny_moe_dir, breaker=BreakerSettings(failure_threshold=1))
    combos = [
        *itertools.product(TEMPERATURES, SEEDS, [1.0], [[]]),
        *itertools.product([1.0], [7], TOP_PS, STOPS),
    ]
    refused, served = 0, 0
    async with pool:
        for temperature, seed, top_p, stop in combos:
            try:
                request = ask(temperature=temperature, seed=seed, top_p=top_p, stop=stop)
            except ValidationError:
                refused += 1
                continue
            completion = await pool.complete(request)  # raises if any worker failed on it
            assert completion.worker == "moe"
            served += 1
    assert refused and served
    assert all(s["failures"] == 0 and s["breaker"] == "closed" for s in pool.stats.values())


def test_near_zero_temperatures_decode_greedily():
    assert Sampling(temperature=1e-300).temperature == 0.0
    assert Sampling(temperature=1e-5).temperature == 1e-5


@pytest.mark.slow
async def test_the_red_team_requests_leave_the_served_pool_healthy(tiny_dense_dir, tiny_moe_dir):
    """The pass's attack, verbatim: eight chat requests with seed 2**64 and temperature 1."""
    pool = tiny_pool(tiny_dense_dir, tiny_moe_dir, breaker=BreakerSettings(failure_threshold=2))
    attack = {
        "model": "pool",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 2**64,
        "temperature": 1,
        "max_tokens": 2,
    }
    async with pool, running(pool) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        answers = [await client.post("/v1/chat/completions", json=attack) for _ in range(8)]
        ok = await client.post(
            "/v1/chat/completions", json={**attack, "seed": 2**64 - 1, "temperature": 1e-300}
        )
        health = await client.get("/health")
    assert {a.status_code for a in answers} == {400}
    assert answers[0].json()["error"]["param"] == "seed"
    assert ok.status_code == 200, ok.text
    assert health.json() == {"status": "ok"}
    assert all(s["failures"] == 0 and s["breaker"] == "closed" for s in pool.stats.values())


def failing(exc: Exception, name: str) -> FunctionWorker:
    def fail(request):
        raise exc

    return FunctionWorker(fail, name=name)


@pytest.mark.parametrize(
    "exc", [RequestRefused("prompt too long"), UserError("bad input"), ValueError("worker bug")]
)
async def test_only_the_workers_own_faults_open_its_breaker(exc):
    """A refusal or a UserError is the request's fault: a hundred of them open nothing. Any
    other exception is the worker's, and opens the breaker at the threshold."""
    workers = {"a": failing(exc, "a"), "b": failing(exc, "b")}
    route = Route(choices=[Choice(worker="a")], fallbacks=["b"])
    pool = Pool(
        workers,
        RoutingPolicy(version="v", default=route),
        breaker=BreakerSettings(failure_threshold=3),
    )
    blamed = not isinstance(exc, UserError | RequestRefused)
    for _ in range(3 if blamed else 100):
        with pytest.raises((WorkerError, UserError)) as info:
            await pool.complete(ask())
    if isinstance(exc, UserError):  # the caller's own error, refused by every worker: as it is
        assert info.value is exc
    else:  # the error keeps every attempt's own exception, not just its text
        assert [(a.worker, a.error) for a in info.value.attempts] == [("a", exc), ("b", exc)]
        assert isinstance(info.value, RequestRefused) is not blamed
    assert [pool.breaker(n).state for n in "ab"] == (["open"] * 2 if blamed else ["closed"] * 2)
    assert (await pool.health()) is not blamed


async def test_an_open_breaker_attempt_keeps_no_exception():
    pool = Pool(
        {"a": failing(ValueError("x"), "a")},
        RoutingPolicy(version="v", default=Route(choices=[Choice(worker="a")])),
        breaker=BreakerSettings(failure_threshold=1),
    )
    with pytest.raises(WorkerError):
        await pool.complete(ask())
    with pytest.raises(WorkerError, match="a: circuit breaker open") as info:
        await pool.complete(ask())
    assert [(a.kind, a.error) for a in info.value.attempts] == [("open", None)]


async def test_a_request_pinned_to_a_worker_is_served_by_it_alone():
    seen = []
    workers = {
        "a": FunctionWorker(lambda r: seen.append("a") or "from a", name="a"),
        "b": failing(ValueError("down"), "b"),
    }
    route = Route(choices=[Choice(worker="a")], fallbacks=["b"])
    pool = Pool(workers, RoutingPolicy(version="v", default=route))
    pinned = ask().model_copy(update={"worker": "b"})
    with pytest.raises(WorkerError) as info:
        await pool.complete(pinned)  # no fallback to "a": the caller asked for "b"
    assert [a.worker for a in info.value.attempts] == ["b"] and seen == []
    assert (await pool.complete(ask().model_copy(update={"worker": "a"}))).worker == "a"
    with pytest.raises(UserError, match="no worker named 'c'"):
        await pool.complete(ask().model_copy(update={"worker": "c"}))


def served_pool() -> Pool:
    workers = {
        "moe": FunctionWorker(lambda r: "from moe", name="moe"),
        "dense": FunctionWorker(lambda r: "from dense", name="dense"),
    }
    route = Route(choices=[Choice(worker="moe")], fallbacks=["dense"])
    return Pool(workers, RoutingPolicy(version="v", default=route))


async def test_serve_honours_model_and_reports_who_served():
    """`model` names a worker (served by it alone), the pool (routed by policy) or nothing
    known (404, as the OpenAI API answers); the answer's `model` is always who served."""
    pool = served_pool()
    hello = {"messages": [{"role": "user", "content": "hi"}]}
    async with running(pool, models=None) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            listed = (await client.get("/v1/models")).json()["data"]
            answers = {
                model: await client.post("/v1/chat/completions", json={**hello, "model": model})
                for model in ["dense", "moe", "pool", "gpt-4o"]
            }
            routed = await client.post("/v1/chat/completions", json=hello)
    assert [m["id"] for m in listed] == ["pool", "moe", "dense"]
    for model, expected in [("dense", "dense"), ("moe", "moe"), ("pool", "moe")]:
        body = answers[model].json()
        assert body["model"] == body["rolepool"]["worker"] == expected
        assert body["choices"][0]["message"]["content"] == f"from {expected}"
    assert routed.json()["model"] == "moe"
    missing = answers["gpt-4o"]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert "gpt-4o" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", "yes"),
        ("n", "1"),
        ("max_tokens", True),
        ("max_tokens", "4"),
        ("temperature", "0.5"),
        ("seed", 1.5),
        ("temperature", "1e309"),  # sent as the JSON number 1e309, which decodes to inf
        ("top_p", 0),
        ("stop", ""),
        ("stop", ["a"] * 65),
    ],
)
async def test_serve_refuses_values_a_strict_api_would(field, value):
    worker = FunctionWorker(lambda r: "x", name="w")
    body = {"model": "w", "messages": [{"role": "user", "content": "hi"}], field: value}
    async with running(worker) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            raw = json.dumps(body).replace('"1e309"', "1e309")
            answer = await client.post("/v1/chat/completions", content=raw)
            after = await client.post(
                "/v1/chat/completions", json={**body, field: None} | {"stream": False, "n": 1}
            )
    assert answer.status_code == 400, answer.text
    assert (answer.json()["error"]["param"] or "").startswith(field)
    assert after.status_code == 200, after.text


async def test_a_worker_refusing_through_serve_is_a_400_not_a_breaker_failure():
    pool = Pool(
        {"a": failing(RequestRefused("too long"), "a")},
        RoutingPolicy(version="v", default=Route(choices=[Choice(worker="a")])),
        breaker=BreakerSettings(failure_threshold=1),
    )
    hello = {"model": "pool", "messages": [{"role": "user", "content": "hi"}]}
    async with running(pool) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            statuses = [
                (await client.post("/v1/chat/completions", json=hello)).status_code
                for _ in range(5)
            ]
    assert statuses == [400] * 5
    assert pool.breaker("a").state == "closed"
    await anyio.sleep(0)


@pytest.mark.slow
async def test_text_the_tokenizer_cannot_take_is_not_a_worker_fault(tiny_dense_dir):
    """A lone surrogate in an SDK message failed the tokenizer, and the worker was charged. It
    becomes U+FFFD before tokenizing; anything else the chat template cannot render is the
    request's fault (RequestRefused), not the worker's."""
    from rolepool.pools.transformers_worker import TransformersWorker

    worker = TransformersWorker(tiny_dense_dir, name="dense")
    pool = Pool(
        {"dense": worker},
        RoutingPolicy(version="v", default=Route(choices=[Choice(worker="dense")])),
        breaker=BreakerSettings(failure_threshold=1),
    )
    surrogate = Request(messages=[Message(role="user", content="hi \ud800")], role="coder",
                        sampling=Sampling(max_tokens=2))  # fmt: skip
    async with pool:
        for _ in range(3):
            assert (await pool.complete(surrogate)).worker == "dense"
    assert pool.stats["dense"]["failures"] == 0
