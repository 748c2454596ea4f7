"""Schema-constrained decoding without a model: grammars from the shipped tokenizer, driven by
random logits through the same masks the decoder applies (`rolepool.pools.constrained`).

The property: whatever the logits, a constrained reply parses and its arguments validate with
jsonschema, for random tool-like schemas (nested objects, arrays, enums, bounded numbers,
optional fields, anyOf). And a schema the engine cannot take is a `GrammarError` naming the tool
and the construct, quickly, never a hang.
"""

from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from rolepool.core import Decoding, ToolSpec, UserError
from rolepool.pools.constrained import (
    BatchMask,
    RowGrammar,
    block_openings,
    closing,
    live_matchers,
)
from rolepool.pools.grammar import (
    BARE_JSON,
    HERMES,
    MAX_SCHEMA_DEPTH,
    GrammarCompiler,
    GrammarError,
    call_format_of,
)
from rolepool.zoo import CHECKPOINTS
from rolepool.zoo import toolset as zoo_tools

CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(CHECKPOINTS / "dense-s1", local_files_only=True)


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GrammarCompiler(tokenizer, [tokenizer.eos_token_id], call_format_of(tokenizer))


def decode(
    tokenizer, grammar, seed: int, bias: dict[int, float] | None = None, steps=1500, close=False
):
    """Tokens chosen by argmax over random logits under `grammar`'s masks, until EOS or `steps`
    tokens; with `close`, near `steps` the row closes what is open, as the decoder does."""
    gen = torch.Generator().manual_seed(seed)
    row = RowGrammar(grammar)
    tokens: list[int] = []
    for _ in range(steps):
        logits = torch.randn(1, len(tokenizer), generator=gen) * 3
        for token, value in (bias or {}).items():
            logits[0, token] += value
        mask = BatchMask.fill([row])
        if mask is not None:
            mask.apply(logits, [0] if close and closing(steps - len(tokens), steps) else [])
        token = int(logits.argmax(-1))
        tokens.append(token)
        row.advance(token)
        assert row.error is None, row.error
        if token == tokenizer.eos_token_id:
            break
    row.release()
    return tokens


def closing_bias(tokenizer) -> dict[int, float]:
    """Favour tokens that end strings, numbers and containers, so random replies finish."""
    ids = tokenizer.convert_tokens_to_ids(['"', "}", "]", ",Ġ", "0", "1"])
    return {**dict.fromkeys(ids, 4.0), tokenizer.eos_token_id: 4.0}


# -- random tool-like schemas --------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True)
scalars = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "boolean"}),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-50, 50),
        st.integers(0, 100),
    ),
    st.builds(
        lambda lo, span: {"type": "number", "minimum": lo, "maximum": lo + span},
        st.integers(-5, 5),
        st.integers(1, 10),
    ),
    st.builds(
        lambda values: {"type": "string", "enum": values},
        st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=4, unique=True),
    ),
)


def _objects(children):
    return st.builds(
        lambda props, required: {
            "type": "object",
            "properties": props,
            "required": [k for k in props if required.draw_for(k)],
            "additionalProperties": False,
        },
        st.dictionaries(names, children, min_size=1, max_size=3),
        st.builds(_Required, st.randoms(use_true_random=False)),
    )


class _Required:
    def __init__(self, rng) -> None:
        self.rng = rng

    def draw_for(self, key: str) -> bool:
        return self.rng.random() < 0.6


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        _objects(children),
        st.builds(lambda items: {"type": "array", "items": items, "maxItems": 3}, children),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
    ),
    max_leaves=6,
)
tool_schemas = _objects(values)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas=st.lists(tool_schemas, min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_every_constrained_call_parses_and_validates(tokenizer, compiler, schemas, seed):
    tools = [ToolSpec(name=f"tool_{i}", parameters=s) for i, s in enumerate(schemas)]
    grammar = compiler.grammar(Decoding(mode="required"), tools)
    text = tokenizer.decode(decode(tokenizer, grammar, seed, closing_bias(tokenizer)))
    calls = CALL.findall(text)
    assert calls and CALL.sub("", text).replace("<|end|>", "") == ""
    by_name = {t.name: t.parameters for t in tools}
    for body in calls:
        call = json.loads(body)
        assert list(call) == ["name", "arguments"]
        jsonschema.validate(call["arguments"], by_name[call["name"]])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=tool_schemas, seed=st.integers(0, 2**16))
def test_json_schema_replies_validate(tokenizer, compiler, schema, seed):
    grammar = compiler.grammar(Decoding(mode="json_schema", json_schema=schema), [])
    text = tokenizer.decode(decode(tokenizer, grammar, seed, closing_bias(tokenizer)))
    jsonschema.validate(json.loads(text.removesuffix("<|end|>")), schema)


# -- modes -----------------------------------------------------------------------------------------


def test_the_shipped_format_is_hermes_and_a_template_without_it_is_bare_json(tokenizer):
    assert call_format_of(tokenizer) == HERMES

    class Plain:
        chat_template = "{{ messages }}"

        def get_vocab(self):
            return {"a": 0}

    assert call_format_of(Plain()) == BARE_JSON


def test_named_calls_only_that_tool(tokenizer, compiler):
    tools = zoo_tools.role_specs("coder")
    grammar = compiler.grammar(Decoding(mode="named", tool="write_file"), tools)
    for seed in range(5):
        text = tokenizer.decode(decode(tokenizer, grammar, seed, closing_bias(tokenizer)))
        calls = [json.loads(body) for body in CALL.findall(text)]
        assert [c["name"] for c in calls] == ["write_file"]
        jsonschema.validate(calls[0]["arguments"], zoo_tools.schema("write_file"))


def test_auto_is_free_until_the_model_opens_a_call_and_free_again_after(tokenizer, compiler):
    tools = zoo_tools.role_specs("search")
    grammar = compiler.grammar(Decoding(mode="auto"), tools)
    row = RowGrammar(grammar)
    opening = tokenizer.convert_tokens_to_ids("<tool_call>")
    assert not row.constrained
    row.advance(tokenizer.convert_tokens_to_ids("a"))
    assert not row.constrained
    row.advance(opening)
    assert row.constrained
    body = '{"name": "search_docs", "arguments": {"query": "kv"}}</tool_call>'
    for token in tokenizer.encode(body):
        assert row.constrained
        row.advance(token)
    assert not row.constrained and row.error is None
    row.advance(opening)  # a second call is held again
    assert row.constrained
    row.release()
    assert live_matchers() == 0


def test_a_mask_leaves_a_free_row_alone(tokenizer, compiler):
    grammar = compiler.grammar(Decoding(mode="json_object"), [])
    logits = torch.randn(3, len(tokenizer))
    before = logits.clone()
    rows = [None, RowGrammar(grammar), None]
    BatchMask.fill(rows).apply(logits)
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    allowed = torch.isfinite(logits[1]).nonzero().flatten().tolist()
    assert allowed and all(tokenizer.decode([t]).lstrip().startswith("{") for t in allowed)
    rows[1].release()


def test_grammars_are_compiled_once_per_tool_set(tokenizer):
    compiler = GrammarCompiler(tokenizer, [tokenizer.eos_token_id], HERMES)
    tools = zoo_tools.role_specs("writer")
    first = compiler.grammar(Decoding(mode="required"), tools)
    again = compiler.grammar(Decoding(mode="required"), [t.model_copy() for t in tools])
    assert first is again and compiler.compiled == 1
    other = compiler.grammar(Decoding(mode="required"), tools[:1])
    assert other is not first and compiler.compiled == 2
    assert compiler.grammar(Decoding(), tools) is None


def test_a_row_near_its_max_tokens_closes_its_call_instead_of_being_cut(tokenizer, compiler):
    tools = [zoo_tools.tool_spec("write_section")]
    grammar = compiler.grammar(Decoding(mode="required"), tools)
    for seed in range(4):
        cut = tokenizer.decode(decode(tokenizer, grammar, seed, steps=60))
        assert not CALL.findall(cut)  # random logits write on: max_tokens cuts the call
        text = tokenizer.decode(decode(tokenizer, grammar, seed, steps=60, close=True))
        (body,) = CALL.findall(text)
        call = json.loads(body)
        jsonschema.validate(call["arguments"], zoo_tools.schema("write_section"))


# -- errors and bounds -------------------------------------------------------------------------------


def test_a_schema_the_engine_cannot_compile_names_the_tool_and_the_construct(compiler):
    good = zoo_tools.tool_spec("read_file")
    bad = ToolSpec(
        name="weird", parameters={"type": "object", "properties": {"d": {"type": "date"}}}
    )
    with pytest.raises(GrammarError) as caught:
        compiler.grammar(Decoding(mode="required"), [good, bad])
    assert isinstance(caught.value, UserError)
    assert "tool 'weird'" in str(caught.value) and "date" in str(caught.value)
    dangling = ToolSpec(name="ref", parameters={"$ref": "#/$defs/missing"})
    with pytest.raises(GrammarError, match=r"tool 'ref'.*missing"):
        compiler.grammar(Decoding(mode="auto"), [dangling])


def test_huge_and_deep_schemas_are_refused_in_bounded_time(compiler):
    deep: dict = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "object", "properties": {"a": deep}}
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20_000)}}
    start = time.perf_counter()
    with pytest.raises(GrammarError, match=r"tool 'deep'.*deeper"):
        compiler.grammar(Decoding(mode="required"), [ToolSpec(name="deep", parameters=deep)])
    with pytest.raises(GrammarError, match=r"tool 'wide'.*longer"):
        compiler.grammar(Decoding(mode="required"), [ToolSpec(name="wide", parameters=wide)])
    assert time.perf_counter() - start < 5


def test_a_recursive_schema_compiles_and_decodes_within_the_engines_limits(tokenizer, compiler):
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "enum": ["a", "b"]},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
                },
                "required": ["label"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/node",
    }
    grammar = compiler.grammar(Decoding(mode="json_schema", json_schema=tree), [])
    text = tokenizer.decode(decode(tokenizer, grammar, 3, closing_bias(tokenizer)))
    jsonschema.validate(json.loads(text.removesuffix("<|end|>")), tree)


def test_modes_that_need_tools_say_so(compiler):
    with pytest.raises(GrammarError, match="needs tools"):
        compiler.grammar(Decoding(mode="required"), [])
    with pytest.raises(GrammarError, match="'nope'"):
        compiler.grammar(Decoding(mode="named", tool="nope"), zoo_tools.role_specs("writer"))


def test_auto_is_refused_where_the_format_has_no_opening_token(tokenizer):
    compiler = GrammarCompiler(tokenizer, [tokenizer.eos_token_id], BARE_JSON)
    with pytest.raises(GrammarError, match="one-token opening"):
        compiler.grammar(Decoding(mode="auto"), zoo_tools.role_specs("writer"))
    grammar = compiler.grammar(Decoding(mode="required"), [zoo_tools.tool_spec("finish")])
    text = tokenizer.decode(decode(tokenizer, grammar, 1, closing_bias(tokenizer)))
    call = json.loads(text.removesuffix("<|end|>"))
    assert call["name"] == "finish"


def test_a_closing_row_between_calls_opens_no_new_call(tokenizer, compiler):
    grammar = compiler.grammar(Decoding(mode="auto"), zoo_tools.role_specs("writer"))
    between, inside = RowGrammar(grammar), RowGrammar(grammar)
    inside.advance(grammar.trigger)
    logits = torch.zeros(3, len(tokenizer))
    logits[:, grammar.trigger] = 10.0
    block_openings(logits, [(0, between), (1, inside)])
    assert logits[0, grammar.trigger] == float("-inf")  # free, closing: may not open a call
    assert logits[1, grammar.trigger] == 10.0  # inside a call: its mask decides
    assert logits[2, grammar.trigger] == 10.0  # not closing: untouched
    inside.release()
