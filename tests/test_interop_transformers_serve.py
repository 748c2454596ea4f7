"""`transformers serve --continuous-batching` (transformers' own OpenAI-compatible server, from
`transformers[serving]`) behind `OpenAIWorker` (issue 20.4): started by the test on a free port,
offline, with the shipped dense-s1 checkpoint. The roles eval over it gives the same calls, texts
and scores as the in-process worker on the same cases (greedy), token streaming through it
reaches a `rolepool serve` client, and a workflow runs over it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from serving import running

from rolepool import OpenAIWorker, Pool, RolepoolError, RoutingPolicy, Workflow
from rolepool.cli import main
from rolepool.pools.openai_stream import parse_sse
from rolepool.pools.policy import Choice, Route
from rolepool.runtime import EventStore
from rolepool.zoo import checkpoint_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("transformers") is None, reason="transformers[serving]"),
]
CASES = 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def transformers_serve():
    """The server's base URL and the model name it knows (the checkpoint's path)."""
    model = str(checkpoint_path("dense-s1"))
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = ["transformers", "serve", "--continuous-batching", "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--dtype", "float32", model]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start within 120 s")
        yield url + "/v1", model
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _pool_toml(path: Path, url: str, model: str) -> Path:
    path.write_text(
        f'[workers.local]\nbackend = "transformers"\nmodel = "{model}"\n\n'
        f'[workers.tserve]\nbackend = "openai"\nurl = "{url}"\nmodel = "{model}"\n'
        'architecture = "dense"\ntimeout = 300\n\n'
        '[policy]\nversion = "v1"\ndefault = { choices = [{ worker = "local" }] }\n'
    )
    return path


def test_roles_eval_over_transformers_serve_equals_in_process(transformers_serve, tmp_path):
    url, model = transformers_serve
    pool = _pool_toml(tmp_path / "pool.toml", url, model)
    out = tmp_path / "eval"
    argv = ["eval", "--pool", str(pool), "--limit", str(CASES), "--out", str(out)]
    assert main([*argv, "--concurrency", "8"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["worker"]] = row
    assert len(by_case) == CASES
    for case, workers in by_case.items():
        local, remote = workers["local"], workers["tserve"]
        assert remote["error"] is None, case
        assert remote["scores"] == local["scores"], case
        assert remote["calls"] == local["calls"], case
        assert [a["text"] for a in remote["attempts"]] == [a["text"] for a in local["attempts"]]


@pytest.mark.anyio
async def test_rolepool_serve_streams_tokens_from_transformers_serve(transformers_serve):
    url, model = transformers_serve
    async with OpenAIWorker(url, model, name="tserve", max_retries=0) as worker:
        async with running(worker) as served, httpx.AsyncClient(base_url=served) as client:
            body = {"model": "tserve", "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 24, "stream": True}  # fmt: skip
            response = await client.post("/v1/chat/completions", json=body, timeout=120)
            plain = await client.post(
                "/v1/chat/completions", json={**body, "stream": False}, timeout=120
            )
    pieces = [c["choices"][0]["delta"].get("content") for c in parse_sse(response.text)]
    pieces = [p for p in pieces if p]
    assert len(pieces) > 2
    assert "".join(pieces) == plain.json()["choices"][0]["message"]["content"]


@pytest.mark.anyio
async def test_a_workflow_runs_over_transformers_serve(transformers_serve, tmp_path,
                                                       isolated_store):  # fmt: skip
    url, model = transformers_serve
    worker = OpenAIWorker(url, model, name="tserve", timeout=300, max_retries=0)
    pool = Pool({"tserve": worker},
                RoutingPolicy(version="t1", default=Route(choices=[Choice(worker="tserve")])))  # fmt: skip
    task = "Plan this: have the coder check the cache, and ask the search agent to find batching."
    try:
        result = await Workflow().run(task, worker=pool, workspace=tmp_path, run_id="run_tserve")
    except RolepoolError:  # a tiny model may fail; the run must still end with run.failed
        result = None
    finally:
        await worker.aclose()
    with EventStore(isolated_store) as store:
        events = store.events("run_tserve")
    assert events[-1].type in ("run.finished", "run.failed")
    assert {e.worker for e in events if e.type == "model.completed" and not e.error} == {"tserve"}
    assert [e.tool for e in events if e.type == "tool.started"].count("assign") >= 2
    if result is not None:
        assert len(result.steps) >= 2
