"""SECURITY.md, promise 8: `rolepool serve` binds loopback by default, refuses requests without
the token when one is set, limits request size, and never echoes secrets in errors or traces.

Against real server processes (the command itself, or `serve()` in a child process), over real
sockets, so what is checked is what a client on the network would see.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import anyio
import httpx
import pytest
from rel_support import server_process

from rolepool import Agent
from rolepool.core import RolepoolError
from rolepool.pools.openai_worker import OpenAIWorker
from rolepool.runtime.run import resolve_store

pytestmark = pytest.mark.reliability

KEY = "rp-serve-key-9f8e7d6c5b4a"
CLIENT_KEY = "sk-client-secret-0a1b2c3d4e5f"
PATHS = [
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/metrics"),
    ("GET", "/admin"),
    ("GET", "/v1/chat/completions"),
    ("DELETE", "/v1/models"),
]
HELLO = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}

LEAKY_WORKER = f"""
async def leaky(request):
    text = request.messages[-1].content
    if text == "crash":
        raise RuntimeError("upstream refused key {KEY} and header Bearer {KEY}")
    if text == "typed":
        from rolepool.core import WorkerError
        raise WorkerError("backend said: invalid key {KEY}", worker="leaky")
    return "fine"

worker = FunctionWorker(leaky, name="leaky")
"""


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


def test_the_command_binds_loopback_only_by_default(tmp_path):
    pool = tmp_path / "pool.toml"
    pool.write_text(
        '[workers.remote]\nbackend = "openai"\nurl = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
        '[policy]\nversion = "1"\n[policy.default]\nchoices = [{ worker = "remote" }]\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "ROLEPOOL_SERVE_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rolepool.cli", "serve", "--pool", str(pool), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        banner = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1 \(no token required\)", banner)
        assert found, banner + proc.stderr.read()
        port = int(found.group(1))
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
        assert "warning" not in banner
        with pytest.raises(httpx.ConnectError):  # not reachable on another local address
            other = _non_loopback_address()
            if other is None:
                raise httpx.ConnectError("no other address to try")
            httpx.get(f"http://{other}:{port}/health", timeout=2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) in (0, 130)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_without_the_token_every_path_but_health_is_refused():
    with server_process(LEAKY_WORKER, f'api_key="{KEY}"') as server:
        wrong = [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": f"Bearer {KEY[:-1]}"},
            {"Authorization": f"Bearer {KEY}x"},
            {"Authorization": f"bearer {KEY}"},
            {"Authorization": f"Basic {KEY}"},
            {"Authorization": KEY},
            {"X-Api-Key": KEY},
        ]
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for method, path in PATHS:
                for headers in wrong:
                    response = client.request(
                        method, path, headers=headers, json=HELLO if method == "POST" else None
                    )
                    assert response.status_code == 401, (method, path, headers)
                    assert KEY not in response.text and KEY[:-1] not in response.text
                    assert response.headers["www-authenticate"] == "Bearer"
                query = client.request(method, f"{path}?api_key={KEY}&token={KEY}")
                assert query.status_code == 401
            assert client.get("/health").status_code == 200  # liveness stays open
            good = {"Authorization": f"Bearer {KEY}"}
            assert client.post("/v1/chat/completions", json=HELLO, headers=good).status_code == 200
            metrics = client.get("/metrics", headers=good).text
    assert 'rolepool_rejected_requests_total{reason="unauthorized"}' in metrics
    assert KEY not in metrics


def test_request_size_is_limited_declared_chunked_and_nested():
    with server_process(LEAKY_WORKER, "max_body_bytes=10_000") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            big = {**HELLO, "messages": [{"role": "user", "content": "x" * 20_000}]}
            declared = client.post("/v1/chat/completions", json=big)
            assert declared.status_code == 413

            def chunks():
                for _ in range(100):
                    yield b" " * 1_000  # no Content-Length: counted as it arrives

            chunked = client.post("/v1/chat/completions", content=chunks())
            assert chunked.status_code == 413

            deep = b"[" * 5_000 + b"]" * 5_000  # small, but nested past any parser's stack
            nested = client.post(
                "/v1/chat/completions", content=deep, headers={"content-type": "application/json"}
            )
            assert nested.status_code == 400, nested.text
            assert "JSON" in nested.json()["error"]["message"]
            assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
            metrics = client.get("/metrics").text
    # both kinds of oversized body are counted alike: rejected, never as answered requests
    assert 'rolepool_rejected_requests_total{reason="too_large"} 2.0' in metrics
    assert 'status="too_large"' not in metrics


SLOW_WORKER = """
import time
def slow(request):
    time.sleep(2)  # longer than the read deadline: answering time is not reading time
    return "slow but fine"
worker = FunctionWorker(slow, name="slow")
"""


def read_until_closed(sock: socket.socket, limit: float = 30) -> bytes:
    sock.settimeout(limit)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_idle_and_slow_connections_are_closed_at_the_read_deadline():
    """The pass held 250 idle connections open for 40 s. Now each request must arrive whole
    within read_timeout; the time the server spends answering does not count."""
    with server_process(SLOW_WORKER, "read_timeout=1.0") as server:
        host, port = server.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(50)]
        answers = [read_until_closed(s) for s in idle]  # returns once the server closes
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0]

        trickle = socket.create_connection((host, int(port)))
        request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
        trickle.settimeout(30)
        closed = False
        for byte in request * 20:  # a header byte every 0.1 s: ~13 s in all if never cut off
            try:
                trickle.send(bytes([byte]))
            except OSError:
                closed = True
                break
            if select.select([trickle], [], [], 0)[0]:  # the server answered (408) or closed
                closed = True
                break
            time.sleep(0.1)
        assert closed, "a request sent a byte at a time was never cut off"

        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", json=HELLO)
        assert answer.status_code == 200, answer.text
        for s in [*idle, trickle]:
            s.close()


def test_errors_and_server_logs_never_carry_the_key():
    with server_process(LEAKY_WORKER, f'api_key="{KEY}"') as server:
        good = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=server.url, timeout=10, headers=good) as client:
            answers = []
            for text in ("crash", "typed"):
                body = {**HELLO, "messages": [{"role": "user", "content": text}]}
                answers.append(client.post("/v1/chat/completions", json=body))
            broken = client.post("/v1/chat/completions", content=b"{not json " + KEY.encode())
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(timeout=20)
        log = server.proc.stderr.read()
    crash, typed = answers
    assert crash.status_code == 500 and crash.json()["error"]["type"] == "internal_error"
    assert typed.status_code == 502 and "[redacted]" in typed.json()["error"]["message"]
    assert broken.status_code == 400
    for response in (crash, typed, broken):
        assert KEY not in response.text and "Traceback" not in response.text
    assert "RuntimeError" in log  # the operator still gets the failure ...
    assert KEY not in log  # ... without the key


def test_a_client_key_never_reaches_the_run_trace():
    """A server that echoes the client's Authorization header back in its errors: the worker's
    error, the run's exception and every stored event have the key blanked."""

    def echo_auth(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("authorization", "")
        body = {"error": {"message": f"key not allowed: {header}", "type": "auth"}}
        return httpx.Response(403, content=json.dumps(body).encode())

    async def run() -> tuple[str, str]:
        remote = OpenAIWorker("http://model.invalid", "m", api_key=CLIENT_KEY)
        remote._client = httpx.AsyncClient(
            transport=httpx.MockTransport(echo_auth),
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )
        async with remote:
            async with Agent("a").start("go", worker=remote) as live:
                try:
                    await live.result()
                except RolepoolError as exc:
                    return live.run_id, str(exc)
        raise AssertionError("the run should have failed")

    run_id, error = anyio.run(run)
    assert "key not allowed" in error and CLIENT_KEY not in error
    stored = "\n".join(e.model_dump_json() for e in resolve_store(None).events(run_id))
    assert "[redacted]" in stored and CLIENT_KEY not in stored
