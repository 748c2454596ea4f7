"""An in-process worker over a local transformers causal LM, with batching and expert telemetry.

Concurrent `complete` calls are queued (`rolepool.pools.batching`) and decoded together by the
step-level engine in `rolepool.pools.decode`: prompts are prefilled in length-sorted chunks, every
row stops on its own (EOS, its own max_tokens, its own stop strings, its caller giving up) and
leaves the batch at once, and requests that arrive meanwhile join between two steps. Greedy rows
give `model.generate`'s tokens. Models whose cache the engine cannot drive (sliding-window or
hybrid attention) are served by shared, left-padded `generate` calls instead. For MoE models the
experts' routing is recorded with forward hooks (`rolepool.pools.expert_load` says why hooks and
not a replay forward). Models come from a local directory only (`rolepool.pools.local_model`).
The engine keeps the KV of prompts' leading blocks for later prompts that start alike, up to
`prefix_cache_tokens` tokens (`rolepool.pools.prefix_cache`; 0 turns it off); a completion's
`cached_prompt_tokens` says how many of its prompt tokens came from there. By default (None) an
MoE worker that records expert telemetry keeps none: its `expert_load` counts every prompt token,
and the experts never see a cached one (given a size, it caches and counts only what they saw).
Waiting requests are admitted by priority class, then by tenant in proportion to
`tenant_weights` (`rolepool.pools.admission`; `set_tenant_weights` changes them while serving).
`context_length` may narrow the model's context window (never widen it): prompts at or over it
are refused (a pool skips the worker before sending them) and a reply stops at it.

The worker's lifetime: `async with TransformersWorker(...) as worker:` runs its batching loop in a
task group that block owns, and ends it (failing whatever is still queued or decoding) when the
block ends. A worker nobody entered starts the loop on its first request and keeps it until
`aclose()` or the end of the event loop (`rolepool.pools.batching` says how). A request goes
through as one `Job`: queued, running (prefilled and decoded on the compute thread), abandoned if
its caller gives up, finished with its completion or error.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from rolepool.core import (
    Completion,
    ConfigError,
    Request,
    RequestRefused,
    Usage,
    WorkerError,
    WorkerInfo,
)
from rolepool.core.messages import utf8_safe
from rolepool.pools import compute
from rolepool.pools.batching import Batcher, Job
from rolepool.pools.chat_tools import (
    apply_template,
    declared_tool_format,
    renders_tools,
    text_decoder,
)
from rolepool.pools.context_window import narrowed_context
from rolepool.pools.decode import Decoder, Done, Finish, supports
from rolepool.pools.expert_load import ExpertRecorder, architecture_of, experts_per_token
from rolepool.pools.families import DecodePath, announce_path
from rolepool.pools.generate_fallback import generate_rows, group_key
from rolepool.pools.grammar import CALL_FORMATS, Grammar, GrammarCompiler
from rolepool.pools.local_model import (
    eos_ids,
    load_config_and_tokenizer,
    load_weights,
    model_dir,
    param_counts,
    pick_device,
    pick_dtype,
    weights_version,
)
from rolepool.pools.openai_options import DECODING_REFUSAL
from rolepool.pools.prefix_cache import PrefixCache
from rolepool.pools.streaming import token_hook

__all__ = ["TransformersWorker"]


def _chat_messages(request: Request) -> list[dict[str, Any]]:
    """OpenAI-shaped messages, with tool-call arguments as dicts: HF chat templates index into
    them (`arguments.items()`), which a JSON string would break."""
    messages = []
    for message in request.messages:
        data = message.to_openai()
        if isinstance(data.get("content"), str):  # a lone surrogate would fail the tokenizer
            data["content"] = utf8_safe(data["content"])
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
        tool_format: str | None = None,
        prefix_cache_tokens: int | None = None,
        tenant_weights: Mapping[str, float] | None = None,
        context_length: int | None = None,
    ) -> None:
        self.path = model_dir(model)
        self.config, self.tokenizer = load_config_and_tokenizer(self.path)
        self._context_limit = narrowed_context(context_length, self._model_context())
        # Tools go through the template when it renders them, else in text (`chat_tools`).
        self.template_renders_tools = renders_tools(self.tokenizer)
        self.tool_format = declared_tool_format(tool_format, self.tokenizer)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device, self.config)
        self.expert_telemetry = expert_telemetry
        self.max_new_tokens_cap = max_new_tokens_cap
        self._architecture = architecture or architecture_of(self.config)
        if prefix_cache_tokens is None:
            prefix_cache_tokens = 0 if expert_telemetry and self._architecture == "moe" else 8192
        self.prefix_cache_tokens = prefix_cache_tokens
        self._name = name or self.path.name
        self._info: WorkerInfo | None = None
        self._model: Any = None
        self._load_failed = False
        self._recorder: ExpertRecorder | None = None
        self._decoder: Decoder | None = None
        self._decode_path: DecodePath | None = None  # known once loaded (families.announce_path)
        self._grammars: GrammarCompiler | None = None
        self._load_lock = threading.Lock()
        self._batcher = Batcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_ms / 1000,
            in_flight=lambda: self._decoder.active if self._decoder is not None else 0,
            on_stop=self._fail_in_flight,
            on_new_loop=lambda: self._decoder.reset() if self._decoder is not None else None,
            tenant_weights=tenant_weights,
        )
        self._counts: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._generate_seconds = 0.0
        self._eos = eos_ids(self.path, self.config, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else self._eos[0]
        self._decode_text = text_decoder(self.tokenizer, self.tool_format, self._eos)

    # -- info and lifecycle -------------------------------------------------------------------

    @property
    def context_length(self) -> int | None:
        """The context window in tokens, for a pool's context-window check (a prompt that cannot
        fit is skipped before it is sent): the `context_length` given, else the model's
        (max_position_embeddings); None when neither says."""
        return self._context_limit or self._model_context()

    def _model_context(self) -> int | None:
        value = getattr(self.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    @property
    def tenant_weights(self) -> dict[str, float]:
        return self._batcher.tenant_weights

    def set_tenant_weights(self, weights: Mapping[str, float] | None) -> None:
        """New tenant weights for the batch queue, from the next admission on."""
        self._batcher.set_tenant_weights(weights)

    @property
    def info(self) -> WorkerInfo:
        if self._info is None:
            self._info = self._build_info()
        return self._info

    def _build_info(self) -> WorkerInfo:
        """Exact before the weights are loaded (`local_model.param_counts`)."""
        total, active = param_counts(self.config)
        return WorkerInfo(
            name=self._name,
            model=self.path.name,
            architecture=self._architecture,
            total_params=total,
            active_params=active,
            version=weights_version(self.path),
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
            "decode_path": self._decode_path,
            "prefix_cache_hit_tokens": cache.hit_tokens if (cache := self._prefix_cache) else 0,
        }

    async def load(self) -> None:
        """Load the weights (once) in a thread; `complete` calls it, so it is optional."""
        if self._model is None:
            await compute.run_sync(self._load_sync)

    def _load_sync(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            self.info  # noqa: B018 - hash the weights in this thread, not the event loop
            try:
                model = load_weights(self.path, self.config, self.dtype, self.device)
            except ConfigError:
                self._load_failed = True
                raise
            if self.expert_telemetry and self._architecture == "moe":
                self._recorder = ExpertRecorder.attach(model, experts_per_token(self.config))
            if supports(model):
                self._decoder = Decoder(
                    model,
                    eos=self._eos,
                    pad=self._pad,
                    detokenize=self._detokenize,
                    recorder=self._recorder,
                    device=self.device,
                    prefix_cache=PrefixCache(n) if (n := self.prefix_cache_tokens) > 0 else None,
                )
            self._decode_path = announce_path(self._name, model, self._decoder)
            self._model = model

    async def health(self) -> bool:
        """Loaded, or loadable as far as we know: the weights are loaded on first use."""
        return self._model is not None or (not self._load_failed and self.path.is_dir())

    async def __aenter__(self) -> TransformersWorker:
        """Serve in a task group this `async with` owns until the block ends; then requests
        still queued or decoding fail with a `WorkerError`. Entering a worker that serves
        already (an enclosing block, or a request outside any block, started it) does not take
        it over. The weights are still loaded on first use (or by `load()`)."""
        await self._batcher.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._batcher.__aexit__(*exc_info)

    async def aclose(self) -> None:
        """Stop serving, from any task: requests still queued or decoding fail with a
        `WorkerError`. Safe to call more than once; a later request starts serving again."""
        await self._batcher.stop()

    def _fail_in_flight(self) -> None:
        """Rows still decoding when the batching loop stopped: nobody will step them again."""
        if self._decoder is not None:
            jobs = self._decoder.jobs()
            self._decoder.close()
            for job in jobs:
                job.finish(WorkerError("worker closed while the request ran"))

    # -- serving ------------------------------------------------------------------------------

    def _prompt_ids(self, request: Request) -> list[int]:
        try:
            return apply_template(
                self.tokenizer,
                _chat_messages(request),
                [t.to_openai() for t in request.tools],
                template_renders_tools=self.template_renders_tools,
            )
        except Exception as exc:  # the request's shape: refused, never counted against us
            raise RequestRefused(f"chat template failed: {exc}", worker=self._name) from exc

    def _max_tokens(self, request: Request, prompt_len: int) -> int:
        """The request's max_tokens, capped by the worker and by its context window: a prompt
        that cannot fit fails alone here, instead of failing the whole batch inside generate."""
        context = self.context_length or 1 << 30
        if prompt_len >= context:
            whose = "the worker's context_length" if self._context_limit else "the model's context"
            raise RequestRefused(
                f"prompt of {prompt_len} tokens does not fit {whose} of {context}",
                worker=self._name,
            )
        return min(request.sampling.max_tokens, self.max_new_tokens_cap, context - prompt_len)

    async def complete(self, request: Request) -> Completion:
        arrived = time.perf_counter()
        await self.load()
        grammar = await self._grammar(request)
        prompt_ids = self._prompt_ids(request)
        job = Job(
            request,
            prompt_ids,
            self._max_tokens(request, len(prompt_ids)),
            grammar=grammar,
            arrived_at=arrived,
        )
        job.on_token = token_hook(self._detokenize)  # None unless the caller streams
        self._counts["requests"] += 1
        self._batcher.ensure_serving()
        self._batcher.submit(job)
        try:
            return await job.wait()
        finally:
            if job.state != "finished":
                self._counts["cancelled"] += 1
                self._batcher.abandon(job)

    async def _grammar(self, request: Request) -> Grammar | None:
        """The compiled grammar for the request's decoding mode (None: free). Compiling runs
        off the event loop; a schema the engine cannot compile is a `GrammarError`."""
        if request.decoding.mode == "free":
            return None
        if self._decoder is None:  # the generate path has no per-step hook for masks
            mode = request.decoding.mode
            message = f"{DECODING_REFUSAL} (mode {mode!r}) for this model's cache type"
            raise RequestRefused(message, worker=self._name)
        fmt = CALL_FORMATS.get(self.tool_format)  # the format the worker declares
        if fmt is None:
            message = f"{DECODING_REFUSAL}: no grammar for tool format {self.tool_format!r}"
            raise RequestRefused(f"{message} (only {', '.join(CALL_FORMATS)})", worker=self._name)
        if self._grammars is None:
            self._grammars = GrammarCompiler(self.tokenizer, self._eos, fmt)
        return await anyio.to_thread.run_sync(
            self._grammars.grammar, request.decoding, request.tools
        )

    def _yield_now(self) -> bool:
        """Stop decoding for now: requests wait to be admitted here, other work (another
        worker's) waits for the compute thread, or the worker is closing."""
        batcher = self._batcher
        return batcher.stopping or batcher.admission_waiting() or compute.jobs_waiting()

    async def _run_batch(self, batch: list[Job]) -> None:
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
            jobs = [*batch, *self._decoder.jobs()]
            self._decoder.reset()
            jobs = [job for job in jobs if job.state != "finished"]
            if isinstance(exc, Exception):
                self._fail(jobs, exc)
            else:  # cancelled: the worker is closing
                for job in jobs:
                    job.finish(WorkerError("worker closed while the request ran"))
            raise
        now = time.perf_counter()
        self._generate_seconds += now - start
        self._finish_rows(done, now)

    def _finish_rows(self, rows: list[Done], now: float) -> None:
        """Resolve the callers of rows that left the engine at `now`."""
        for row in rows:
            if row.job.state == "finished":  # already failed (the worker closing)
                continue
            if row.error is not None:
                self._fail([row.job], row.error)
            elif row.finish != "abandoned":  # an abandoned row's caller waits for nothing
                self._resolve(
                    row.job, self._completion(row.job, row.tokens, row.finish, row.expert_load), now
                )

    def _fail(self, jobs: list[Job], exc: BaseException) -> None:
        self._counts["failed_requests"] += len(jobs)
        for job in jobs:  # one exception object per caller: tracebacks differ
            error = WorkerError(f"generate failed: {exc!r}", worker=self._name)
            error.__cause__ = exc
            job.finish(error)

    def _resolve(self, job: Job, completion: Completion, now: float) -> None:
        completion.latency = now - job.arrived_at
        self._counts["prompt_tokens"] += completion.usage.prompt_tokens
        self._counts["completion_tokens"] += completion.usage.completion_tokens
        job.finish(completion)

    async def _run_groups(self, batch: list[Job]) -> None:
        """The `generate` path, for models the decode engine does not serve (`decode.supports`):
        one padded `generate` per sampling group."""
        groups: dict[Any, list[Job]] = {}
        for job in batch:
            groups.setdefault(group_key(job.request.sampling, job), []).append(job)
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
            for job, completion in zip(group, results, strict=True):
                self._resolve(job, completion, now)

    def _generate(self, rows: list[Job]) -> list[Completion]:
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
            self._completion(job, tokens, finish, load)
            for job, (tokens, finish, load) in zip(rows, kept, strict=True)
        ]

    def _detokenize(self, tokens: list[int]) -> str:
        # Special tokens skipped, but not the declared tool format's markers (`chat_tools`).
        return self._decode_text(tokens)

    def _completion(
        self, job: Job, tokens: list[int], finish: Finish, load: list[list[int]] | None
    ) -> Completion:
        text = self._detokenize(tokens)
        if finish == "stop":
            cuts = [text.find(s) for s in job.request.sampling.stop if s in text]
            text = text[: min(cuts)] if cuts else text
        return Completion(
            text=text,
            usage=Usage(prompt_tokens=len(job.prompt_ids), completion_tokens=len(tokens)),
            worker=self._name,
            model=self.info.model,
            architecture=self._architecture,
            expert_load=load,
            finish_reason=finish,
            cached_prompt_tokens=job.cached_prompt_tokens if self._prefix_cache else None,
        )

    @property
    def _prefix_cache(self) -> PrefixCache | None:
        return self._decoder.prefix_cache if self._decoder is not None else None
