"""Tiny random-weight models that tests build on the spot: a Llama (dense) and a Mixtral (MoE).

They exercise the real loading, chat-template and generation code with no download. Their output
is noise; tests that need sensible calls use the shipped reference models instead.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name if t.function is defined else t.name }};"
    "{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}</tool_call>"
    "{% endfor %}{% endif %}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)

CORPUS = [
    "plan the work and assign a coder to write tests",
    '{"name": "search_docs", "arguments": {"query": "mixture of experts", "top_k": 3}}',
    "the quick brown fox jumps over the lazy dog 0123456789",
    "<tool_call> </tool_call> <tools> </tools> <system> <user> <assistant> <tool>",
]


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_tiny_model(out: Path, arch: str = "dense", seed: int = 0) -> Path:
    """Save a tiny random model of `arch` ("dense" or "moe") with its tokenizer into `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    if arch == "moe":
        config = MixtralConfig(
            intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, **common
        )
        model = MixtralForCausalLM(config)
    elif arch == "dense":
        model = LlamaForCausalLM(LlamaConfig(intermediate_size=96, **common))
    else:
        raise ValueError(f"arch must be 'dense' or 'moe', not {arch!r}")
    model.save_pretrained(out)
    return out
