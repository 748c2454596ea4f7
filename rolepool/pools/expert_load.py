"""Per-request expert load for MoE models, recorded with hooks on the experts modules.

transformers' `generate()` does not return router logits, so two methods were on the table:

* one extra teacher-forced forward per batch with `output_router_logits=True` after generation:
  simple, but it re-runs the whole model over prompt + output, roughly a second prefill per batch;
* forward pre-hooks on every experts module while the model decodes: the routing decision the
  model actually used (`top_k_index`, the experts' second argument in transformers 5.x MoE blocks;
  gpt-oss calls it `router_indices`)
  is copied per forward call. The decode engine (`rolepool.pools.decode`) takes it after each
  forward (`take`) and adds it to the rows that were in that forward; the `generate` fallback picks
  each request's rows and positions out afterwards (`stop`).

We use the hooks: they cost one small integer copy per layer per decode step and no extra
forward, and they count exactly what the model computed, not a replay of it. Measured by
`bench/pool_throughput.py` on the 4-layer, 8-expert reference MoE (2-core CPU): the hooks plus the
counting take about 1% of decode time (0.75% with the decode engine, `telemetry_cost_direct`), and
tokens/s with telemetry on vs off differ by less than the run-to-run noise at concurrency 16-64; a
replay forward would cost roughly a prefill's worth per batch instead.

Counting rule (what `Completion.expert_load` means): a request's tokens are those the model
processed for it: its prompt and every generated token fed back in, i.e. all but the last one kept.
Left padding, tokens after the row stopped (EOS, its own max_tokens, a stop string) and other rows
are excluded, so each layer sums to `(prompt_tokens + completion_tokens - 1) * top_k`, and a request
gets the same counts whether it ran alone or in a batch.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "ExpertRecorder",
    "RowSpan",
    "architecture_of",
    "experts_per_token",
    "find_experts_modules",
    "moe_param_counts",
]


EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def architecture_of(config: Any) -> Literal["moe", "dense"]:
    """`moe` when the config declares more than one routed expert, else `dense`."""
    for key in EXPERT_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            return "moe"
    return "dense"


_ROUTING_ARGUMENTS = ("top_k_index", "router_indices")
"""What the experts module calls the routing its family's router chose (gpt-oss: router_indices)."""


def _takes_top_k_index(module: nn.Module) -> bool:
    try:
        params = inspect.signature(type(module).forward).parameters
    except (TypeError, ValueError):
        return False
    return any(name in params for name in _ROUTING_ARGUMENTS)


def find_experts_modules(model: nn.Module) -> list[nn.Module]:
    """The fused experts modules of a transformers 5.x MoE model, in layer order.

    They are recognised by their forward taking `top_k_index` (Mixtral, Qwen-MoE, DeepSeek and
    friends share this shape) or `router_indices` (gpt-oss), which is more robust than matching
    class names.
    """
    found = [m for m in model.modules() if _takes_top_k_index(m) and hasattr(m, "num_experts")]
    return found


def experts_per_token(config: Any) -> int:
    for key in ("num_experts_per_tok", "moe_top_k", "top_k"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1


def moe_param_counts(model: nn.Module, top_k: int) -> tuple[int, int]:
    """(total, active) parameters: active drops the experts a token does not use.

    Shared (tied) parameters are counted once. Each MoE layer contributes
    `(num_experts - top_k) * per_expert_params` inactive parameters; routers, shared experts and
    everything else count as active.
    """
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for experts in find_experts_modules(model):
        n = int(experts.num_experts)
        per_expert = sum(p.numel() for p in experts.parameters()) // max(n, 1)
        inactive += max(n - top_k, 0) * per_expert
    return total, total - inactive


@dataclass(frozen=True)
class RowSpan:
    """Where one request sits in a padded batch: its padded-position range [start, stop)."""

    start: int
    stop: int


@dataclass
class ExpertRecorder:
    """Copies each experts module's routing (`top_k_index`) while recording is on.

    Hooks stay registered for the model's lifetime and are no-ops outside `recording`; only the
    worker's single generate thread turns recording on, so no lock is needed.
    """

    modules: list[nn.Module]
    num_experts: int
    top_k: int
    seconds: float = field(default=0.0, init=False)
    """Time spent in the hooks and in counting: the telemetry's own cost, for the stats."""
    _steps: list[list[torch.Tensor]] | None = field(default=None, init=False)
    _handles: list[Any] = field(default_factory=list, init=False)

    @classmethod
    def attach(cls, model: nn.Module, top_k: int) -> ExpertRecorder | None:
        modules = find_experts_modules(model)
        if not modules:
            return None
        recorder = cls(modules, int(modules[0].num_experts), top_k)
        for layer, module in enumerate(modules):
            recorder._handles.append(
                module.register_forward_pre_hook(recorder._hook(layer), with_kwargs=True)
            )
        return recorder

    def _hook(self, layer: int):
        def record(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self._steps is None:
                return
            start = time.perf_counter()
            named = [kwargs[n] for n in _ROUTING_ARGUMENTS if n in kwargs]
            index = named[0] if named else args[1]
            self._steps[layer].append(index.detach().to("cpu", copy=True))
            self.seconds += time.perf_counter() - start

        return record

    def start(self) -> None:
        self._steps = [[] for _ in self.modules]

    def stop(self, batch_size: int, spans: list[RowSpan]) -> list[list[list[int]]]:
        """End recording and return `expert_load[layer][expert]` for each row in `spans`."""
        steps, self._steps = self._steps, None
        assert steps is not None, "stop() without start()"
        start = time.perf_counter()
        loads: list[list[list[int]]] = [[] for _ in spans]
        for per_call in steps:
            # Each forward call routes [batch * seq, top_k]; consecutive calls cover consecutive
            # positions (prefill, then one position per decode step), so concatenating along the
            # sequence axis gives the routing of every padded position.
            routed = torch.cat([c.view(batch_size, -1, self.top_k) for c in per_call], dim=1)
            for row, span in enumerate(spans):
                chosen = routed[row, span.start : span.stop].reshape(-1)
                counts = torch.bincount(chosen, minlength=self.num_experts)
                loads[row].append(counts[: self.num_experts].tolist())
        self.seconds += time.perf_counter() - start
        return loads

    def take(self) -> list[torch.Tensor]:
        """End recording and return each layer's routing, `[tokens, top_k]`, of the one forward
        call made since `start()` (the decode engine counts per forward, see `decode.py`)."""
        steps, self._steps = self._steps, None
        assert steps is not None, "take() without start()"
        return [torch.cat(per_call) for per_call in steps]

    def cancel(self) -> None:
        """End recording without counting (the generate call failed)."""
        self._steps = None

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
