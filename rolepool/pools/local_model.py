"""Where an in-process worker's model comes from: a local directory (or a shipped reference
model by name), its weights' version and parameter counts, its end-of-sequence ids and dtype,
and its weights, loaded.

Models come from a local directory only (`local_files_only=True`): a worker must never reach a hub
behind the user's back, and an offline machine must fail with a clear `ConfigError`, not a network
timeout.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

import torch

from rolepool.core import ConfigError
from rolepool.pools.expert_load import experts_per_token, moe_param_counts

__all__ = [
    "eos_ids",
    "load_config_and_tokenizer",
    "load_weights",
    "model_dir",
    "param_counts",
    "pick_device",
    "pick_dtype",
    "weights_version",
]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_dir(model: str | Path) -> Path:
    """A local directory, or the name of a shipped reference model (`moe-s1` or `zoo:moe-s1`)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        from rolepool.zoo import CHECKPOINTS, list_checkpoints

        name = str(model).removeprefix("zoo:")
        if "/" not in name and (CHECKPOINTS / name / "config.json").is_file():
            return CHECKPOINTS / name
        shipped = ", ".join(c["name"] for c in list_checkpoints()) or "none"
        raise ConfigError(
            f"{str(model)!r} is neither a local model directory nor a shipped reference model "
            f"({shipped}); TransformersWorker loads config, weights and tokenizer from disk and "
            "never downloads from a hub",
            where="model",
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"{str(path)!r} has no config.json", where="model")
    return path


def load_config_and_tokenizer(path: Path) -> tuple[Any, Any]:
    """The model's config and its tokenizer, which must have a chat template."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot load config/tokenizer from {str(path)!r}: {exc}", where="model"
        ) from exc
    # The context limit is enforced per request (`RequestRefused`, naming both lengths), so
    # the tokenizer's own "longer than the maximum" warning would only repeat it on stderr.
    tokenizer.model_max_length = sys.maxsize
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer in {str(path)!r} has no chat template", where="model")
    return config, tokenizer


def weights_version(path: Path) -> str:
    """sha256 over the weight files (names and bytes): same weights, same version."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise ConfigError(f"{str(path)!r} holds no weight files", where="model")
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def eos_ids(path: Path, config: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids: generation_config.json wins (chat models often list several
    there), then the model config, then the tokenizer."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(path, local_files_only=True).eos_token_id
    except OSError:
        eos = None
    for candidate in (eos, config.eos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return list(candidate) if isinstance(candidate, (list, tuple)) else [candidate]
    raise ConfigError(f"{str(path)!r} defines no eos_token_id", where="model")


_DEVICE = re.compile(r"cpu|auto|cuda(?::(?P<index>\d+))?")


def pick_device(device: str | None) -> str:
    """`cpu` (the default), `cuda`, `cuda:N` or `auto` (CUDA when there is one, else CPU), checked
    now: asking for a GPU this machine does not have is one `ConfigError`, not a failure at the
    first request."""
    name = (device or "cpu").strip().lower()
    match = _DEVICE.fullmatch(name)
    if match is None:
        raise ConfigError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', not {device!r}", where="device"
        )
    if name == "cpu":
        return name
    available = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ConfigError(
            f"device {device!r} asked for, but CUDA is not available here (torch "
            f"{torch.__version__}, built with CUDA {torch.version.cuda or 'none'}); use device "
            "'cpu' or 'auto'",
            where="device",
        )
    index = int(match["index"] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here",
            where="device",
        )
    return name


def pick_dtype(dtype: str | None, device: str, config: Any) -> torch.dtype:
    """The named dtype; by default float32 on a CPU, else the dtype the model was saved in."""
    if dtype is None:
        # CPUs are slow at bf16/fp16 matmuls and fp32 keeps batched == unbatched exactly.
        if device == "cpu":
            return torch.float32
        saved = getattr(config, "dtype", None)
        saved = getattr(torch, saved, None) if isinstance(saved, str) else saved
        return saved if isinstance(saved, torch.dtype) else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}", where="dtype")
    return _DTYPES[dtype]


def param_counts(config: Any) -> tuple[int, int]:
    """(total, active per token) parameters, from a weightless (meta-device) copy of the model,
    so they are exact before the weights are loaded."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return moe_param_counts(skeleton, experts_per_token(config))


def load_weights(path: Path, config: Any, dtype: torch.dtype, device: str) -> Any:
    """The model from `path`, on `device` in eval mode; corrupt or mismatched weights are a
    `ConfigError`."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if getattr(config, "_experts_implementation", None) == "batched_mm":
        kwargs["experts_implementation"] = "grouped_mm"  # batched_mm is ~80x slower on CPU
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:  # corrupt or mismatched weights: OSError, SafetensorError...
        raise ConfigError(f"cannot load weights from {str(path)!r}: {exc}", where="model") from exc
    return model.to(device).eval()
