"""The zoo's tokenizer: byte-level BPE trained on the train split, with our chat template.

Pre-tokens are a word with its *trailing* space, one digit, or one punctuation mark with its
trailing space. So a value is the same token sequence in the request ("for plis woofus.") and in
the call (`"plis woofus"`), except for a last word followed by a space in the request, and each
copied token is predicted from the single token before it: an induction head's easiest case.
(GPT-2's leading spaces make every value's first word differ between request and call; isolated
space tokens make the copy ambiguous after each space.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rolepool.zoo.corpus import Example
from rolepool.zoo.template import CALL_CLOSE, CALL_OPEN, CHAT_TEMPLATE, END, PAD, SPECIAL_TOKENS

VOCAB_SIZE = 1024
MIN_VOCAB_SIZE = 300  # the 256 byte tokens, the special tokens and room for merges
MAX_LENGTH = 512
PRE_TOKEN = r"\p{L}+ ?|\p{N}|[^\s\p{L}\p{N}] ?|\s"
_SPECIALS = re.compile("|".join(re.escape(t) for t in [*SPECIAL_TOKENS, CALL_OPEN, CALL_CLOSE]))


def render(examples: Iterable[Example], *, with_spans: bool = False) -> tuple[list[str], list[Any]]:
    """Each example as the chat template renders it, and the character spans of its assistant
    turns (what the loss is computed on)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    texts, spans = [], []
    for ex in examples:
        rendered, indices = render_jinja_template(
            [ex.messages],
            tools=ex.tools,
            chat_template=CHAT_TEMPLATE,
            return_assistant_tokens_mask=with_spans,
        )
        texts.append(rendered[0])
        spans.append(indices[0] if with_spans else [])
    return texts, spans


def build_tokenizer(train: list[Example], vocab_size: int = VOCAB_SIZE) -> Any:
    """Train BPE on the rendered train split and wrap it as a `PreTrainedTokenizerFast`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_TOKEN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,  # room for the two call markers added below
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts, _ = render(train)
    tok.train_from_iterator((_SPECIALS.sub("\n", t) for t in texts), trainer)
    # Atomic but not special: decoding with skip_special_tokens keeps them, so the call survives.
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in (CALL_OPEN, CALL_CLOSE)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token=PAD,
        padding_side="left",
        model_max_length=MAX_LENGTH,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode(tokenizer: Any, examples: list[Example]) -> list[tuple[list[int], list[int]]]:
    """`(input_ids, assistant_mask)` per example; the same ids `apply_chat_template` gives."""
    texts, spans = render(examples, with_spans=True)
    batch = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for ids, offsets, ranges in zip(
        batch["input_ids"], batch["offset_mapping"], spans, strict=True
    ):
        mask = [int(any(a <= s and e <= b for a, b in ranges)) for s, e in offsets]
        out.append((ids, mask))
    return out
