"""Model cards: whether the architectures' seeds are independent is read from the training logs,
and the card's command reproduces the shipped recipe."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from rolepool.zoo.cards import _command, across_seeds, comparison
from rolepool.zoo.train import shipped_recipe


def _checkpoint(root: Path, name: str, recipe: dict, exact: float) -> Path:
    d = root / name
    d.mkdir()
    (d / "config.json").write_text("{}")
    log = {"recipe": recipe, "losses": [0.1], "params": {"total": 1, "active": 1}}
    (d / "train_log.json").write_text(json.dumps(log))
    split = {"exact_call": exact, "exact": exact, "tool_name": 1.0, "schema_valid": 1.0}
    (d / "eval.json").write_text(json.dumps({"unseen_values": split, "unseen_phrasings": split}))
    return d


def _dirs(tmp_path: Path, moe_recipe) -> list[Path]:
    return [
        _checkpoint(tmp_path, f"dense-s{n}", asdict(shipped_recipe("dense", n)), 0.8 + n / 100)
        for n in (1, 2)
    ] + [_checkpoint(tmp_path, f"moe-s{n}", moe_recipe(n), 0.8 + n / 50) for n in (1, 2)]


def test_v2_moe_seeds_are_independent_of_the_dense_checkpoints(tmp_path: Path) -> None:
    lines = comparison(across_seeds(_dirs(tmp_path, lambda n: asdict(shipped_recipe("moe", n)))))
    text = " ".join(lines)
    assert "seeds are independent" in text and "not independent" not in text


def test_a_v1_moe_that_shares_its_dense_start_is_said_to(tmp_path: Path) -> None:
    def v1(n: int) -> dict:
        recipe = asdict(shipped_recipe("moe", n))
        del recipe["upcycle"]["seed"]  # v1 logs: the dense phase used the MoE's seed
        return recipe

    text = " ".join(comparison(across_seeds(_dirs(tmp_path, v1))))
    assert "shares its seed with the dense checkpoint of seed 1, 2" in text


def test_the_card_command_is_the_cli_for_the_shipped_recipe() -> None:
    moe = asdict(shipped_recipe("moe", 3))
    assert _command(moe, "moe-s3").startswith("rolepool zoo train --arch moe --seed 3 ")
    assert "--upcycle-steps 1800 " in _command(moe, "moe-s3")
    assert "--pad-multiple 32 " in _command(moe, "moe-s3")
    moe["upcycle"]["seed"] = 7  # not what the CLI would give
    assert _command(moe, "moe-s3").startswith("rolepool zoo train --recipe ")
    v1 = asdict(shipped_recipe("dense", 1))
    del v1["corpus"]  # a log from before corpus v2
    assert _command(v1, "dense-s1").startswith("rolepool zoo train --recipe ")
    dense = asdict(shipped_recipe("dense", 2))
    assert _command(dense, "dense-s2").startswith("rolepool zoo train --arch dense --seed 2 ")
    assert "--upcycle-steps" not in _command(dense, "dense-s2")
    for key, value in (("train_examples", 7), ("warmup", 3), ("weight_decay", 0.5)):
        # no flag sets these: a recipe that differs there is trained from its log
        changed = dict(dense, **{key: value})
        assert _command(changed, "dense-s2").startswith("rolepool zoo train --recipe "), key
    flagged = dict(dense, steps=77, lr=0.001, pad_multiple=1)  # flags express these
    assert "--steps 77 " in _command(flagged, "dense-s2")
    assert "--lr 0.001 --precision" in _command(flagged, "dense-s2")
    scratch = asdict(shipped_recipe("moe", 2))
    scratch["upcycle"] = {}
    assert "--upcycle-steps 0 " in _command(scratch, "moe-s2")


def test_zoo_train_recipe_trains_a_logged_recipe_as_it_is(tmp_path, monkeypatch, capsys) -> None:
    import rolepool.zoo.train as zoo_train
    from rolepool.cli import main
    from rolepool.zoo.train import Recipe, TrainResult

    seen: list[Recipe] = []

    def fake_train(recipe, out=None, progress=True):
        seen.append(recipe)
        return TrainResult(losses=[1.0], wall_time_s=0.0, params={"total": 1, "active": 1})

    monkeypatch.setattr(zoo_train, "train", fake_train)
    v1 = asdict(shipped_recipe("moe", 2))
    del v1["corpus"], v1["upcycle"]["seed"]  # a v1 log: the CLI flags cannot express it
    log = tmp_path / "train_log.json"
    log.write_text(json.dumps({"recipe": v1, "losses": [0.5]}))
    out = ["--out", str(tmp_path / "m")]
    assert main(["zoo", "train", "--recipe", str(log), *out]) == 0
    assert asdict(seen[0]) == {**v1, "corpus": 1}
    assert main(["zoo", "train", "--recipe", str(log), "--seed", "3", *out]) == 2
    assert "drop --seed" in capsys.readouterr().err
    assert main(["zoo", "train", *out]) == 2
    assert "needs --arch" in capsys.readouterr().err
    log.write_text(json.dumps({"recipe": {**v1, "colour": "blue"}}))
    assert main(["zoo", "train", "--recipe", str(log), *out]) == 2
    assert "unknown recipe fields colour" in capsys.readouterr().err
    log.write_text("{not json")
    assert main(["zoo", "train", "--recipe", str(log), *out]) == 2
    assert len(seen) == 1
