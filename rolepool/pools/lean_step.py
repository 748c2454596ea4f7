"""A lean forward for the decode engine's prefills and decode steps of Llama-family models.

A decode step feeds one token per row. For the small models this project ships, the time of such
a step through the transformers module tree is mostly per-call overhead, not arithmetic: 29
`linear` calls per step for a 4-layer dense model, mask construction, `scaled_dot_product_attention`
with a padding mask, and the cache bookkeeping around them. A prefill is matmul-bound (~200
GFLOP/s here, near this CPU's float32 peak for these shapes), but still spends about a third of
its time in norms, rotations, masks and copies. `LeanStep` does the same arithmetic with fewer,
larger calls:

* q, k and v come from one matmul, and in a decode step so do the MLP's gate and up projections
  (at prefill sizes the fused gate/up product is slower than its two halves, so a prefill keeps
  them apart). The fused weights are allocated once, and the model's own `Linear` modules are
  re-pointed to views of them, so the model holds no second copy and its own forward
  (`generate`) is unchanged;
* RMSNorm is torch's fused `rms_norm` (the same float32 result); q and k are rotated together,
  with the rotary angles tabled once per position;
* a decode step's attention for its single query is two batched matmuls and a softmax over the
  row's cache, with grouped-query heads handled by a reshape instead of repeating keys and
  values, and one additive padding row per step shared by every layer; a prefill builds its
  causal padding mask once and calls `scaled_dot_product_attention`.

Measured on dense-s1 with the 64 prompts of `bench/pool_throughput.py`: a prefill's logits are
bitwise those of the module tree's forward, in ~7% less time, and a step's are bitwise those of
the unfused lean step this one replaced.

An MoE layer's sparse block is called as the module it is, so its router, experts and the expert
telemetry hooks are untouched; only attention, norms and the head take the lean path.

It serves only what it was checked on: the families the registry marks lean
(`rolepool.pools.families`: Llama, Mistral, Qwen2/3 and their MoE, Phi-3, Granite and GraniteMoE,
Mixtral, OLMoE), with SiLU-family MLPs. Their variations are small and handled here: q/k norms per
head (Qwen3) or over the whole projection (OLMoE), an already fused qkv and gate/up (Phi-3), and
Granite's embedding, attention, residual and logits multipliers. `LeanStep.build` compares its
logits (a prefill and two steps after it) with the model's own forward on a small padded batch
and declines (returns None) if they differ, so a variant it does not know keeps the full forward
instead of producing wrong tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rolepool.pools.families import lean_model_types
from rolepool.pools.kv_buffer import KVBuffer

__all__ = ["MODEL_TYPES", "LeanStep"]

MODEL_TYPES = lean_model_types()
_TOLERANCE = 1e-3  # max |logit difference| against the model's own forward, relative to scale


def _fuse(linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) holding `linears`' rows; each module's parameters become views."""
    weight = torch.cat([m.weight.detach() for m in linears])
    biases = [m.bias for m in linears]
    bias = None
    if any(b is not None for b in biases):
        if not all(b is not None for b in biases):
            raise ValueError("mixed bias")
        bias = torch.cat([b.detach() for b in biases])
    start = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight = torch.nn.Parameter(weight[start : start + n], requires_grad=False)
        if bias is not None:
            m.bias = torch.nn.Parameter(bias[start : start + n], requires_grad=False)
        start += n
    return weight, bias


class _Layer:
    def __init__(self, layer: Any) -> None:
        attn = layer.self_attn
        if hasattr(attn, "qkv_proj"):  # Phi-3 keeps q, k and v in one projection already
            self.qkv, self.qkv_bias = attn.qkv_proj.weight, attn.qkv_proj.bias
        else:
            self.qkv, self.qkv_bias = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o = attn.o_proj
        # q/k norms (Qwen3: per head; OLMoE: over the whole projection), applied before rotation.
        self.q_norm = _norm(attn.q_norm) if hasattr(attn, "q_norm") else None
        self.k_norm = _norm(attn.k_norm) if hasattr(attn, "k_norm") else None
        self.norm_in = _norm(layer.input_layernorm)
        self.norm_post = _norm(layer.post_attention_layernorm)
        mlp = layer.mlp if hasattr(layer, "mlp") else layer.block_sparse_moe
        # One gated feed-forward (gate, up, down) is fused here; anything else (an MoE's sparse
        # block) is called as the module it is.
        self.gated_ffn = all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
        self.gate: Any = None
        if self.gated_ffn:
            self.gate_up, self.gate_up_bias = _fuse([mlp.gate_proj, mlp.up_proj])
            self.inter = mlp.gate_proj.weight.shape[0]
            self.gate, self.up, self.down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
            self.act = mlp.act_fn
        elif hasattr(mlp, "gate_up_proj") and isinstance(mlp.gate_up_proj, torch.nn.Linear):
            self.gated_ffn = True  # Phi-3: gate and up fused in one projection, gate first
            self.gate_up, self.gate_up_bias = mlp.gate_up_proj.weight, mlp.gate_up_proj.bias
            self.inter = self.gate_up.shape[0] // 2
            self.down, self.act = mlp.down_proj, mlp.activation_fn
        self.mlp = mlp


def _norm(module: Any) -> tuple[torch.Tensor, float]:
    """An RMSNorm's weight and epsilon, for the fused `F.rms_norm` (same result in float32)."""
    return module.weight, float(module.variance_epsilon)


class LeanStep:
    """Prefills and decode steps over left-padded batches whose caches are `KVBuffer`s."""

    def __init__(self, model: Any) -> None:
        config = model.config
        inner = model.model
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.norm = _norm(inner.norm)
        self.head = model.lm_head
        self.hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = float(getattr(config, "attention_multiplier", None) or self.head_dim**-0.5)
        # Granite's multipliers (1.0 elsewhere): embeddings, each residual branch, the logits.
        self.embed_scale = float(getattr(config, "embedding_multiplier", None) or 1.0)
        self.residual_scale = float(getattr(config, "residual_multiplier", None) or 1.0)
        self.logits_scale = float(getattr(config, "logits_scaling", None) or 1.0)
        # Rotary angles depend on the position alone for these types, so they are tabled once.
        self.static_rope = _rope_type(config) in ("default", "linear", "llama3")
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None
        with torch.no_grad():
            self.layers = [_Layer(layer) for layer in inner.layers]

    @classmethod
    def build(cls, model: Any) -> LeanStep | None:
        """A checked `LeanStep` for `model`, or None when the model is not one it serves."""
        config = model.config
        if getattr(config, "model_type", None) not in MODEL_TYPES:
            return None
        if getattr(config, "hidden_act", "silu") not in ("silu", "swish"):
            return None
        try:
            inner = model.model
            for layer in inner.layers:
                attn = layer.self_attn
                fused = hasattr(attn, "qkv_proj")
                names = ("qkv_proj",) if fused else ("q_proj", "k_proj", "v_proj")
                for n in (*names, "o_proj"):
                    if not isinstance(getattr(attn, n), torch.nn.Linear):
                        return None
                if getattr(config, "clip_qkv", None) is not None:
                    return None
            lean = cls(model)
            if not lean._agrees(model):
                return None
        except (AttributeError, ValueError, RuntimeError, TypeError, IndexError):
            return None
        return lean

    @torch.inference_mode()
    def _agrees(self, model: Any) -> bool:
        """Logits of a short left-padded prefill and two decode steps after it, against the
        model's own forward."""
        from transformers.cache_utils import Cache

        device = next(model.parameters()).device
        vocab = model.config.vocab_size
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (3, 7), generator=gen).to(device)
        pad = torch.tensor([0, 2, 4])
        mask = (torch.arange(7)[None, :] >= pad[:, None]).long().to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        def forward(layers: list[KVBuffer], end: int, length: int) -> torch.Tensor:
            return model(
                input_ids=ids[:, end - length : end],
                attention_mask=mask[:, :end],
                position_ids=positions[:, end - length : end],
                cache=Cache(layers=layers),
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]

        outs: list[list[torch.Tensor]] = []
        for lean in (False, True):
            layers = [KVBuffer() for _ in self.layers]
            logits = [self.prefill(ids[:, :5], pad, layers) if lean else forward(layers, 5, 5)]
            for at in (5, 6):
                if lean:
                    logits.append(self(ids[:, at], positions[:, at : at + 1], pad, layers))
                else:
                    logits.append(forward(layers, at + 1, 1))
            outs.append([x.float() for x in logits])
        for full, fast in zip(*outs, strict=True):
            scale = full.abs().max().clamp(min=1.0)
            if not bool(((full - fast).abs().max() / scale) <= _TOLERANCE):
                return False
        return True

    @torch.inference_mode()
    def prefill(
        self,
        ids: torch.Tensor,
        pad: torch.Tensor,
        layers: list[KVBuffer],
        past: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (rows, vocab) at the last position of left-padded `ids` (rows, width), row i
        after `pad[i]` padding tokens; fills the empty caches `layers`. With `past`, `layers`
        already hold a cached prefix of `past[i]` tokens for row i, right-aligned in their
        window (`rolepool.pools.prefix_cache`), which `ids` follow and attend to."""
        width = ids.shape[1]
        at = torch.arange(width, device=ids.device)
        real = at[None, :] >= pad.to(ids.device)[:, None]  # (rows, width)
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        # Causal over the row's real tokens; a padding position attends to itself alone, so its
        # keys and values stay finite.
        mask = (at[:, None] >= at[None, :])[None] & real[:, None, :]
        mask = (mask | torch.eye(width, dtype=torch.bool, device=ids.device))[:, None]
        if past is not None:
            cached = layers[0].width
            seen = torch.arange(cached)[None, :] >= (cached - past)[:, None]
            seen = seen.to(ids.device)[:, None, None, :].expand(-1, 1, width, -1)
            mask = torch.cat([seen, mask], dim=-1)
            positions = positions + past.to(ids.device)[:, None]
        x = self._embed(ids)  # (rows, width, hidden)
        cos, sin = self._rope(positions)  # (rows, 1, width, dim)
        for layer, cache in zip(self.layers, layers, strict=True):
            q, k, v = self._project(layer, x, cos, sin)
            keys, values = cache.update(k, v)
            attn = F.scaled_dot_product_attention(
                q,
                keys,
                values,
                attn_mask=mask,
                scale=self.scale,
                enable_gqa=self.heads != self.kv_heads,
            )
            # Two gate/up matmuls, not the fused one: at prefill sizes the fused one is slower.
            x = self._rest(layer, x, attn, fused_mlp=False)
        return self._logits(x)

    @torch.inference_mode()
    def __call__(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        pad: torch.Tensor,
        layers: list[KVBuffer],
    ) -> torch.Tensor:
        """Logits (rows, vocab) for `tokens` (one per row) at `positions` (rows, 1); `pad[i]`
        is the number of leading padding positions in row i's cache."""
        rows = tokens.shape[0]
        x = self._embed(tokens[:, None])  # (rows, 1, hidden)
        cos, sin = self._rope(positions)  # (rows, 1, 1, dim), broadcast over heads
        width = layers[0].width + 1
        blocked = torch.arange(width, device=x.device)[None, :] < pad.to(x.device)[:, None]
        bias = torch.zeros(blocked.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill_(blocked, float("-inf"))[:, None, None, :]
        # Grouped-query heads: the `group` query heads of a kv head share its keys.
        group = self.heads // self.kv_heads
        for layer, cache in zip(self.layers, layers, strict=True):
            q, k, v = self._project(layer, x, cos, sin)
            keys, values = cache.update(k, v)  # (rows, kv_heads, width, dim)
            q = q.reshape(rows, self.kv_heads, group, self.head_dim)
            scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scale).add_(bias)
            attn = torch.matmul(torch.softmax(scores, dim=-1), values)
            x = self._rest(layer, x, attn.view(rows, self.heads, 1, -1), fused_mlp=True)
        return self._logits(x)

    def _project(
        self, layer: _Layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (rows, heads, length, dim), k and v (rows, kv_heads, length, dim) of `x` (rows,
        length, hidden); q and k rotated together."""
        rows, length = x.shape[:2]
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        k_end = (heads + kv_heads) * dim
        h = F.rms_norm(x, (self.hidden,), *layer.norm_in)
        qkv = F.linear(h, layer.qkv, layer.qkv_bias)
        if layer.q_norm is None or layer.k_norm is None:
            qk = qkv[..., :k_end].view(rows, length, heads + kv_heads, dim)
        else:
            qk = _normed_qk(qkv, layer.q_norm, layer.k_norm, heads, kv_heads, dim)
        qk = qk.transpose(1, 2)
        qk = qk * cos + qk.roll(dim // 2, -1) * sin
        v = qkv[..., k_end:].view(rows, length, kv_heads, dim).transpose(1, 2)
        return qk[:, :heads], qk[:, heads:], v

    def _rest(
        self, layer: _Layer, x: torch.Tensor, attn: torch.Tensor, *, fused_mlp: bool
    ) -> torch.Tensor:
        """The layer after attention: output projection, residual, norm, MLP, residual;
        `attn` is (rows, heads, length, dim)."""
        rows, length = x.shape[:2]
        x = x + self._residual(layer.o(attn.transpose(1, 2).reshape(rows, length, -1)))
        h = F.rms_norm(x, (self.hidden,), *layer.norm_post)
        if not layer.gated_ffn:
            out = layer.mlp(h)
            out = (out[0] if isinstance(out, tuple) else out).view(rows, length, -1)
            return x + self._residual(out)
        if fused_mlp or layer.gate is None:
            gate_up = F.linear(h, layer.gate_up, layer.gate_up_bias)
            gate, up = gate_up[..., : layer.inter], gate_up[..., layer.inter :]
        else:
            gate, up = layer.gate(h), layer.up(h)
        return x + self._residual(layer.down(layer.act(gate) * up))

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return x * self.embed_scale if self.embed_scale != 1.0 else x

    def _residual(self, branch: torch.Tensor) -> torch.Tensor:
        return branch * self.residual_scale if self.residual_scale != 1.0 else branch

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(F.rms_norm(x[:, -1], (self.hidden,), *self.norm)).float()
        return logits / self.logits_scale if self.logits_scale != 1.0 else logits

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin for `positions` (rows, length), shaped (rows, 1, length,
        dim): `q * cos + q.roll(dim // 2, -1) * sin` is the model's rotation."""
        like = self.embed.weight
        if not self.static_rope:
            cos, sin = self.rotary(like, positions)
            return cos[:, None], _fold(sin)[:, None]
        need = int(positions.max()) + 1
        if self._cos is None or need > self._cos.shape[0]:
            n = max(need, 2 * (self._cos.shape[0] if self._cos is not None else 256))
            cos, sin = self.rotary(like, torch.arange(n, device=like.device)[None])
            self._cos, self._sin = cos[0], _fold(sin[0])
        assert self._sin is not None
        return self._cos[positions][:, None], self._sin[positions][:, None]


def _rope_type(config: Any) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(params, dict):
        return str(params.get("rope_type") or params.get("type") or "default")
    return "default"


def _normed_qk(
    qkv: torch.Tensor,
    q_norm: tuple[torch.Tensor, float],
    k_norm: tuple[torch.Tensor, float],
    heads: int,
    kv_heads: int,
    dim: int,
) -> torch.Tensor:
    """q and k of `qkv` normed, shaped (rows, length, heads + kv_heads, dim): per head when the
    norm's weight spans one head (Qwen3), else over the whole projection (OLMoE)."""
    rows, length = qkv.shape[:2]
    q, k = qkv[..., : heads * dim], qkv[..., heads * dim : (heads + kv_heads) * dim]
    if q_norm[0].numel() == dim:
        q = F.rms_norm(q.reshape(rows, length, heads, dim), (dim,), *q_norm)
        k = F.rms_norm(k.reshape(rows, length, kv_heads, dim), (dim,), *k_norm)
        return torch.cat([q, k], dim=2)
    q = F.rms_norm(q, (heads * dim,), *q_norm)
    k = F.rms_norm(k, (kv_heads * dim,), *k_norm)
    return torch.cat([q, k], dim=-1).view(rows, length, heads + kv_heads, dim)


def _fold(sin: torch.Tensor) -> torch.Tensor:
    """sin with rotate-half's sign folded in: rotate_half(q) * sin == q.roll(half) * _fold(sin)."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
