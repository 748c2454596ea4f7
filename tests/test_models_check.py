"""`rolepool models check DIR`: what rolepool will do with a local checkpoint, from the directory
alone (tiny random models of the registered families; nothing is downloaded)."""

from __future__ import annotations

import json
import shutil

import pytest

from rolepool.cli import main
from rolepool.pools.families_tiny import build_tiny_family
from rolepool.pools.models_check import check_model

pytestmark = pytest.mark.slow  # builds models on disk


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny_family(f, root / f) for f in ("llama", "qwen2_moe", "gpt_oss", "olmo2")}


def test_json_report_of_a_dense_and_an_moe_family(dirs, capsys):
    assert main(["models", "check", str(dirs["llama"]), "--json"]) == 0
    dense = json.loads(capsys.readouterr().out)
    assert dense["family"] == "Llama" and dense["architecture"] == "dense"
    assert dense["decode_path"] == "lean" and dense["expert_telemetry"] is False
    assert dense["total_params"] == dense["active_params"] > 0
    assert dense["template_renders_tools"] is True and dense["tool_format"] == "hermes"
    assert dense["context_length"] == 1024
    assert main(["models", "check", str(dirs["qwen2_moe"]), "--json"]) == 0
    moe = json.loads(capsys.readouterr().out)
    assert (moe["architecture"], moe["experts"], moe["top_k"]) == ("moe", 4, 2)
    assert moe["shared_experts"] == 1 and moe["expert_telemetry"] is True
    assert moe["active_params"] < moe["total_params"]


@pytest.mark.parametrize(("family", "path"), [("gpt_oss", "generate"), ("olmo2", "engine")])
def test_decode_path_predicted(dirs, family, path):
    report = check_model(dirs[family])
    assert report.decode_path == path
    assert report.expert_telemetry is (family == "gpt_oss")


def test_text_report_names_every_line(dirs, capsys):
    assert main(["models", "check", str(dirs["gpt_oss"])]) == 0
    out = capsys.readouterr().out
    for key in ("family", "architecture", "parameters", "decode path", "expert telemetry",
                "tools in prompt", "tool-call format", "context length"):  # fmt: skip
        assert key in out
    assert "model.generate fallback" in out and "gpt-oss" in out


def test_a_template_that_cannot_render_tools_gets_the_text_fallback(dirs, tmp_path):
    copy = shutil.copytree(dirs["llama"], tmp_path / "plain")
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    (copy / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    report = check_model(copy)
    assert report.template_renders_tools is False and report.tools_in_prompt == "text fallback"


@pytest.mark.parametrize("what", ["empty", "no-weights", "file"])
def test_a_directory_that_is_not_a_model_is_one_message_exit_2(dirs, tmp_path, capsys, what):
    target = tmp_path / what
    if what == "empty":
        target.mkdir()
    elif what == "no-weights":
        shutil.copytree(dirs["llama"], target, ignore=shutil.ignore_patterns("*.safetensors"))
    else:
        target.write_text("x")
    assert main(["models", "check", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
