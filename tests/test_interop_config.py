"""pool.toml's per-server request options for OpenAI-compatible workers (issue 20.3): they reach
the worker, and a bad value is one ConfigError naming the key (exit 2 from the CLI)."""

from __future__ import annotations

import tomllib

import pytest

from rolepool.cli import main
from rolepool.core import ConfigError
from rolepool.pools.config import build_pool, parse_pool_config

GOOD = """
[workers.vllm]
backend = "openai"
url = "http://127.0.0.1:9/v1"
model = "Qwen/Qwen3-30B-A3B"
tool_mode = "text"
parallel_tool_calls = false
structured_output = true
chat_template_kwargs = { enable_thinking = false }
max_completion_tokens = 512
extra_body = { top_k = 20 }
stream = true
num_experts = 128

[workers.vllm.tool_choice]
default = "auto"
coder = "required"

[policy]
version = "v1"
default = { choices = [{ worker = "vllm" }] }
"""


def test_request_options_reach_the_worker():
    pool = build_pool(parse_pool_config(tomllib.loads(GOOD)))
    worker = pool.workers["vllm"]
    options = worker.options
    assert worker.tool_mode == "text" and worker.stream and worker.num_experts == 128
    assert options.tool_choice == "auto" and dict(options.role_tool_choice) == {"coder": "required"}
    assert options.parallel_tool_calls is False and options.structured_output
    assert options.chat_template_kwargs == {"enable_thinking": False}
    assert options.max_completion_tokens == 512 and options.extra_body == {"top_k": 20}


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('tool_mode = "magic"', "workers.vllm.tool_mode"),
        ('tool_choice = "sometimes"', "workers.vllm.tool_choice"),
        ("tool_choice = { coder = 3 }", "workers.vllm.tool_choice"),
        ("max_completion_tokens = 0", "workers.vllm.max_completion_tokens"),
        ('parallel_tool_calls = "no"', "workers.vllm.parallel_tool_calls"),
        ("chat_template_kwargs = 5", "workers.vllm.chat_template_kwargs"),
        ('extra_body = { messages = "x" }', "workers.vllm.extra_body"),
        ("num_experts = -1", "workers.vllm.num_experts"),
        ("tool_modes = 1", "workers.vllm.tool_modes"),
    ],
)
def test_a_bad_option_is_one_error_naming_the_key(line, key, tmp_path, capsys):
    text = (
        '[workers.vllm]\nbackend = "openai"\nurl = "http://127.0.0.1:9"\nmodel = "m"\n'
        f'{line}\n[policy]\nversion = "v"\ndefault = {{ choices = [{{ worker = "vllm" }}] }}\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_pool_config(tomllib.loads(text))
    assert key in str(caught.value)
    path = tmp_path / "pool.toml"
    path.write_text(text)
    assert main(["run", "Go.", "--pool", str(path)]) == 2
    err = capsys.readouterr().err
    assert key in err and len(err.strip().splitlines()) == 1
