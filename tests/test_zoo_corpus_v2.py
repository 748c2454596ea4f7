"""Corpus v2 (the v2 reference models' train split) adds train-only request frames; the held-out
splits, and corpus v1 for the checkpoints trained on it, stay exactly as they were."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from rolepool.zoo import phrasings
from rolepool.zoo.corpus import generate, user_texts
from rolepool.zoo.train import Recipe, check, shipped_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_v2_changes_only_the_train_split() -> None:
    v1, v2 = generate("train", 300, corpus=1), generate("train", 300, corpus=2)
    assert user_texts(v1) != user_texts(v2)
    for split in ("unseen_values", "unseen_phrasings"):
        assert [e.messages for e in generate(split, 200, 7, corpus=1)] == [
            e.messages for e in generate(split, 200, 7, corpus=2)
        ]


def test_v2_train_never_holds_a_held_out_template_or_request() -> None:
    train = user_texts(generate("train", 6000, corpus=2))
    held_out = user_texts(generate("unseen_phrasings", 600, seed=7))
    assert not train & held_out
    for name, extra in phrasings.EXTRA_TRAIN.items():
        base = phrasings.TOOL_REQUESTS.get(name) or getattr(phrasings, name.upper())
        assert extra and not set(extra) & set(base[1]), name


@functools.cache
def _v2_train_texts() -> frozenset[str]:
    return frozenset(user_texts(generate("train", 6000, corpus=2)))


@pytest.mark.parametrize("name", ["handwritten-v1.jsonl", "handwritten-v2.jsonl"])
def test_the_hand_written_suite_is_not_in_the_training_data(name: str) -> None:
    suite = ROOT / "evals" / name
    prompts = {json.loads(line)["prompt"] for line in suite.read_text().splitlines()}
    assert not prompts & _v2_train_texts()


def test_the_shipped_recipe_trains_on_v2_and_old_logs_mean_v1() -> None:
    assert shipped_recipe("dense", 1).corpus == 2 and Recipe().corpus == 1
    with pytest.raises(ValueError, match="corpus must be one of"):
        check(Recipe(corpus=3))
