"""The decode engine (`rolepool.pools.decode`) against `model.generate`: greedy rows equal
`generate` token for token (mixed prompt lengths, per-row max_tokens and stop strings, rows
admitted while others decode), expert telemetry keeps its sum invariant and does not depend on
the batch, seeded rows do not depend on their partners, and models it cannot serve fall back to
`generate`.
"""

from __future__ import annotations

import shutil

import anyio
import pytest
import torch
from test_transformers_worker import PROMPTS, _relive, answer_or_error, gather, req

from rolepool.core import Message, Request, Sampling
from rolepool.pools.batching import Job
from rolepool.pools.decode import Decoder, supports
from rolepool.pools.generate_fallback import cut_row
from rolepool.pools.kv_buffer import KVBuffer
from rolepool.pools.transformers_worker import TransformersWorker

pytestmark = pytest.mark.anyio

TOOLISH = [
    "find the docs about mixture of experts routing and summarise them",
    "plan",
    '{"name": "search_docs", "arguments": {"query": "kv cache"}}',
    "write a short report section on the expert load of layer 3 " * 2,
    "x",
]


@pytest.fixture(scope="module")
def lively_dense(tiny_dense_dir, tmp_path_factory):
    return _relive(tiny_dense_dir, tmp_path_factory.mktemp("decode") / "lively-dense")


@pytest.fixture(scope="module")
def lively_moe(tiny_moe_dir, tmp_path_factory):
    return _relive(tiny_moe_dir, tmp_path_factory.mktemp("decode") / "lively-moe")


@pytest.fixture
def models(lively_dense, lively_moe):
    return {"lively-dense": lively_dense, "lively-moe": lively_moe}


def loaded(model) -> TransformersWorker:
    worker = TransformersWorker(model)
    worker._load_sync()
    assert worker._decoder is not None
    return worker


def make_job(worker: TransformersWorker, request: Request) -> Job:
    ids = worker._prompt_ids(request)
    return Job(request, ids, worker._max_tokens(request, len(ids)))


def drain(decoder: Decoder, new: list[Job], yield_now=lambda: False) -> dict:
    done = {}
    while new or decoder.active:
        for row in decoder.run(new, yield_now):
            assert row.error is None, row.error
            done[id(row.job)] = row
        new = []
    return done


def generate_alone(worker: TransformersWorker, p: Job) -> list[int]:
    """`model.generate` on the prompt alone, cut like the worker cuts (EOS, max_tokens, stop)."""
    ids = torch.tensor([p.prompt_ids])
    with torch.inference_mode():
        out = worker._model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=p.max_tokens,
            eos_token_id=worker._eos,
            pad_token_id=worker._pad,
        )
    tokens, _ = cut_row(out[0, ids.shape[1] :].tolist(), p, worker._eos, worker._detokenize)
    return tokens


def requests_for(texts: list[str], **sampling) -> list[Request]:
    return [
        Request(
            messages=[Message(role="user", content=t)],
            sampling=Sampling(
                max_tokens=sampling.get("max_tokens", 6 + 3 * i),
                **{k: v for k, v in sampling.items() if k != "max_tokens"},
            ),
        )
        for i, t in enumerate(texts)
    ]


@pytest.mark.parametrize("name", ["lively-dense", "lively-moe", "dense-s1", "moe-s1"])
async def test_greedy_rows_equal_generate_token_for_token(name, models):
    worker = loaded(models.get(name, name))
    texts = PROMPTS if "lively" in name else TOOLISH * 2
    rows = [make_job(worker, r) for r in requests_for(texts)]
    assert len({len(p.prompt_ids) for p in rows}) > 3, "prompts of mixed lengths"
    done = drain(worker._decoder, rows)
    for p in rows:
        assert done[id(p)].tokens == generate_alone(worker, p)
    if "lively" in name:
        assert len({tuple(done[id(p)].tokens) for p in rows}) > 1


@pytest.mark.parametrize("name", ["lively-dense", "lively-moe"])
async def test_stop_strings_cut_rows_where_generate_output_is_cut(name, models):
    worker = loaded(models[name])
    probe = make_job(worker, requests_for(PROMPTS[1:2], max_tokens=12)[0])
    full = worker._detokenize(generate_alone(worker, probe))
    stops = [full[4:6], full[len(full) // 2 : len(full) // 2 + 3], "never-in-text"]
    rows = [make_job(worker, requests_for(PROMPTS[1:2], max_tokens=12, stop=[s])[0]) for s in stops]
    done = drain(worker._decoder, rows)
    for p, stop in zip(rows, stops, strict=True):
        row = done[id(p)]
        assert row.tokens == generate_alone(worker, p)
        assert row.finish == ("length" if stop == "never-in-text" else "stop")
        completion = worker._completion(p, row.tokens, row.finish, row.expert_load)
        assert completion.text == (full if stop == "never-in-text" else full[: full.find(stop)])


@pytest.mark.parametrize("name", ["lively-dense", "lively-moe"])
async def test_rows_admitted_while_others_decode_match_generate(name, models):
    worker = loaded(models[name])
    decoder = worker._decoder
    first = [make_job(worker, r) for r in requests_for(PROMPTS[:3], max_tokens=20)]
    # The second wave holds a prompt longer than the running batch: the batch is re-padded.
    later = [make_job(worker, r) for r in requests_for([PROMPTS[2] * 2, "x", PROMPTS[4]])]
    steps = 0

    def after_three_steps() -> bool:
        nonlocal steps
        steps += 1
        return steps > 3

    done = {id(r.job): r for r in decoder.run(first, after_three_steps)}
    assert decoder.active == 3 and not done
    widths = [decoder.batch.width]
    done |= drain(decoder, later, lambda: widths.append(decoder.batch.width) or False)
    assert max(widths) > widths[0], "the longer newcomer widened the batch"
    for p in first + later:
        assert done[id(p)].tokens == generate_alone(worker, p)
    if name == "lively-moe":
        config = worker.config
        for p in first + later:
            row = done[id(p)]
            alone = drain(decoder, [make_job(worker, p.request)])
            assert row.expert_load == next(iter(alone.values())).expert_load
            processed = len(p.prompt_ids) + len(row.tokens) - 1
            assert [sum(layer) for layer in row.expert_load] == [
                processed * config.num_experts_per_tok
            ] * config.num_hidden_layers


async def test_padding_no_row_needs_is_trimmed(lively_dense):
    worker = loaded(lively_dense)
    decoder = worker._decoder
    long, short = requests_for([PROMPTS[2] * 2, "x"], max_tokens=30)
    long.sampling.max_tokens = 2
    rows = [make_job(worker, long), make_job(worker, short)]
    decoder.run(rows, lambda: False)  # the long row leaves after 2 tokens
    assert decoder.active == 1
    # The short row's prompt and its first token (fed back); its second is not fed yet.
    assert decoder.batch.width == len(rows[1].prompt_ids) + 1
    assert len(decoder.batch.rows[0].tokens) == 2
    assert int(decoder.batch.pad_lengths[0]) == 0


@pytest.mark.parametrize("name", ["lively-dense", "lively-moe"])
async def test_a_row_leaving_mid_batch_is_replaced_by_the_last_row(name, models):
    worker = loaded(models[name])
    decoder = worker._decoder
    # Admitted shortest prompt first; the first row leaves first, the last row takes its place.
    texts = ["x", "plan the work and assign a coder", PROMPTS[4]]
    rows = [make_job(worker, r) for r in requests_for(texts, max_tokens=20)]
    rows[0].max_tokens, rows[2].max_tokens = 3, 12
    done = {id(r.job): r for r in decoder.run(rows, lambda: False)}
    assert list(done) == [id(rows[0])]
    assert [row.job for row in decoder.batch.rows] == [rows[2], rows[1]]
    done |= drain(decoder, [])
    for p in rows:
        assert done[id(p)].tokens == generate_alone(worker, p)
    if name == "lively-moe":
        for p in rows:
            again = make_job(worker, p.request)
            again.max_tokens = p.max_tokens
            assert done[id(p)].expert_load == drain(decoder, [again])[id(again)].expert_load


async def test_with_deliver_rows_are_handed_over_as_they_leave_and_decoding_goes_on(lively_dense):
    worker = loaded(lively_dense)
    decoder = worker._decoder
    rows = [make_job(worker, r) for r in requests_for(PROMPTS[:5])]  # max_tokens 6, 9, 12, ...
    handed: list[list] = []
    left = decoder.run(rows, lambda: False, handed.append)
    assert left == [] and decoder.active == 0
    assert len(handed) > 1, "rows were handed over in several steps of one run"
    done = {id(row.job): row for batch in handed for row in batch}
    assert set(done) == {id(p) for p in rows}
    for p in rows:
        assert done[id(p)].tokens == generate_alone(worker, p)
    # A run still stops when asked to, with the remaining rows in flight.
    rows = [make_job(worker, r) for r in requests_for(PROMPTS[:2], max_tokens=30)]
    assert decoder.run(rows, lambda: True, handed.append) == [] and decoder.active == 2


async def test_seeded_rows_do_not_depend_on_their_partners(lively_moe):
    worker = loaded(lively_moe)
    decoder = worker._decoder

    def seeded(seed: int) -> Job:
        r = requests_for([PROMPTS[2]], max_tokens=12, temperature=1.3, seed=seed)[0]
        return make_job(worker, r)

    alone = [drain(decoder, [p])[id(p)].tokens for p in (seeded(1), seeded(2))]
    assert alone[0] != alone[1]
    partners = [make_job(worker, r) for r in requests_for(PROMPTS[:4], temperature=0.9, top_p=0.8)]
    mixed = [seeded(2), *partners, seeded(1), make_job(worker, req(PROMPTS[5]))]
    done = drain(decoder, mixed)
    assert [done[id(mixed[-2])].tokens, done[id(mixed[0])].tokens] == alone
    # top_p so small that only the most likely token survives: sampling equals greedy.
    narrow = make_job(worker, requests_for([PROMPTS[1]], temperature=2.0, top_p=1e-6)[0])
    greedy = make_job(worker, requests_for([PROMPTS[1]])[0])
    both = drain(decoder, [narrow, greedy])
    assert both[id(narrow)].tokens == both[id(greedy)].tokens


async def test_worker_admits_a_request_while_another_decodes(lively_dense):
    worker = TransformersWorker(lively_dense, max_wait_ms=0)
    await worker.load()
    long, short = req(PROMPTS[1], max_tokens=60), req(PROMPTS[3], max_tokens=3)
    alone = [await worker.complete(r) for r in (long, short)]
    order: list[str] = []

    async def run(label: str, request: Request, delay: float) -> None:
        await anyio.sleep(delay)
        if label == "short":
            with anyio.fail_after(30):
                while worker.stats["decode_steps"] < steps_before + 3:
                    await anyio.sleep(0.001)
        result = await worker.complete(request)
        order.append(label)
        assert result.text == alone[0 if label == "long" else 1].text

    steps_before = worker.stats["decode_steps"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "long", long, 0)
        tg.start_soon(run, "short", short, 0)
    assert order == ["short", "long"], "the short request joined the running batch and left first"
    assert worker.stats["batch_sizes"][1] == 4  # every admission held one request
    await worker.aclose()


async def test_a_caller_giving_up_mid_decode_does_not_kill_the_batch(lively_dense):
    worker = TransformersWorker(lively_dense, max_wait_ms=50)
    await worker.load()
    keep = req(PROMPTS[4], max_tokens=20)
    expected = (await worker.complete(keep)).text
    results: list = []

    async def impatient() -> None:
        with anyio.move_on_after(0.2):
            await worker.complete(req(PROMPTS[1], max_tokens=1000))

    async def patient() -> None:
        results.append(await worker.complete(keep))

    async with anyio.create_task_group() as tg:
        tg.start_soon(impatient)
        tg.start_soon(patient)
    assert results[0].text == expected and worker.stats["cancelled"] == 1
    with anyio.fail_after(30):
        while worker._decoder.active:
            await anyio.sleep(0.01)
    assert worker.stats["requests"] == 3 and worker.stats["failed_requests"] == 0
    await worker.aclose()


async def test_a_model_the_engine_cannot_serve_falls_back_to_generate(tiny_dense_dir, tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    target = tmp_path / "sliding"
    shutil.copytree(tiny_dense_dir, target)
    (target / "model.safetensors").unlink()
    config = MistralConfig.from_pretrained(tiny_dense_dir)
    config = MistralConfig(**{**config.to_dict(), "model_type": "mistral", "sliding_window": 8})
    MistralForCausalLM(config).save_pretrained(target)
    worker = TransformersWorker(target, max_wait_ms=50)
    await worker.load()
    assert not supports(worker._model) and worker._decoder is None
    results = await gather(worker, [req(p, max_tokens=4) for p in PROMPTS[:3]])
    assert all(r.usage.completion_tokens >= 1 for r in results)
    assert worker.stats["generate_calls"] == 1
    await worker.aclose()


async def test_closing_the_worker_fails_the_rows_still_decoding(lively_dense):
    from rolepool.core import WorkerError

    worker = TransformersWorker(lively_dense, max_wait_ms=0)
    await worker.load()
    outcome: list = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(answer_or_error, worker, req(PROMPTS[1], max_tokens=1000), outcome)
        with anyio.fail_after(30):
            while worker.stats["decode_steps"] < 3:
                await anyio.sleep(0.001)
        await worker.aclose()
    assert isinstance(outcome[0], WorkerError) and "closed" in str(outcome[0])
    assert worker._decoder.active == 0


async def test_a_batch_keeps_every_rows_state_in_step_when_rows_join_and_leave():
    """`Batch.append`/`keep` move a row's cache, padding, last token and expert counts together:
    whatever index a row ends up at, all of them are still its own."""
    from rolepool.pools.decode_batch import Batch, Row

    def part(lengths: list[int], first: int) -> Batch:
        width = max(lengths)
        rows = tuple(
            Row(Job(req(f"row {first + i}"), [0] * n, 8), frozenset())
            for i, n in enumerate(lengths)
        )
        layer = KVBuffer()
        keys = torch.zeros(len(lengths), 1, width, 1)
        for i, n in enumerate(lengths):  # a row's keys hold its number, padding stays zero
            keys[i, :, width - n :] = first + i + 1
        layer.update(keys, keys)
        ids = torch.arange(first, first + len(lengths))
        counts = ids[:, None, None].expand(-1, 1, 2).clone()
        return Batch(rows, [layer], torch.tensor([width - n for n in lengths]), ids, counts)

    batch = Batch.empty(1)
    batch.append(part([2, 5], 0))
    batch.append(part([7, 1, 3], 2))  # wider: the first rows get more padding
    assert batch.width == 7 and batch.pad_lengths.tolist() == [5, 2, 0, 6, 4]
    lengths = {0: 2, 1: 5, 2: 7, 3: 1, 4: 3}
    # Rows 0 and 2 leave: their places below the new size take the last rows (3 and 4).
    batch.keep([1, 3, 4])
    number = [int(row.job.request.messages[0].content.split()[1]) for row in batch.rows]
    assert number == [3, 1, 4]
    assert batch.width == 5, "padding no remaining row needs left the window"
    for i, n in enumerate(number):
        assert int(batch.last_tokens[i]) == n and batch.expert_counts[i].unique().tolist() == [n]
        assert int(batch.pad_lengths[i]) == batch.width - lengths[n]
        keys = batch.layers[0].keys[i, 0, :, 0]
        assert (
            keys[int(batch.pad_lengths[i]) :].eq(n + 1).all()
            and not keys[: int(batch.pad_lengths[i])].any()
        )


async def test_an_abandoned_row_leaves_at_the_next_step_with_finish_abandoned(lively_dense):
    worker = loaded(lively_dense)
    decoder = worker._decoder
    stay, leave = (make_job(worker, r) for r in requests_for(PROMPTS[:2], max_tokens=30))
    assert decoder.run([stay, leave], lambda: True) == [] and decoder.active == 2
    leave.state = "abandoned"  # what the batcher does when its caller gives up
    done = decoder.run([], lambda: False)
    assert [(row.job, row.finish) for row in done] == [(leave, "abandoned")]
    assert decoder.jobs() == [stay] and len(done[0].tokens) == 2
