"""The HTML run viewer: content, escaping, and a real headless Chromium rendering it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rolepool import Agent, Completion, FunctionWorker, Request, tool
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.runtime import EventStore
from rolepool.runtime.viewer import render_run_html

XSS = '<script>document.title="pwned"</script><img src=x onerror="alert(1)">'


@tool
def lookup(city: str) -> str:
    """Look a city up.

    Args:
        city: the city's name
    """
    if city == "Atlantis":
        raise LookupError("no such city")
    return f"{city}: sunny"


async def record_run(tmp_path: Path) -> list:
    """A run with everything the viewer shows: failover, MoE load, parallel and invalid calls,
    a failing tool and model output that tries to inject a script."""
    calls = [
        {"name": "lookup", "arguments": {"city": "Paris"}},
        {"name": "lookup", "arguments": {"city": "Atlantis"}},
    ]
    load = [[30, 2, 1, 0, 5, 0, 1, 1], [5, 5, 4, 6, 5, 5, 4, 6], [12, 11, 0, 0, 9, 8, 0, 0]]
    replies = [
        Completion(text=json.dumps(calls), model="ref-moe-8x", expert_load=load),
        '{"name": "lookup", "arguments": {"city": 42}}',
        Completion(text="It is sunny in Paris. " + XSS, model="ref-moe-8x", expert_load=load),
    ]

    def down(request: Request) -> str:
        raise ConnectionError("moe-a is down")

    moe = FunctionWorker(lambda r: replies.pop(0), name="moe-b", architecture="moe")
    pool = Pool(
        {"moe-a": FunctionWorker(down, architecture="moe"), "moe-b": moe},
        RoutingPolicy(
            version="2026-11-26.1",
            routes={"search": Route(choices=[Choice(worker="moe-a")], fallbacks=["moe-b"])},
        ),
    )
    store = EventStore(tmp_path / "events.db")
    agent = Agent("weather", role="search", tools=[lookup])
    result = await agent.run("Weather in Paris? " + XSS, worker=pool, store=store)
    return store.events(result.run_id)


@pytest.fixture
def run_events(tmp_path):
    import anyio

    return anyio.run(record_run, tmp_path)


def test_page_shows_the_run_and_escapes_model_text(run_events):
    page = render_run_html(run_events)
    assert "<script>document.title" not in page and 'onerror="alert' not in page
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the viewer's own
    assert "chat ref-moe-8x" in page and "worker moe-b" in page and "policy 2026-11-26.1" in page
    assert "failover moe-a → moe-b" in page
    assert "invalid call lookup" in page and "$.city" in page
    assert "LookupError: no such city" in page
    assert page.count('<svg class="experts"') == 2
    assert "http://" not in page and "https://" not in page  # self-contained


def test_html_cli(run_events, tmp_path, monkeypatch, capsys):
    from rolepool.cli import main

    monkeypatch.setenv("ROLEPOOL_EVENTS_DB", str(tmp_path / "events.db"))
    out = tmp_path / "run.html"
    assert main(["trace", "show", run_events[0].run_id[:12], "--html", str(out)]) == 0
    assert out.read_text().startswith("<!doctype html>")
    assert str(out) in capsys.readouterr().out


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium: apt-get install -y chromium (see .ci/run)")


def run_chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_real_chromium_renders_it(run_events, tmp_path):
    page = tmp_path / "run.html"
    page.write_text(render_run_html(run_events))
    shot = tmp_path / "run.png"
    proc = run_chromium(
        page, tmp_path / "profile-1", f"--screenshot={shot}", "--window-size=1400,900"
    )
    assert shot.exists(), proc.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # not a blank page
    assert "Uncaught" not in proc.stderr and "ERROR:CONSOLE" not in proc.stderr

    dom = run_chromium(page, tmp_path / "profile-2", "--dump-dom")
    assert 'data-viewer="ready"' in dom.stdout, dom.stderr[-2000:]  # the script ran
    assert "pwned" not in dom.stdout.split("<title>")[1].split("</title>")[0]
    assert "Uncaught" not in dom.stderr and "ERROR:CONSOLE" not in dom.stderr


def test_trace_open_writes_a_temp_page_and_opens_it(run_events, tmp_path, monkeypatch, capsys):
    from rolepool.cli import main

    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    monkeypatch.setenv("ROLEPOOL_EVENTS_DB", str(tmp_path / "events.db"))
    assert main(["trace", "open", run_events[0].run_id]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert opened == [path.as_uri()] and "chat ref-moe-8x" in path.read_text()
    path.unlink()
