"""The worker's device, dtype and tool settings (issue 22.2, 22.5): device checked up front (no
GPU here: CUDA asked for is one ConfigError), the same keys in pool.toml, tools through the chat
template or, when it cannot render them, the documented text fallback, never dropped."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rolepool.core import ConfigError, Message, Request, ToolSpec
from rolepool.pools.chat_tools import TOOLS_FALLBACK
from rolepool.pools.config import build_pool, load_pool_config
from rolepool.pools.families_tiny import build_tiny_family
from rolepool.pools.local_model import pick_device
from rolepool.pools.transformers_worker import TransformersWorker

pytestmark = pytest.mark.anyio
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_family("llama", tmp_path_factory.mktemp("llama") / "llama")


def test_device_default_is_cpu_and_auto_takes_cpu_without_cuda():
    assert pick_device(None) == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_where_there_is_none_is_one_config_error(device, llama_dir):
    with pytest.raises(ConfigError, match="CUDA is not available") as info:
        TransformersWorker(llama_dir, device=device)
    assert str(info.value).startswith("device: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "tpu", ""])
def test_an_unknown_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="'cpu', 'cuda', 'cuda:N' or 'auto'"):
        pick_device(device or " ")


@pytest.mark.slow
async def test_dtype_is_honoured(llama_dir):
    worker = TransformersWorker(llama_dir, dtype="bfloat16")
    await worker.load()
    assert next(worker._model.parameters()).dtype == torch.bfloat16
    assert TransformersWorker(llama_dir).dtype == torch.float32  # CPU default
    await worker.aclose()


def _pool_toml(tmp_path, model, **keys) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    text = f'[workers.a]\nbackend = "transformers"\nmodel = "{model}"\n{extra}'
    text += '[policy]\nversion = "1"\n[policy.default]\nchoices = [{ worker = "a" }]\n'
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return path


@no_gpu
def test_pool_toml_device_dtype_and_tool_format(llama_dir, tmp_path):
    path = _pool_toml(tmp_path, llama_dir, device="cpu", dtype="float32", tool_format="pythonic")
    worker = build_pool(load_pool_config(path)).workers["a"]
    assert worker.device == "cpu" and worker.dtype == torch.float32
    assert worker.tool_format == "pythonic"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        build_pool(load_pool_config(_pool_toml(tmp_path, llama_dir, device="cuda:1")))


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [("device", "gpu", "device"), ("dtype", "fp8", "dtype"), ("tool_format", "xml", "tool_format")],
)
def test_pool_toml_refuses_bad_values(tmp_path, key, value, words):
    with pytest.raises(ConfigError, match=words):
        load_pool_config(_pool_toml(tmp_path, "m", **{key: value}))


def test_tool_format_is_detected_when_not_declared(llama_dir):
    assert TransformersWorker(llama_dir).tool_format == "hermes"  # the zoo template's <tool_call>


WEATHER = ToolSpec(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def _prompt(worker: TransformersWorker, request: Request) -> str:
    return worker.tokenizer.decode(worker._prompt_ids(request))


def test_tools_go_through_a_template_that_renders_them(llama_dir):
    worker = TransformersWorker(llama_dir)
    request = Request(messages=[Message(role="user", content="weather?")], tools=[WEATHER])
    prompt = _prompt(worker, request)
    assert worker.template_renders_tools and "get_weather" in prompt
    assert "You can call these tools" not in prompt


def test_a_template_without_tools_gets_the_text_fallback_never_a_silent_prompt(llama_dir, tmp_path):
    plain = shutil.copytree(llama_dir, tmp_path / "plain")
    (plain / "chat_template.jinja").write_text(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    worker = TransformersWorker(plain)
    assert worker.template_renders_tools is False
    bare = Request(messages=[Message(role="user", content="weather?")], tools=[WEATHER])
    with_system = Request(
        messages=[Message(role="system", content="Be brief."), *bare.messages], tools=[WEATHER]
    )
    for request in (bare, with_system):
        prompt = _prompt(worker, request)
        assert "get_weather" in prompt and TOOLS_FALLBACK.split("\n")[0] in prompt
        assert prompt.count("<system>") == 1
    assert "Be brief." in _prompt(worker, with_system)
    no_tools = Request(messages=bare.messages)
    assert "You can call these tools" not in _prompt(worker, no_tools)


@pytest.mark.parametrize(
    ("fmt", "marker"),
    [("granite", "<|tool_call|>"), ("deepseek", "<｜tool▁calls▁begin｜>"), ("harmony", "<|call|>")],
)
def test_tool_markers_that_are_special_tokens_survive_decoding(llama_dir, fmt, marker):
    from transformers import AutoTokenizer

    from rolepool.pools.chat_tools import text_decoder
    from rolepool.tools.parsing import parse_tool_calls

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [marker]})
    ids = tokenizer.encode(f"{marker}x", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert marker not in tokenizer.decode(ids, skip_special_tokens=True)  # what it did before
    text = text_decoder(tokenizer, fmt, [tokenizer.eos_token_id])(ids)
    assert text == f"{marker}x"  # the marker kept, the end-of-sequence token still dropped
    assert text_decoder(tokenizer, "json")(ids) == "x"
    granite = text_decoder(tokenizer, "granite")
    if fmt == "granite":
        calls = parse_tool_calls(granite(tokenizer.encode(
            f'{marker}[{{"name": "f", "arguments": {{}}}}]', add_special_tokens=False
        ))).calls  # fmt: skip
        assert [c.name for c in calls] == ["f"]
