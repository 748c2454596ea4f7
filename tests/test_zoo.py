"""The reference model zoo: corpus, tokenizer and chat template, training, shipped checkpoints."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rolepool.tools import parse_tool_calls, validate_arguments
from rolepool.zoo import checkpoint_path, list_checkpoints
from rolepool.zoo.corpus import SPLITS, generate, user_texts
from rolepool.zoo.toolset import ROLE_TOOLS, WORKER_ROLES, openai_tools, schema, tool_spec
from rolepool.zoo.values import LETTERS_SHARE, Values

SHIPPED = list_checkpoints()
needs_checkpoints = pytest.mark.skipif(not SHIPPED, reason="no checkpoint shipped yet")
EXPECTED_PARAMS = {"dense": (1_115_264, 1_115_264), "moe": (3_478_656, 1_119_360)}


@pytest.fixture(scope="module")
def tokenizer():
    from rolepool.zoo.tokenizer import build_tokenizer

    return build_tokenizer(generate("train", 1500, seed=0))


def _dump(examples):
    return [json.dumps([e.messages, e.tools, e.meta], sort_keys=True) for e in examples]


# -- tools ------------------------------------------------------------------------------------
def test_toolset_matches_the_agents_table():
    assert ROLE_TOOLS["planner"] == ("assign", "finish")
    assert schema("assign")["properties"]["role"]["enum"] == ["coder", "search", "writer"]
    timeout = schema("run_python")["properties"]["timeout_s"]
    assert (timeout["minimum"], timeout["maximum"], timeout["default"]) == (1, 60, 10)
    top_k = schema("search_docs")["properties"]["top_k"]
    assert (top_k["minimum"], top_k["maximum"], top_k["default"]) == (1, 20, 5)
    assert schema("write_file")["required"] == ["path", "content"]
    assert validate_arguments(schema("run_python"), {"code": "print(1)", "timeout_s": 61})
    assert tool_spec("finish").parameters["required"] == ["answer"]


# -- corpus -----------------------------------------------------------------------------------
def test_generator_is_deterministic():
    for split in SPLITS:
        assert _dump(generate(split, 200, seed=3)) == _dump(generate(split, 200, seed=3))
    assert _dump(generate("train", 50, seed=3)) != _dump(generate("train", 50, seed=4))


def test_held_out_requests_never_appear_in_train():
    train = generate("train", 20_000, seed=0)
    seen = user_texts(train)
    phrasings = generate("unseen_phrasings", 600, seed=7)
    assert not user_texts(phrasings) & seen
    values = generate("unseen_values", 600, seed=7)
    # No-call requests carry no value, so in `unseen_values` they are train phrasings by design.
    with_values = [e for e in values if e.meta["category"] != "no_call"]
    assert not user_texts(with_values) & seen
    # A target may still coincide by chance: `finish` with "The output is 11." or the fixed
    # answer for a ZeroDivisionError. Requests never do.
    train_targets = {json.dumps(e.meta["expected"], sort_keys=True) for e in train}
    targets = [json.dumps(e.meta["expected"], sort_keys=True) for e in phrasings + with_values]
    targets = [t for t in targets if t != "[]"]
    assert sum(t in train_targets for t in targets) < 0.05 * len(targets)


def test_corpus_covers_every_category_and_valid_calls():
    examples = generate("train", 2000, seed=0)
    cats = {(e.meta["role"], e.meta["category"]) for e in examples}
    assert {c for _, c in cats} == {"single", "parallel", "multi_turn", "no_call", "refusal"}
    for ex in examples:
        assert ex.messages[-1]["role"] == "assistant"
        for call in ex.meta["expected"]:
            assert call["name"] in ROLE_TOOLS[ex.meta["role"]]
            assert not validate_arguments(schema(call["name"]), call["arguments"])
        if ex.meta["category"] == "parallel":
            assert len(ex.meta["expected"]) >= 2
        if ex.meta["category"] == "refusal":
            assert ex.meta["refer_role"] in ex.messages[-1]["content"]


def test_dialogue_results_have_the_shapes_the_workflow_shows():
    """Multi-turn results look as the built-in tools and the workflow produce them, cut as
    `rolepool run` cuts them on the built-in pool, so what the models read in a run is what they
    were trained on."""
    import re

    from rolepool.agents.run_cli import TINY_RESULT_CHARS
    from rolepool.core import ToolError, ToolResult
    from rolepool.core.messages import tool_message
    from rolepool.tools.builtin.docs import default_collection
    from rolepool.tools.results import format_result
    from rolepool.zoo.dialogues import RESULT_CHARS

    assert TINY_RESULT_CHARS == RESULT_CHARS
    hit = re.compile(r"^\[[^\]\s]+\] \S.* — \S")
    with default_collection() as docs:  # the real tool's lines have the trained shape
        lines = [f"[{h.doc_id}] {h.title} — {h.snippet}" for h in docs.search("routing", 5)]
    assert lines and all(hit.match(line) for line in lines)
    error = str(ToolError("the search step failed: x", tool="assign"))
    failed = tool_message(ToolResult(call_id="c", name="assign", error=f"ToolError: {error}"))
    failed_prefix = failed.content[: failed.content.index("search step")]
    seen: dict[str, int] = {"search_docs": 0, "read_doc": 0, "assign": 0, "cut": 0}
    for ex in generate("train", 3000, seed=1):
        for m in ex.messages:
            if m["role"] != "tool":
                continue
            content = m["content"]
            assert len(content) <= len(format_result("x" * 10_000, max_chars=RESULT_CHARS))
            seen["cut"] += "[truncated:" in content
            body = content.split("\n…[truncated:")[0]
            if m["name"] == "search_docs" and body != "No results.":
                seen["search_docs"] += 1
                *whole, last = body.split("\n")
                assert all(hit.match(line) for line in whole) and last[:1] in ("", "[")
            elif m["name"] == "read_doc":
                seen["read_doc"] += 1
                assert re.match(r"^\[[^\]]+\] .+\n\n# ", body)
            elif m["name"] == "assign":
                seen["assign"] += 1
                assert body.startswith(failed_prefix) or body.split(": ")[0] in WORKER_ROLES
    assert min(seen.values()) > 20


# -- tokenizer and chat template ----------------------------------------------------------------
def test_template_renders_tools_calls_and_results(tokenizer):
    msgs = [
        {"role": "system", "content": "You are the planner agent."},
        {
            "role": "user",
            "content": "Have the coder fix the plis parser and the writer draft notes.",
        },
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {
                        "name": "assign",
                        "arguments": {"role": "coder", "task": "fix the plis parser"},
                    },
                },
                {
                    "type": "function",
                    "function": {
                        "name": "assign",
                        "arguments": json.dumps({"role": "writer", "task": "draft notes"}),
                    },
                },
            ],
        },
        {"role": "tool", "content": "coder: done"},
        {"role": "tool", "content": "writer: done"},
    ]
    out = tokenizer.apply_chat_template(
        msgs, tools=openai_tools("planner"), tokenize=False, add_generation_prompt=True
    )
    assert "assign(role:coder|search|writer,task:str);finish(answer:str)" in out
    assert out.endswith("<|tool|>writer: done<|assistant|>")
    enc = tokenizer.apply_chat_template(
        msgs, tools=openai_tools("planner"), return_dict=True, return_assistant_tokens_mask=True
    )
    span = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert span[-1] == tokenizer.eos_token_id
    parsed = parse_tool_calls(tokenizer.decode(span, skip_special_tokens=True))
    assert [(c.name, c.arguments) for c in parsed.calls] == [
        ("assign", {"role": "coder", "task": "fix the plis parser"}),
        ("assign", {"role": "writer", "task": "draft notes"}),
    ]
    coder = tokenizer.apply_chat_template(msgs[1:2], tools=openai_tools("coder"), tokenize=False)
    assert "run_python(code:str,timeout_s:int[1..60]=10)" in coder


def test_random_letter_values_are_held_out_by_hash_and_drawn_at_their_share():
    train, held = Values(random.Random(0), held_out=False), Values(random.Random(0), held_out=True)
    seen = {train.letters() for _ in range(3000)}
    unseen = {held.letters() for _ in range(3000)}
    assert not seen & unseen
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 9 for w in seen | unseen)
    # word() draws random letters for LETTERS_SHARE of its pseudo-words.
    drawn = []
    train.letters = lambda: drawn.append(1) or "qzx"
    words = [train.word(pseudo_p=0.8) for _ in range(4000)]
    assert abs(len(drawn) / len(words) - 0.8 * LETTERS_SHARE) < 0.03


def test_values_tokenize_the_same_in_request_and_call(tokenizer):
    value = "plis woofus trezais 42"
    alone = tokenizer.encode(value, add_special_tokens=False)
    in_request = tokenizer.encode(f"Search the docs for {value}.", add_special_tokens=False)
    in_call = tokenizer.encode(json.dumps({"query": value}), add_special_tokens=False)
    for seq in (in_request, in_call):
        assert any(seq[i : i + len(alone)] == alone for i in range(len(seq)))


# -- scoring --------------------------------------------------------------------------------------
def _call(name, **arguments):
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_scoring_is_order_free_fills_defaults_and_checks_refusals():
    from rolepool.zoo.corpus import Example
    from rolepool.zoo.evaluate import score_item

    expected = [
        {"name": "assign", "arguments": {"role": "coder", "task": "a"}},
        {"name": "assign", "arguments": {"role": "writer", "task": "b"}},
    ]
    parallel = Example([], [], {"role": "planner", "category": "parallel", "expected": expected})
    swapped = _call("assign", role="writer", task="b") + _call("assign", role="coder", task="a")
    assert score_item(parallel, swapped)["exact_call"]
    wrong = _call("assign", role="writer", task="b") + _call("assign", role="coder", task="x")
    checks = score_item(parallel, wrong)
    assert checks["tool_name"] and checks["schema_valid"] and not checks["exact_call"]
    bad_enum = _call("assign", role="boss", task="b") + _call("assign", role="coder", task="a")
    assert not score_item(parallel, bad_enum)["schema_valid"]

    search = [{"name": "search_docs", "arguments": {"query": "q"}}]
    single = Example([], [], {"role": "search", "category": "single", "expected": search})
    assert score_item(single, _call("search_docs", query="q", top_k=5))["exact_call"]
    assert not score_item(single, _call("search_docs", query="q", top_k=6))["exact_call"]
    assert not score_item(single, '<tool_call>{"name": "search_docs", "arguments": {')[
        "parse_valid"
    ]

    meta = {"role": "coder", "category": "refusal", "expected": [], "refer_role": "search"}
    refusal = Example([], [], meta)
    assert score_item(refusal, "I am the coder agent; ask the search agent.")["refusal"]
    assert not score_item(refusal, "I am the coder agent; ask the writer agent.")["refusal"]
    assert not score_item(refusal, _call("search_docs", query="q"))["no_call"]


# -- training -------------------------------------------------------------------------------
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
)
# A few quick steps on a small corpus (the tiny training tests).
TINY_RUN = dict(batch_size=8, lr=1e-2, warmup=2, train_examples=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "precision", "fast"),
    [
        ("dense", "fp32", False),
        ("moe", "fp32", False),
        ("dense", "bf16", False),
        ("dense", "bf16", True),
        ("moe", "bf16", True),
    ],
)
def test_tiny_training_learns_and_round_trips(arch, precision, fast, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from rolepool.zoo.tokenizer import encode
    from rolepool.zoo.train import Recipe, collate, train

    overrides = dict(TINY, intermediate_size=32 if arch == "moe" else 64)
    recipe = Recipe(
        arch=arch,
        seed=5,
        steps=12,
        **TINY_RUN,
        model_overrides=overrides,
        precision=precision,
        sort_window=16 if fast else 4,
        fast_steps=fast,
    )
    first = train(recipe, out=tmp_path / "m", progress=False)
    again = train(recipe, progress=False)
    assert first.losses == again.losses  # same seed, same curve
    assert sum(first.losses[-3:]) / 3 < sum(first.losses[:3]) / 3 - 0.5
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert next(model.parameters()).dtype == torch.float32
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    batch = collate(encode(tok, generate("train", 4, seed=0)), tok.pad_token_id)
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert loss < first.losses[0]  # the saved weights are the trained ones (bf16-rounded)


@pytest.mark.parametrize("multiple", [1, 32])
def test_bf16_training_experts_compute_what_the_default_experts_do(multiple):
    """The MoE's training-time experts (per-expert `F.linear`, so autocast can run them in bf16)
    are the same function as transformers' default grouped experts, in float32, including
    experts that get no token, with each expert's rows padded to a multiple or not."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM
    from transformers.integrations.moe import grouped_mm_experts_forward

    from rolepool.zoo.train import _experts_in_bf16

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=300, num_local_experts=8, num_experts_per_tok=2, **TINY)
    experts = MixtralForCausalLM(config).model.layers[0].mlp.experts
    hidden = torch.randn(40, TINY["hidden_size"])
    first = torch.randint(0, 6, (40,))  # experts 6 and 7 get no token in the first slot
    index = torch.stack([first, (first + 1) % 7], dim=1)
    weights = torch.rand(40, 2)
    ours = _experts_in_bf16(experts, hidden, index, weights, multiple=multiple)
    assert torch.allclose(
        ours, grouped_mm_experts_forward(experts, hidden, index, weights), atol=1e-6
    )
    ours.sum().backward()
    assert experts.gate_up_proj.grad[7].abs().sum() == 0  # an idle expert gets no gradient
    assert experts.gate_up_proj.grad[0].abs().sum() > 0


def test_padding_a_batch_to_a_multiple_is_masked_out_of_the_loss(tokenizer):
    """`Recipe.pad_multiple` widens a batch to a multiple of it; the extra columns are padding
    (no attention, no label), so the model's loss is the unpadded batch's."""
    import torch

    from rolepool.zoo.models import build_model, make_config
    from rolepool.zoo.tokenizer import encode
    from rolepool.zoo.train import collate

    rows = encode(tokenizer, generate("train", 5, seed=4))
    longest = max(len(ids) for ids, _ in rows)
    plain = collate(rows, tokenizer.pad_token_id)
    padded = collate(rows, tokenizer.pad_token_id, multiple=32)
    width = padded["input_ids"].shape[1]
    assert plain["input_ids"].shape[1] == longest
    assert width % 32 == 0 and longest <= width < longest + 32
    assert (padded["attention_mask"][:, longest:] == 0).all()
    assert (padded["labels"][:, longest:] == -100).all()
    for key in plain:
        assert torch.equal(padded[key][:, :longest], plain[key])
    torch.manual_seed(0)
    model = build_model(make_config("dense", tokenizer, **TINY)).eval()
    with torch.no_grad():
        assert torch.allclose(model(**padded).loss, model(**plain).loss, atol=1e-5)
    assert collate(rows, tokenizer.pad_token_id, multiple=1)["input_ids"].shape[1] == longest


def test_model_overrides_reach_the_moe_settings_too(tokenizer):
    from rolepool.zoo.models import make_config

    config = make_config("moe", tokenizer, router_aux_loss_coef=0.05, num_local_experts=4)
    assert (config.router_aux_loss_coef, config.num_local_experts) == (0.05, 4)
    assert make_config("moe", tokenizer).router_aux_loss_coef == 0.01  # the shipped default


def test_an_upcycled_moe_computes_what_its_dense_model_computes(tokenizer):
    """Sparse upcycling keeps the dense model's function: each expert is half the dense FFN
    (doubled), and paired router rows make top-2 pick one of each half with weight 1/2."""
    import torch

    from rolepool.zoo.models import build_model, make_config, upcycle
    from rolepool.zoo.tokenizer import encode
    from rolepool.zoo.train import collate

    torch.manual_seed(0)
    dense = build_model(make_config("dense", tokenizer, initializer_range=0.1, **TINY)).eval()
    config = make_config(
        "moe", tokenizer, initializer_range=0.1, **dict(TINY, intermediate_size=32)
    )
    moe = upcycle(dense, config).eval()
    assert moe.config.rope_parameters == dense.config.rope_parameters  # Mixtral's default differs
    batch = collate(encode(tokenizer, generate("train", 4, seed=3)), tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(moe(**batch).logits, dense(**batch).logits, atol=1e-4)
    router = moe.model.layers[1].mlp.gate.weight
    assert torch.equal(router[:4], router[4:]) and not torch.equal(router[0], router[1])
    with pytest.raises(ValueError, match="each half as wide as the dense FFN"):
        upcycle(dense, make_config("moe", tokenizer, **TINY))  # experts as wide as the FFN


@pytest.mark.slow
def test_an_upcycled_recipe_trains_dense_then_moe_and_reproduces(tmp_path):
    from transformers import AutoModelForCausalLM

    from rolepool.zoo.train import Recipe, train

    recipe = Recipe(
        arch="moe",
        seed=2,
        steps=5,
        **TINY_RUN,
        model_overrides=dict(TINY, intermediate_size=32),
        upcycle={"steps": 6, "batch_size": 4, "lr": 2e-2},
    )
    seen: list[tuple[int, str, int]] = []

    def on_step(step, model, tokenizer):
        seen.append((step, type(model).__name__, model.training))

    first = train(recipe, out=tmp_path / "m", progress=False, on_step=on_step)
    assert [s for s, _, _ in seen] == list(range(1, 12))
    assert {name for _, name, _ in seen[:6]} == {"LlamaForCausalLM"}
    assert {name for _, name, _ in seen[6:]} == {"MixtralForCausalLM"}
    assert len(first.losses) == 11 and first.losses == train(recipe, progress=False).losses
    assert train(recipe, progress=False, stop_after=4).losses == first.losses[:4]
    assert train(recipe, progress=False, stop_after=8).losses == first.losses[:8]  # 6 + 2
    assert all(training for _, _, training in seen)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config.num_local_experts == 8
    log = json.loads((tmp_path / "m" / "train_log.json").read_text())
    assert Recipe(**log["recipe"]) == recipe and len(log["losses"]) == 11


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arch": "dense", "upcycle": {"steps": 5}}, "only a MoE can be upcycled"),
        ({"upcycle": {"steps": 5, "momentum": 0.9}}, "not momentum"),
        ({"upcycle": {"lr": 1e-3}}, "upcycle needs steps"),
        ({"upcycle": {"steps": 0}}, "upcycle steps must be an integer of at least 1, not 0"),
        ({"upcycle": {"steps": True}}, "upcycle steps must be an integer of at least 1, not True"),
        ({"upcycle": 1300}, "upcycle must be a dict of recipe fields, not 1300"),
        ({"upcycle": {"steps": 9, "batch_size": -4}}, "upcycle batch_size must be an integer"),
        ({"upcycle": {"steps": 9, "lr": 0}}, r"upcycle lr must be a number in \(0, 1\]"),
        ({"upcycle": {"steps": 9}, "model_overrides": {"mlp_bias": True}}, "cannot take mlp_bias"),
        ({"lr": -0.1}, r"lr must be a number in \(0, 1\], not -0.1"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1, not 0"),
        ({"min_lr_ratio": 1.5}, r"min_lr_ratio must be a number in \[0, 1\], not 1.5"),
    ],
)
def test_a_bad_recipe_is_refused_before_training(fields, message):
    from rolepool.zoo.train import Recipe, train

    with pytest.raises(ValueError, match=message):
        train(Recipe(**{"arch": "moe", **fields}), progress=False)


def test_the_dense_phase_is_the_recipe_with_the_upcycle_fields_changed():
    from rolepool.zoo.train import Recipe, dense_phase

    recipe = Recipe(
        arch="moe",
        steps=50,
        lr=1e-3,
        batch_size=8,
        model_overrides=dict(TINY, intermediate_size=32),
        upcycle={"steps": 20, "lr": 2e-3},
    )
    phase = dense_phase(recipe)
    assert (phase.arch, phase.steps, phase.lr, phase.batch_size) == ("dense", 20, 2e-3, 8)
    assert phase.upcycle == {} and phase.model_overrides["intermediate_size"] == 64
    assert recipe.model_overrides["intermediate_size"] == 32  # the recipe itself is untouched


def test_upcycling_refuses_weights_the_moe_has_no_place_for(tokenizer):
    from rolepool.zoo.models import build_model, make_config, upcycle

    dense = build_model(make_config("dense", tokenizer, mlp_bias=True, **TINY))
    with pytest.raises(ValueError, match="no place for: model.layers.0.mlp.gate_proj.bias"):
        upcycle(dense, make_config("moe", tokenizer, **dict(TINY, intermediate_size=32)))


def test_training_attention_follows_the_batch_width():
    from rolepool.zoo.train import EAGER_ATTENTION_MAX_WIDTH, _attention_for

    assert _attention_for(EAGER_ATTENTION_MAX_WIDTH) == "eager"
    assert _attention_for(EAGER_ATTENTION_MAX_WIDTH + 1) == "sdpa"


def test_an_unknown_precision_is_refused_before_training():
    from rolepool.zoo.train import Recipe, train

    with pytest.raises(ValueError, match="precision"):
        train(Recipe(precision="fp8"), progress=False)
    with pytest.raises(ValueError, match="vocab_size"):
        train(Recipe(vocab_size=100), progress=False)
    with pytest.raises(ValueError, match="sort_window"):
        train(Recipe(sort_window=0), progress=False)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="pad_multiple must be an integer of at least 1"):
            train(Recipe(pad_multiple=bad), progress=False)
    with pytest.raises(ValueError, match="init_std"):
        train(Recipe(init_std=0.0), progress=False)
    with pytest.raises(ValueError, match="init_std, not model_overrides"):
        train(Recipe(model_overrides={"initializer_range": 0.1}), progress=False)


@pytest.mark.slow  # saves and loads a tiny model
def test_the_recipes_init_std_sets_the_initial_weights(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from rolepool.zoo.train import Recipe, train

    for std in (0.02, 0.2):
        recipe = Recipe(
            arch="moe", train_examples=300, model_overrides=TINY, init_std=std, precision="fp32"
        )
        train(recipe, out=tmp_path / str(std), progress=False, stop_after=0)  # untrained
        model = AutoModelForCausalLM.from_pretrained(tmp_path / str(std))
        assert model.config.initializer_range == std
        for name, p in model.named_parameters():
            if p.dim() >= 2:  # embeddings, projections, experts and router
                assert torch.std(p.float()).item() == pytest.approx(std, rel=0.15), name


@pytest.mark.slow  # trains a tiny model a step
def test_conversations_longer_than_the_context_are_left_out_of_training(monkeypatch):
    from rolepool.zoo import train as zoo_train

    seen: list[int] = []
    real = zoo_train.batches

    def spy(data, recipe, pad_id, **kwargs):
        seen.extend(len(ids) for ids, _ in data)
        return real(data, recipe, pad_id, **kwargs)

    monkeypatch.setattr(zoo_train, "batches", spy)
    recipe = zoo_train.Recipe(
        steps=1,
        batch_size=2,
        warmup=1,
        train_examples=300,
        model_overrides=dict(TINY, max_position_embeddings=120),
    )
    zoo_train.train(recipe, progress=False)
    assert seen and max(seen) <= 120
    assert len(seen) < 300  # some were longer


@pytest.mark.slow  # trains a tiny model a step
def test_the_recipes_vocabulary_size_sizes_the_tokenizer_and_the_model(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from rolepool.zoo.train import Recipe, train

    recipe = Recipe(
        steps=1, batch_size=2, warmup=1, train_examples=300, model_overrides=TINY, vocab_size=400
    )
    train(recipe, out=tmp_path / "m", progress=False)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "m")) == 400
    assert AutoConfig.from_pretrained(tmp_path / "m").vocab_size == 400


# -- shipped checkpoints ------------------------------------------------------------------------
@needs_checkpoints
@pytest.mark.slow
@pytest.mark.parametrize("name", [c["name"] for c in SHIPPED])
def test_shipped_checkpoint_loads_and_calls(name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint_path(name)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    card = json.loads((path / "card.json").read_text())
    from rolepool.zoo.models import param_counts

    counts = param_counts(model)
    assert (counts["total"], counts["active"]) == EXPECTED_PARAMS[card["architecture"]]
    assert (card["params_total"], card["params_active"]) == (counts["total"], counts["active"])
    msgs = [
        {"role": "system", "content": "You are the search agent."},
        # A training template with new values. (moe-s1 answers the variant "..., top 4 results."
        # with a refusal that refers to its own role: a known weakness, in the session notes.)
        {"role": "user", "content": "Search the docs for mixture of experts."},
    ]
    ids = tok.apply_chat_template(
        msgs,
        tools=openai_tools("search"),
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=60, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    calls = parse_tool_calls(text).calls
    assert [c.name for c in calls] == ["search_docs"], text
    assert not validate_arguments(schema("search_docs"), calls[0].arguments)


@needs_checkpoints
@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense-s1", "moe-s1"])
def test_a_shipped_recipe_reproduces_its_logged_loss_curve(name):
    """`rolepool zoo train` with a card's recipe retraces the checkpoint's logged losses (the
    first steps: same corpus, tokenizer, initial weights, batch order and schedule; for the
    upcycled MoE these are dense steps, see the next test for its MoE steps)."""
    from rolepool.zoo.train import Recipe, train

    log = json.loads((checkpoint_path(name) / "train_log.json").read_text())
    recipe = Recipe(**log["recipe"])
    steps = 12
    result = train(recipe, progress=False, stop_after=steps)
    assert result.losses == pytest.approx(log["losses"][:steps], rel=1e-3, abs=1e-4)


@needs_checkpoints
@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("ROLEPOOL_LONG_TESTS"),
    reason="replays an upcycled MoE's 1,800 dense steps (~9 min); set ROLEPOOL_LONG_TESTS=1",
)
@pytest.mark.timeout(1800)
def test_an_upcycled_recipe_reproduces_its_logged_moe_steps():
    """The test above replays only the dense phase of an upcycled MoE; this one goes on through
    the upcycling into the MoE's first steps."""
    from rolepool.zoo.train import Recipe, train

    log = json.loads((checkpoint_path("moe-s1") / "train_log.json").read_text())
    recipe = Recipe(**log["recipe"])
    steps = recipe.upcycle["steps"] + 12
    result = train(recipe, progress=False, stop_after=steps)
    assert result.losses[-12:] == pytest.approx(
        log["losses"][steps - 12 : steps], rel=1e-3, abs=1e-4
    )


def test_zoo_list_command(capsys):
    from rolepool.cli import main

    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for c in SHIPPED:
        assert c["name"] in out


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--vocab-size", "100", "must be at least 300, not 100"),
        ("--steps", "0", "must be at least 1, not 0"),
        ("--batch-size", "-2", "must be at least 1, not -2"),
        ("--steps", "many", "invalid int value: 'many'"),
        ("--sort-window", "0", "must be at least 1, not 0"),
        ("--init-std", "0", "must be above 0 and below 1, not 0.0"),
        ("--init-std", "wide", "invalid float value: 'wide'"),
    ],
)
def test_zoo_train_refuses_bad_numbers_before_any_work(tmp_path, capsys, flag, value, message):
    from rolepool.cli import main

    out = tmp_path / "m"
    assert main(["zoo", "train", "--arch", "dense", flag, value, "--out", str(out)]) == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_zoo_train_refuses_a_recipe_that_cannot_train_before_any_work(tmp_path, capsys):
    from rolepool.cli import main

    out = tmp_path / "m"
    assert main(["zoo", "train", "--arch", "dense", "--upcycle-steps", "5", "--out", str(out)]) == 2
    assert "only a MoE can be upcycled (from a dense model)" in capsys.readouterr().err
    assert not out.exists()


def test_zoo_train_flags_reach_the_recipe(tmp_path, monkeypatch, capsys):
    import rolepool.zoo.train as zoo_train
    from rolepool.cli import main
    from rolepool.zoo.train import Recipe, TrainResult, shipped_recipe

    seen: list[Recipe] = []

    def fake_train(recipe, out=None, progress=True):
        seen.append(recipe)
        return TrainResult(losses=[1.0], wall_time_s=0.0, params={"total": 1, "active": 1})

    monkeypatch.setattr(zoo_train, "train", fake_train)
    base = ["zoo", "train", "--arch", "moe", "--quiet", "--out", str(tmp_path / "m")]
    assert main(base) == 0
    assert (
        main([*base, "--vocab-size", "1024", "--sort-window", "4", "--no-fast-steps"])
        + main([*base, "--pad-multiple", "1"])
        + main([*base, "--init-std", "0.03"])
        + main([*base, "--upcycle-steps", "0"])
        + main([*base, "--upcycle-steps", "40"])
        == 0
    )
    shipped, plain, unpadded, narrow, scratch, short = seen
    assert shipped == shipped_recipe("moe", 1)
    assert (shipped.steps, shipped.vocab_size, shipped.sort_window, shipped.fast_steps) == (
        2000,
        512,
        16,
        True,
    )
    assert (shipped.pad_multiple, unpadded.pad_multiple) == (32, 1)
    assert (shipped.batch_size, shipped.lr) == (32, 4e-3)
    assert shipped_recipe("dense", 1).batch_size == 32
    assert (plain.vocab_size, plain.sort_window, plain.fast_steps) == (1024, 4, False)
    assert (shipped.init_std, narrow.init_std) == (0.06, 0.03)
    # The dense phase has its own seed: no MoE shares its start with dense-s1.
    assert shipped.upcycle == {"steps": 1800, "min_lr_ratio": 1.0, "seed": 101}
    assert scratch.upcycle == {} and short.upcycle == dict(shipped.upcycle, steps=40)
    capsys.readouterr()
    assert main(["zoo", "train", "--arch", "dense", "--upcycle-steps", "9", "--out", "x"]) == 2
    assert "only a MoE can be upcycled (from a dense model), not 'dense'" in (
        capsys.readouterr().err
    )
    assert len(seen) == 6  # refused before training


# -- the fast test subset -----------------------------------------------------------------------
def test_tests_that_use_a_model_fixture_are_left_out_of_the_fast_subset(tmp_path):
    """conftest.py marks a test `slow` when it uses a model-building fixture, itself or through
    another fixture, so `pytest -m "not slow"` (README, Contributing) loads no model."""
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\n\n"
        "@pytest.fixture\ndef lively(tiny_dense_dir):\n    return tiny_dense_dir\n\n\n"
        "def test_direct(tiny_moe_dir):\n    pass\n\n\n"
        "def test_through_a_fixture(lively):\n    pass\n\n\n"
        "def test_no_model(tmp_path):\n    pass\n"
    )
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    argv += ["-o", "markers=slow: loads a model", "-m", "not slow", str(tmp_path)]
    fast = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
    assert fast.returncode == 0, fast.stdout + fast.stderr
    assert [line for line in fast.stdout.splitlines() if "::" in line] == [
        "test_probe.py::test_no_model"
    ]
    assert "(2 deselected)" in fast.stdout  # test_direct and test_through_a_fixture
