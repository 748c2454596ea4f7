"""An in-process worker over a local transformers causal LM, with batching and expert telemetry.

Concurrent `complete` calls are queued (`rolepool.pools.batching`) and decoded together by the
step-level engine in `rolepool.pools.decode`: prompts are prefilled in length-sorted chunks, every
row stops on its own (EOS, its own max_tokens, its own stop strings, its caller giving up) and
leaves the batch at once, and requests that arrive meanwhile join between two steps. Greedy rows
give `model.generate`'s tokens. Models whose cache the engine cannot drive (sliding-window or
hybrid attention) are served by shared, left-padded `generate` calls instead. For MoE models the
experts' routing is recorded with forward hooks (`rolepool.pools.expert_load` says why hooks and
not a replay forward).

Models come from a local directory only (`local_files_only=True`): a worker must never reach a hub
behind the user's back, and an offline machine must fail with a clear `ConfigError`, not a network
timeout.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch

from rolepool.core import (
    Completion,
    ConfigError,
    Request,
    RequestRefused,
    Usage,
    WorkerError,
    WorkerInfo,
)
from rolepool.pools import compute
from rolepool.pools.batching import Batcher, Pending, group_key
from rolepool.pools.decode import Decoder, Done, supports
from rolepool.pools.expert_load import (
    ExpertRecorder,
    architecture_of,
    experts_per_token,
    moe_param_counts,
)
from rolepool.pools.generate_fallback import generate_rows

__all__ = ["TransformersWorker"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _model_dir(model: str | Path) -> Path:
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


def _weights_version(path: Path) -> str:
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


def _chat_messages(request: Request) -> list[dict[str, Any]]:
    """OpenAI-shaped messages, with tool-call arguments as dicts: HF chat templates index into
    them (`arguments.items()`), which a JSON string would break."""
    messages = []
    for message in request.messages:
        data = message.to_openai()
        for call in data.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            if isinstance(arguments, str):
                call["function"]["arguments"] = json.loads(arguments)
        messages.append(data)
    return messages


class TransformersWorker:
    """A local transformers model behind the `Worker` protocol. See the module docstring."""

    def __init__(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        architecture: Literal["moe", "dense"] | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        expert_telemetry: bool = True,
        max_new_tokens_cap: int = 1024,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.path = _model_dir(model)
        try:
            self.config = AutoConfig.from_pretrained(self.path, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"cannot load config/tokenizer from {str(self.path)!r}: {exc}", where="model"
            ) from exc
        # The context limit is enforced per request (`RequestRefused`, naming both lengths), so
        # the tokenizer's own "longer than the maximum" warning would only repeat it on stderr.
        self.tokenizer.model_max_length = sys.maxsize
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(
                f"the tokenizer in {str(self.path)!r} has no chat template", where="model"
            )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = self._pick_dtype(dtype)
        self.expert_telemetry = expert_telemetry
        self.max_new_tokens_cap = max_new_tokens_cap
        self._architecture = architecture or architecture_of(self.config)
        self._name = name or self.path.name
        self._info: WorkerInfo | None = None
        self._model: Any = None
        self._load_failed = False
        self._recorder: ExpertRecorder | None = None
        self._decoder: Decoder | None = None
        self._closing = False
        self._load_lock = threading.Lock()
        self._batcher = Batcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_ms / 1000,
            in_flight=lambda: self._decoder.active if self._decoder is not None else 0,
            on_new_loop=lambda: self._decoder.reset() if self._decoder is not None else None,
        )
        self._counts: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._generate_seconds = 0.0
        self._eos = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else self._eos[0]

    def _eos_ids(self) -> list[int]:
        """End-of-sequence ids: generation_config.json wins (chat models often list several
        there), then the model config, then the tokenizer."""
        from transformers import GenerationConfig

        try:
            eos = GenerationConfig.from_pretrained(self.path, local_files_only=True).eos_token_id
        except OSError:
            eos = None
        for candidate in (eos, self.config.eos_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return list(candidate) if isinstance(candidate, (list, tuple)) else [candidate]
        raise ConfigError(f"{str(self.path)!r} defines no eos_token_id", where="model")

    def _pick_dtype(self, dtype: str | None) -> torch.dtype:
        if dtype is None:
            # CPUs are slow at bf16/fp16 matmuls and fp32 keeps batched == unbatched exactly.
            if self.device == "cpu":
                return torch.float32
            saved = getattr(self.config, "dtype", None)
            saved = getattr(torch, saved, None) if isinstance(saved, str) else saved
            return saved if isinstance(saved, torch.dtype) else torch.float32
        if dtype not in _DTYPES:
            raise ConfigError(
                f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}", where="dtype"
            )
        return _DTYPES[dtype]

    # -- info and lifecycle -------------------------------------------------------------------

    @property
    def info(self) -> WorkerInfo:
        if self._info is None:
            self._info = self._build_info()
        return self._info

    def _build_info(self) -> WorkerInfo:
        """Parameter counts come from a weightless (meta-device) copy, so `info` is exact before
        the weights are loaded."""
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(self.config)
        total, active = moe_param_counts(skeleton, experts_per_token(self.config))
        return WorkerInfo(
            name=self._name,
            model=self.path.name,
            architecture=self._architecture,
            total_params=total,
            active_params=active,
            version=_weights_version(self.path),
        )

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for the pool's /metrics: a snapshot, safe to keep."""
        return {
            **{
                k: self._counts[k]
                for k in (
                    "generate_calls",
                    "requests",
                    "failed_requests",
                    "cancelled",
                    "prompt_tokens",
                    "completion_tokens",
                )
            },
            "batch_sizes": dict(sorted(self._batch_sizes.items())),
            "decode_steps": self._decoder.steps if self._decoder else 0,
            "decode_row_steps": self._decoder.row_steps if self._decoder else 0,
            "queue_depth": self._batcher.queue_depth,
            "generate_seconds": round(self._generate_seconds, 6),
            "telemetry_seconds": round(self._recorder.seconds, 6) if self._recorder else 0.0,
            "loaded": self._model is not None,
        }

    async def load(self) -> None:
        """Load the weights (once) in a thread; `complete` calls it, so it is optional."""
        if self._model is None:
            await compute.run_sync(self._load_sync)

    def _load_sync(self) -> None:
        from transformers import AutoModelForCausalLM

        with self._load_lock:
            if self._model is not None:
                return
            self.info  # noqa: B018 - hash the weights in this thread, not the event loop
            kwargs: dict[str, Any] = {"local_files_only": True, "dtype": self.dtype}
            if getattr(self.config, "_experts_implementation", None) == "batched_mm":
                kwargs["experts_implementation"] = "grouped_mm"  # batched_mm is ~80x slower on CPU
            try:
                model = AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
            except Exception as exc:  # corrupt or mismatched weights: OSError, SafetensorError...
                self._load_failed = True
                raise ConfigError(
                    f"cannot load weights from {str(self.path)!r}: {exc}", where="model"
                ) from exc
            model.to(self.device).eval()
            if self.expert_telemetry and self._architecture == "moe":
                self._recorder = ExpertRecorder.attach(model, experts_per_token(self.config))
            if supports(model):
                self._decoder = Decoder(
                    model,
                    eos=self._eos,
                    pad=self._pad,
                    decode=self._decode,
                    recorder=self._recorder,
                    device=self.device,
                )
            self._model = model

    async def health(self) -> bool:
        """Loaded, or loadable as far as we know: the weights are loaded on first use."""
        return self._model is not None or (not self._load_failed and self.path.is_dir())

    async def aclose(self) -> None:
        self._closing = True  # a decode loop returns at its next step
        try:
            await self._batcher.aclose()
        finally:
            self._closing = False
        if self._decoder is not None:  # rows still decoding when the batching task stopped
            rows = [p for p in self._decoder.pendings() if not p.done.is_set()]
            self._decoder.reset()
            for pending in rows:
                pending.resolve(error=WorkerError("worker closed while the request ran"))

    # -- serving ------------------------------------------------------------------------------

    def _prompt_ids(self, request: Request) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(
                _chat_messages(request),
                tools=[t.to_openai() for t in request.tools] or None,
                add_generation_prompt=True,
                return_dict=False,
            )
        except Exception as exc:  # template errors come from the request's shape
            raise WorkerError(f"chat template failed: {exc}", worker=self._name) from exc
        return list(ids)

    def _max_tokens(self, request: Request, prompt_len: int) -> int:
        """The request's max_tokens, capped by the worker and by the model's context: a prompt
        that cannot fit fails alone here, instead of failing the whole batch inside generate."""
        context = getattr(self.config, "max_position_embeddings", None) or 1 << 30
        if prompt_len >= context:
            raise RequestRefused(
                f"prompt of {prompt_len} tokens does not fit the model's context of {context}",
                worker=self._name,
            )
        return min(request.sampling.max_tokens, self.max_new_tokens_cap, context - prompt_len)

    async def complete(self, request: Request) -> Completion:
        arrived = time.perf_counter()
        await self.load()
        prompt_ids = self._prompt_ids(request)
        pending = Pending(
            request, prompt_ids, self._max_tokens(request, len(prompt_ids)), arrived=arrived
        )
        self._counts["requests"] += 1
        self._batcher.submit(pending)
        try:
            await pending.done.wait()
        finally:
            if not pending.done.is_set():
                self._counts["cancelled"] += 1
                if not self._batcher.discard(pending):
                    pending.cancelled = True  # the engine drops the row at its next step
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _yield_now(self) -> bool:
        """Stop decoding for now: requests wait to be admitted here, other work (another
        worker's) waits for the compute thread, or the worker is closing."""
        return self._closing or self._batcher.admission_waiting() or compute.jobs_waiting()

    async def _run_batch(self, batch: list[Pending]) -> None:
        if self._decoder is None:
            await self._run_groups(batch)
            return
        if batch:
            self._counts["generate_calls"] += 1  # admissions: requests prefilled together
            self._batch_sizes[len(batch)] += 1
        start = time.perf_counter()
        # Rows that leave are resolved on this loop while the compute thread decodes on.
        call = compute.loop_caller()

        def deliver(rows: list[Done]) -> None:
            call(self._finish_rows, rows, time.perf_counter())

        try:
            done = await compute.run_sync(self._decoder.run, batch, self._yield_now, deliver)
        except BaseException as exc:
            rows = [*batch, *self._decoder.pendings()]
            self._decoder.reset()
            rows = [p for p in rows if not p.done.is_set()]
            if isinstance(exc, Exception):
                self._fail(rows, exc)
            else:  # cancelled: the worker is closing
                for pending in rows:
                    pending.resolve(error=WorkerError("worker closed while the request ran"))
            raise
        now = time.perf_counter()
        self._generate_seconds += now - start
        self._finish_rows(done, now)

    def _finish_rows(self, rows: list[Done], now: float) -> None:
        """Resolve the callers of rows that left the engine at `now`."""
        for row in rows:
            if row.pending.done.is_set():  # already failed (the worker closing)
                continue
            if row.error is not None:
                self._fail([row.pending], row.error)
            elif row.finish:  # "" = its caller gave up: nobody waits for a result
                self._resolve(
                    row.pending,
                    self._completion(row.pending, row.tokens, row.finish, row.expert_load),
                    now,
                )

    def _fail(self, rows: list[Pending], exc: BaseException) -> None:
        self._counts["failed_requests"] += len(rows)
        for pending in rows:  # one exception object per caller: tracebacks differ
            error = WorkerError(f"generate failed: {exc!r}", worker=self._name)
            error.__cause__ = exc
            pending.resolve(error=error)

    def _resolve(self, pending: Pending, completion: Completion, now: float) -> None:
        completion.latency = now - pending.arrived
        self._counts["prompt_tokens"] += completion.usage.prompt_tokens
        self._counts["completion_tokens"] += completion.usage.completion_tokens
        pending.resolve(result=completion)

    async def _run_groups(self, batch: list[Pending]) -> None:
        """The `generate` path, for models the decode engine does not serve (`decode.supports`):
        one padded `generate` per sampling group."""
        groups: dict[Any, list[Pending]] = {}
        for pending in batch:
            groups.setdefault(group_key(pending.request.sampling, pending), []).append(pending)
        for group in groups.values():
            self._counts["generate_calls"] += 1
            self._batch_sizes[len(group)] += 1
            start = time.perf_counter()
            try:
                results = await compute.run_sync(self._generate, group)
            except Exception as exc:
                self._fail(group, exc)
                continue
            now = time.perf_counter()
            self._generate_seconds += now - start
            for pending, completion in zip(group, results, strict=True):
                self._resolve(pending, completion, now)

    def _generate(self, rows: list[Pending]) -> list[Completion]:
        """One left-padded `generate` over `rows` (same sampling group); runs in a thread."""
        kept = generate_rows(
            self._model,
            rows,
            pad=self._pad,
            eos=self._eos,
            device=self.device,
            tokenizer=self.tokenizer,
            recorder=self._recorder,
        )
        return [
            self._completion(p, tokens, finish, load)
            for p, (tokens, finish, load) in zip(rows, kept, strict=True)
        ]

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _completion(
        self, pending: Pending, tokens: list[int], finish: str, load: list[list[int]] | None
    ) -> Completion:
        text = self._decode(tokens)
        if finish == "stop":
            cuts = [text.find(s) for s in pending.request.sampling.stop if s in text]
            text = text[: min(cuts)] if cuts else text
        return Completion(
            text=text,
            usage=Usage(prompt_tokens=len(pending.prompt_ids), completion_tokens=len(tokens)),
            worker=self._name,
            model=self.info.model,
            architecture=self._architecture,
            expert_load=load,
            finish_reason=finish,
        )
