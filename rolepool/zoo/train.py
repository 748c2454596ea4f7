"""Train a reference model: AdamW, linear warmup then cosine decay, loss on the assistant tokens
only, plus the router's load-balancing loss for the MoE.

The shipped MoE recipe is upcycled (`Recipe.upcycle`): its first phase trains a dense model of
the same shape, whose weights then start the MoE for the second phase (`models.upcycle`; the
approach of sparse upcycling, Komatsuzaki et al. 2022, and of Qwen1.5-MoE). Both phases count in
the budget. Trained from random weights in this budget the MoE got about 40% of the dense
model's sequences per second, and most of those went into the long loss plateau before the copy
behaviour forms, which the dense phase passes faster (the model cards' run 14).

Deterministic given `seed` on one machine: the corpus, the tokenizer, the initial weights and the
batch order all derive from it, and torch runs on a fixed number of threads.

The budget is wall-clock time (30 minutes per shipped v2 checkpoint on 2 CPU cores, 15 for v1),
so step speed buys steps: the heap is tuned as the pool worker tunes it, and the shipped recipe
(`shipped_recipe`) sorts batches by length in windows of 16 batches, gives short batches eager
attention and, under bf16, runs the MoE's experts in bf16 (`fast_steps`), padding batches and
experts' rows to multiples of 32 (`pad_multiple`). `bench/train_step.py`
measures that against plain steps (windows of 4, no fast steps: how the first checkpoints were
trained).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rolepool.heap import tune_heap
from rolepool.zoo.corpus import CORPUS_VERSIONS, generate
from rolepool.zoo.models import build_model, make_config, param_counts, upcycle
from rolepool.zoo.tokenizer import MIN_VOCAB_SIZE, VOCAB_SIZE, build_tokenizer, encode

THREADS = 2
# The shipped recipe (v2): as many steps as fit 30 minutes per checkpoint on this 2-core machine on
# 2026-12-03 (a dense step 0.32 s, a MoE step 0.5-0.58 s over whole runs, with pad_multiple 32; v2
# dense-s1 took 1,785 s alone). Alone with OMP_WAIT_POLICY unset, dense-s2 to s4 took 1,467-1,518 s
# and moe-s3 and moe-s4 1,541-1,586 s; under PASSIVE, moe-s2's MoE steps took 1.0 s against 0.57,
# half of it in the kernel (the threads sleep and wake between the experts' small ops), so train
# alone without it. bf16 autocast, a 512-token vocabulary and fast steps (see the "How the recipe
# was chosen" section of the model cards). v1 had 15 minutes on the machine of 2026-11-27 (3,900
# dense steps; 1,300 dense then 1,500 MoE steps), which left v2's moe-s1, on the harder corpus v2,
# at 0.774 exact call on unseen_values, under the 80% bar. The MoE is upcycled: 1,800 dense steps,
# then 2,000 MoE steps, the same batch and lr in both phases (run 14: batch 32 beat run 12's batch
# 16 at lr 3e-3 for the MoE phase, seed 2: 0.834 against 0.799 exact call).
SHIPPED_BY_ARCH: dict[str, dict[str, Any]] = {
    "dense": {"steps": 5400, "batch_size": 32, "lr": 4e-3},
    "moe": {"steps": 2000, "batch_size": 32, "lr": 4e-3, "upcycle": {"steps": 1800}},
}
SHIPPED_SETTINGS: dict[str, Any] = {
    "precision": "bf16",
    "vocab_size": 512,
    "sort_window": 16,
    "fast_steps": True,
    # Wider initial weights than transformers' 0.02 leave the loss plateau (the copy behaviour
    # forming) sooner: see run 13 in the model cards' recipe search.
    "init_std": 0.06,
    # v2: requests composed from frames around each tool's cores (issue 26: generalisation).
    "corpus": 2,
    # Few distinct matmul shapes, so oneDNN's bf16 kernels are reused (see Recipe.pad_multiple).
    "pad_multiple": 32,
}
# With `Recipe.fast_steps`, attention per batch: up to this width, eager attention (scores as one
# matmul, softmax, matmul) is 1.2-1.6x faster per training step on this CPU than SDPA's flash
# kernel, whose backward is slow for 32-wide heads; above it eager's width x width scores outgrow
# the caches and SDPA wins (ad hoc timings of one forward and backward at widths 160-400).
EAGER_ATTENTION_MAX_WIDTH = 256


@dataclass
class Recipe:
    """Everything that determines a checkpoint; saved with it, in its `train_log.json`."""

    arch: str = "dense"
    seed: int = 1
    steps: int = 1500
    batch_size: int = 32
    lr: float = 4e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    train_examples: int = 50_000
    data_seed: int = 0
    # The corpus version (`corpus.CORPUS_VERSIONS`): 2 adds train-only request frames; 1 is what
    # recipes logged before the field existed used.
    corpus: int = 1
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # BPE vocabulary of the tokenizer trained on the corpus (the shipped checkpoints use 512).
    vocab_size: int = VOCAB_SIZE
    # "bf16": matmuls under CPU bf16 autocast (weights, optimizer state and loss stay float32);
    # 1.5x faster per dense step on a CPU with AVX512-BF16. "fp32": everything in float32.
    precision: str = "fp32"
    # Batches are length-sorted within windows of this many batches (less padding when wider;
    # the default is what recipes logged before the field existed used).
    sort_window: int = 4
    # Eager attention for batches up to EAGER_ATTENTION_MAX_WIDTH wide, and under bf16 the MoE's
    # experts in bf16: with sort_window 16, 1.7x (dense) and 1.2-1.6x (MoE) the sequences per
    # second at the shipped batch sizes (bench/train_step.py, BENCHMARKS.md). Off by default, as
    # in recipes logged before the field existed.
    fast_steps: bool = False
    # Batches are padded to a width that is a multiple of this, and under fast_steps each MoE
    # expert's rows to a multiple of it. oneDNN, which runs the bf16 matmuls, builds and caches a
    # kernel per shape; with every width a new shape its cache churned, memory grew (5 to 8 GB in
    # 600 dense steps) and a dense step slowed from 0.34 s to 0.6-0.8 s over a run. With 32: flat
    # at 0.27 s and 4.3 GB (ad hoc timings, 2026-12-03). Padding is masked out of the loss and
    # attention. 1 (no padding) is what recipes logged before the field existed used.
    pad_multiple: int = 1
    # Standard deviation of the initial weights (transformers' default for Llama and Mixtral is
    # 0.02, which recipes logged before the field existed used).
    init_std: float = 0.02
    # MoE only: first train a dense model of the same shape with these fields changed (`steps`,
    # and any of UPCYCLE_KEYS), then continue from it as the MoE (`models.upcycle`: sparse
    # upcycling) for `steps`. Empty: the MoE starts from random weights, as recipes logged before
    # the field did.
    upcycle: dict[str, Any] = field(default_factory=dict)


# The recipe fields `zoo train` has a flag of the same name for (the rest come from the shipped
# recipe or a logged one): the CLI sets them, and a model card's command prints them.
FLAG_FIELDS = (
    "steps",
    "batch_size",
    "lr",
    "precision",
    "vocab_size",
    "sort_window",
    "fast_steps",
    "pad_multiple",
    "init_std",
)
UPCYCLE_KEYS = ("steps", "batch_size", "lr", "warmup", "min_lr_ratio", "seed")
# The shipped MoE's dense phase draws its initial weights and batch order from its own seed,
# `seed + UPCYCLE_SEED_OFFSET`, so no MoE starts from the run of a shipped dense checkpoint (the
# v1 MoE of seed N shared its dense start with dense-sN; the pairs were not independent).
UPCYCLE_SEED_OFFSET = 100
# The shipped MoE's dense phase: the recipe's batch and lr, constant after warmup (it is the
# start of a longer run, not a finished one).
UPCYCLE_DEFAULTS: dict[str, Any] = {"min_lr_ratio": 1.0}


@dataclass
class TrainResult:
    losses: list[float]
    wall_time_s: float
    params: dict[str, int]


def shipped_recipe(arch: str, seed: int) -> Recipe:
    """The recipe the shipped checkpoints of `arch` were trained with, for `seed`."""
    fields = copy.deepcopy({**SHIPPED_BY_ARCH[arch], **SHIPPED_SETTINGS})
    if "upcycle" in fields:
        own_seed = {"seed": seed + UPCYCLE_SEED_OFFSET}
        fields["upcycle"] = {**UPCYCLE_DEFAULTS, **fields["upcycle"], **own_seed}
    return Recipe(arch=arch, seed=seed, **fields)


def lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (
        recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def batches(
    data: list[tuple[list[int], list[int]]], recipe: Recipe, pad_id: int, phase_number: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches: shuffled, then length-sorted within windows of `recipe.sort_window` batches
    (whose order is shuffled again), so less of a batch is padding. An upcycled MoE's phase 1
    draws another order than its dense phase 0."""
    rng = random.Random(recipe.seed + 1_000_003 * phase_number)
    order: list[int] = []
    size = recipe.batch_size * recipe.sort_window
    while True:
        if len(order) < size:
            fresh = list(range(len(data)))
            rng.shuffle(fresh)
            order += fresh
        window, order = order[:size], order[size:]
        window.sort(key=lambda i: len(data[i][0]))
        chunks = [
            window[i : i + recipe.batch_size] for i in range(0, len(window), recipe.batch_size)
        ]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield collate([data[i] for i in chunk], pad_id, recipe.pad_multiple)


def collate(
    rows: list[tuple[list[int], list[int]]], pad_id: int, multiple: int = 1
) -> dict[str, torch.Tensor]:
    """One batch, padded on the right to the longest row's width rounded up to `multiple`."""
    width = -(-max(len(ids) for ids, _ in rows) // multiple) * multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (seq, mask) in enumerate(rows):
        n = len(seq)
        ids[i, :n] = torch.tensor(seq)
        attention[i, :n] = 1
        labels[i, :n] = torch.where(torch.tensor(mask, dtype=torch.bool), ids[i, :n], -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def train(
    recipe: Recipe,
    out: Path | None = None,
    progress: bool = True,
    on_step: Callable[[int, Any, Any], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train per `recipe`; save the model (bf16 weights, float32 config) and tokenizer into `out`.
    `on_step(step, model, tokenizer)` runs after each step (e.g. a quick evaluation);
    `stop_after` ends the run after that many steps of `recipe`'s schedule, counting an upcycled
    MoE's dense steps first (to check a recipe's start against its log without training it
    all). The losses are the whole run's, dense steps first."""
    check(recipe)
    torch.set_num_threads(THREADS)
    tune_heap()  # a step's 0.1-30 MiB activations reuse heap memory instead of fresh mmaps
    phases = [dense_phase(recipe), recipe] if recipe.upcycle else [recipe]
    torch.manual_seed(phases[0].seed)
    examples = generate("train", recipe.train_examples, seed=recipe.data_seed, corpus=recipe.corpus)
    tokenizer = build_tokenizer(examples, vocab_size=recipe.vocab_size)
    configs = [_config(phase, tokenizer) for phase in phases]
    # A conversation longer than the model's context is one it can never be given: left out.
    limit = configs[-1].max_position_embeddings
    data = [row for row in encode(tokenizer, examples) if len(row[0]) <= limit]
    planned = sum(phase.steps for phase in phases)
    total = planned if stop_after is None else min(planned, stop_after)
    losses: list[float] = []
    bar = _progress(total, progress)
    start = time.perf_counter()
    model = None
    report = None if on_step is None else lambda step, m: on_step(step, m, tokenizer)
    for number, (phase, config) in enumerate(zip(phases, configs, strict=True)):
        if number and "seed" in recipe.upcycle:
            # The MoE phase's router from the MoE's own seed, apart from its dense phase's.
            torch.manual_seed(recipe.seed + 1_000_003)
        model = build_model(config) if model is None else upcycle(model, config)
        stream = batches(data, phase, tokenizer.pad_token_id, phase_number=number)
        steps = min(phase.steps, total - len(losses))
        _fit(phase, model, stream, steps, losses, bar, report)
    bar.close()
    result = TrainResult(losses, time.perf_counter() - start, param_counts(model))
    if out is not None:
        save(model, tokenizer, recipe, result, Path(out))
    return result


def check(recipe: Recipe) -> None:
    """Refuse a recipe that cannot train, before any work."""
    if recipe.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', not {recipe.precision!r}")
    if recipe.vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE}, not {recipe.vocab_size}")
    if "initializer_range" in recipe.model_overrides:
        raise ValueError("set the initial weights' std with init_std, not model_overrides")
    if not 0 < recipe.init_std < 1:
        raise ValueError(f"init_std must be between 0 and 1, not {recipe.init_std}")
    if recipe.corpus not in CORPUS_VERSIONS:
        raise ValueError(f"corpus must be one of {CORPUS_VERSIONS}, not {recipe.corpus!r}")
    for key in ("sort_window", "pad_multiple"):
        value = getattr(recipe, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer of at least 1, not {value!r}")
    _check_schedule(recipe, "")
    if not isinstance(recipe.upcycle, dict):
        raise ValueError(f"upcycle must be a dict of recipe fields, not {recipe.upcycle!r}")
    if recipe.upcycle:
        if recipe.arch != "moe":
            raise ValueError(
                f"only a MoE can be upcycled (from a dense model), not {recipe.arch!r}"
            )
        unknown = sorted(set(recipe.upcycle) - set(UPCYCLE_KEYS))
        if unknown:
            raise ValueError(f"upcycle takes {', '.join(UPCYCLE_KEYS)}, not {', '.join(unknown)}")
        seed = recipe.upcycle.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"upcycle seed must be an integer of at least 0, not {seed!r}")
        if "steps" not in recipe.upcycle:
            raise ValueError("upcycle needs steps, at least 1")
        # The dense phase's FFN becomes the experts; weights the MoE has no place for would
        # be dropped, so the MoE would not start out as the dense model.
        biased = sorted(k for k in ("attention_bias", "mlp_bias") if recipe.model_overrides.get(k))
        if biased:
            raise ValueError(f"an upcycled MoE cannot take {', '.join(biased)} (Mixtral has none)")
        _check_schedule(dense_phase(recipe), "upcycle ")


def _check_schedule(recipe: Recipe, where: str) -> None:
    for key, least in (("steps", 1), ("batch_size", 1), ("warmup", 0)):
        value = getattr(recipe, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{where}{key} must be an integer of at least {least}, not {value!r}")
    for key, span, low_ok in (("lr", "(0, 1]", False), ("min_lr_ratio", "[0, 1]", True)):
        value = getattr(recipe, key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not (0 <= value <= 1 if low_ok else 0 < value <= 1):
            raise ValueError(f"{where}{key} must be a number in {span}, not {value!r}")


def dense_phase(recipe: Recipe) -> Recipe:
    """The dense model an upcycled MoE starts from: `recipe` with the `upcycle` fields changed, its
    FFN twice as wide as an expert (what `upcycle` splits)."""
    overrides = dict(recipe.model_overrides)
    if "intermediate_size" in overrides:
        overrides["intermediate_size"] *= 2
    return replace(recipe, arch="dense", upcycle={}, model_overrides=overrides, **recipe.upcycle)


def _config(phase: Recipe, tokenizer: Any) -> Any:
    return make_config(
        phase.arch, tokenizer, initializer_range=phase.init_std, **phase.model_overrides
    )


def _fit(
    recipe: Recipe,
    model: Any,
    stream: Iterator[dict[str, torch.Tensor]],
    steps: int,
    losses: list[float],
    bar: _progress,
    on_step: Callable[..., None] | None,
) -> None:
    """`steps` steps of `recipe`'s schedule on `model`, with a fresh optimizer; appends the
    losses."""
    model.train()
    is_moe = recipe.arch == "moe"
    inference_attention = model.config._attn_implementation
    inference_experts = getattr(model.config, "_experts_implementation", None)
    if is_moe and recipe.fast_steps and recipe.precision == "bf16":
        from transformers.integrations.moe import ExpertsInterface

        experts = functools.partial(_experts_in_bf16, multiple=recipe.pad_multiple)
        ExpertsInterface.register(_BF16_EXPERTS, experts)
        model.config._experts_implementation = _BF16_EXPERTS
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        batch = next(stream)
        if recipe.fast_steps:
            model.config._attn_implementation = _attention_for(batch["input_ids"].shape[1])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
            output = model(**batch, output_router_logits=True) if is_moe else model(**batch)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(output.loss.item())
        bar.update(1, loss=losses[-1])
        if on_step is not None:
            on_step(len(losses), model)
    model.config._attn_implementation = inference_attention
    if is_moe:
        model.config._experts_implementation = inference_experts


_BF16_EXPERTS = "rolepool_bf16_training"


def _experts_in_bf16(
    self: Any,
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    multiple: int = 1,
) -> torch.Tensor:
    """Mixtral's experts for training: each expert's tokens go through `F.linear`, which CPU
    autocast runs in bf16. (transformers' default, `torch._grouped_mm`, is not autocast-aware,
    so under autocast the experts stayed float32.) Same function as the default. An expert's rows
    are padded with zeros to a multiple of `multiple` (its output's padding dropped), so the
    matmuls take few shapes (`Recipe.pad_multiple`)."""
    k = top_k_index.shape[-1]
    flat = top_k_index.reshape(-1)
    order = torch.argsort(flat, stable=True)  # (token, slot) pairs grouped by expert
    token = order // k
    counts = torch.bincount(flat, minlength=self.num_experts).tolist()
    parts = []
    for e, rows in enumerate(hidden.index_select(0, token).split(counts)):
        n = len(rows)
        if n:
            rows = F.pad(rows, (0, 0, 0, -n % multiple))
            gate, up = F.linear(rows, self.gate_up_proj[e]).chunk(2, dim=-1)
            parts.append(F.linear(self.act_fn(gate) * up, self.down_proj[e])[:n])
    out = torch.cat(parts) * top_k_weights.reshape(-1)[order].unsqueeze(-1).to(parts[0].dtype)
    return torch.zeros_like(hidden).index_add_(0, token, out.to(hidden.dtype))


def _attention_for(width: int) -> str:
    return "eager" if width <= EAGER_ATTENTION_MAX_WIDTH else "sdpa"


def save(model: Any, tokenizer: Any, recipe: Recipe, result: TrainResult, out: Path) -> None:
    """bf16 weights keep the wheel small; the config says float32, so loading upcasts on CPU."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    if hasattr(model.config, "num_local_experts"):
        model.config.output_router_logits = False  # training turned it on; inference needs not
    model.to(torch.bfloat16).save_pretrained(out)
    model.to(torch.float32)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out)
    log = {
        "recipe": asdict(recipe),
        "params": result.params,
        "wall_time_s": round(result.wall_time_s, 1),
        "losses": [round(x, 5) for x in result.losses],
        "threads": THREADS,
        "torch": torch.__version__,
    }
    (out / "train_log.json").write_text(json.dumps(log) + "\n")


class _progress:
    """A tqdm bar showing a smoothed loss; silent when `enabled` is False."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, disable=not enabled, unit="step", dynamic_ncols=True)
        self.smooth: float | None = None

    def update(self, n: int, loss: float) -> None:
        self.smooth = loss if self.smooth is None else 0.95 * self.smooth + 0.05 * loss
        self.bar.update(n)
        self.bar.set_postfix(loss=f"{self.smooth:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
