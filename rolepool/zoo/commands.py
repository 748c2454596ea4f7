"""`rolepool zoo ...`: train, evaluate and list the reference models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rolepool.cli_args import MAX_COUNT, SEED, TEXT_FILE, Float, InputDir, Int, OutputDir, count
from rolepool.core import UserError
from rolepool.zoo.tokenizer import MIN_VOCAB_SIZE

_STEPS = 10**7  # the shipped recipes train a few thousand
_CHECKPOINT = InputDir("checkpoint directory")


def add_zoo_commands(subparsers: Any) -> None:
    zoo = subparsers.add_parser("zoo", help="the reference models: train, evaluate, list")
    cmds = zoo.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND", required=True)

    train = cmds.add_parser("train", help="train a reference model (the shipped recipe)")
    train.add_argument(
        "--arch", choices=("moe", "dense"), help="required unless --recipe gives the recipe"
    )
    train.add_argument("--seed", type=SEED, default=None, help="default 1")
    train.add_argument(
        "--steps",
        type=count(_STEPS),
        default=None,
        help="default: the shipped recipe's (for an upcycled MoE, the MoE's steps after the "
        "dense ones)",
    )
    train.add_argument(
        "--batch-size", type=count(65_536), default=None, help="both phases of an upcycled MoE"
    )
    train.add_argument(
        "--lr", type=Float(0, 1), default=None, help="both phases of an upcycled MoE"
    )
    train.add_argument(
        "--vocab-size",
        type=Int(MIN_VOCAB_SIZE, 1 << 20),
        default=None,
        help="BPE vocabulary (default: the shipped recipe's, 512)",
    )
    train.add_argument(
        "--precision", choices=("fp32", "bf16"), default=None, help="default: the shipped recipe's"
    )
    train.add_argument(
        "--sort-window",
        type=count(10_000),
        default=None,
        help="length-sort batches within windows of this many batches (default: the shipped "
        "recipe's, 16)",
    )
    train.add_argument(
        "--fast-steps",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="eager attention for short batches and bf16 MoE experts (default: on, as shipped; "
        "see bench/train_step.py)",
    )
    train.add_argument(
        "--pad-multiple",
        type=count(512),
        default=None,
        help="pad batches (and, with fast steps, each MoE expert's rows) to a multiple of this "
        "many tokens, so the bf16 matmuls take few shapes (default: the shipped recipe's, 32)",
    )
    train.add_argument(
        "--init-std",
        type=Float(0, 1, high_excluded=True),
        default=None,
        help="standard deviation of the initial weights (default: the shipped recipe's)",
    )
    train.add_argument(
        "--upcycle-steps",
        type=Int(0, _STEPS),
        default=None,
        help="MoE: train a dense model this many steps first and continue from it as the MoE "
        "(sparse upcycling); 0 starts the MoE from random weights (default: the shipped "
        "recipe's)",
    )
    train.add_argument(
        "--recipe",
        type=TEXT_FILE,
        default=None,
        metavar="FILE",
        help="train exactly this logged recipe (a checkpoint's train_log.json, or a JSON object "
        "of Recipe fields): how a checkpoint whose recipe the flags cannot express is reproduced",
    )
    train.add_argument(
        "--out", type=OutputDir(), required=True, help="directory for the checkpoint"
    )
    train.add_argument("--eval", action="store_true", help="score both held-out splits after")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=cmd_train)

    ev = cmds.add_parser("eval", help="score a checkpoint on the held-out splits")
    ev.add_argument("model_dir", type=_CHECKPOINT)
    ev.add_argument("--n", type=count(), default=None, help="items per split (default 600)")
    ev.add_argument("--show-errors", type=Int(0, MAX_COUNT), default=0, metavar="N")
    ev.set_defaults(handler=cmd_eval)

    listing = cmds.add_parser("list", help="the shipped checkpoints with their scores")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    cards = cmds.add_parser("cards", help="rewrite the model cards of every checkpoint in a dir")
    cards.add_argument(
        "root", nargs="?", type=InputDir(), default=None, help="default: the shipped checkpoints"
    )
    cards.set_defaults(handler=cmd_cards)


def _logged_recipe(args: argparse.Namespace) -> Any:
    """The recipe in `--recipe FILE`; refused with any flag that would change it."""
    from dataclasses import fields

    from rolepool.zoo.train import FLAG_FIELDS, Recipe

    # Every flag that shapes the recipe: none may go with --recipe.
    shaping = ("arch", "seed", *FLAG_FIELDS, "upcycle_steps")
    given = [f"--{k.replace('_', '-')}" for k in shaping if getattr(args, k) is not None]
    if given:
        raise UserError(f"--recipe trains the logged recipe as it is: drop {', '.join(given)}")
    path = Path(args.recipe)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"--recipe {path}: not JSON ({exc})") from None
    data = data.get("recipe", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise UserError(f"--recipe {path}: expected a JSON object of recipe fields")
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"--recipe {path}: unknown recipe fields {', '.join(unknown)}")
    try:
        return Recipe(**data)
    except TypeError as exc:
        raise UserError(f"--recipe {path}: {exc}") from None


def cmd_train(args: argparse.Namespace, out: Console) -> int:
    from rolepool.zoo.cards import steps_label
    from rolepool.zoo.train import FLAG_FIELDS, UPCYCLE_DEFAULTS, check, shipped_recipe, train

    if args.recipe is not None:
        recipe = _logged_recipe(args)
    elif args.arch is None:
        raise UserError("zoo train needs --arch (moe or dense) or --recipe FILE")
    else:
        recipe = shipped_recipe(args.arch, 1 if args.seed is None else args.seed)
    for key in FLAG_FIELDS:
        if getattr(args, key) is not None:
            setattr(recipe, key, getattr(args, key))
    if args.upcycle_steps is not None:  # check() refuses it for a dense model
        recipe.upcycle = (
            {**(recipe.upcycle or UPCYCLE_DEFAULTS), "steps": args.upcycle_steps}
            if args.upcycle_steps
            else {}
        )
    try:
        check(recipe)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    target = Path(args.out)
    result = train(recipe, out=target, progress=not args.quiet)
    steps = steps_label(recipe.steps, recipe.upcycle.get("steps"))
    out.print(
        f"trained {recipe.arch} seed {recipe.seed}: {steps} steps in "
        f"{result.wall_time_s:.0f} s, final loss {result.losses[-1]:.4f} -> {target}"
    )
    if args.eval:
        _evaluate(str(target), None, 0, out)
    return 0


def cmd_eval(args: argparse.Namespace, out: Console) -> int:
    if not (Path(args.model_dir) / "config.json").is_file():
        raise UserError(f"{args.model_dir} is not a checkpoint directory (no config.json)")
    _evaluate(args.model_dir, args.n, args.show_errors, out)
    return 0


def _evaluate(model_dir: str, n: int | None, show_errors: int, out: Console) -> None:
    from rolepool.zoo.cards import SPLITS
    from rolepool.zoo.evaluate import SPLIT_SIZE, errors, evaluate, load

    model, tokenizer = load(model_dir)
    results = {}
    for split in SPLITS:
        summary, items = evaluate(model, tokenizer, split, n=n or SPLIT_SIZE)
        results[split] = summary
        out.print(
            f"[bold]{split}[/]: "
            + json.dumps({k: v for k, v in summary.items() if not k.startswith("by_")})
        )
        for err in errors(items, show_errors):
            out.print(json.dumps(err), highlight=False)
    if n is None:  # only full-size runs become the checkpoint's scores
        (Path(model_dir) / "eval.json").write_text(json.dumps(results, indent=2) + "\n")


def cmd_list(args: argparse.Namespace, out: Console) -> int:
    from rolepool.zoo import list_checkpoints
    from rolepool.zoo.cards import steps_label

    found = list_checkpoints()
    if args.json:
        for c in found:
            out.print_json(json.dumps({"name": c["name"], "path": str(c["path"]), **c["card"]}))
        return 0
    table = Table(title="shipped reference checkpoints (exact call = name and every argument)")
    for col in (
        "name",
        "arch",
        "total params",
        "active params",
        "steps",
        "train s",
        "exact call (unseen values)",
        "exact call (unseen phrasings)",
    ):
        table.add_column(col, no_wrap=True)
    for c in found:
        card = c["card"]
        scores = card.get("scores", {})

        def pct(split: str, scores: dict[str, Any] = scores) -> str:
            value = scores.get(split, {}).get("exact_call")
            return "–" if value is None else f"{100 * value:.1f}%"

        table.add_row(
            c["name"],
            card.get("architecture", "?"),
            f"{card.get('params_total', 0):,}",
            f"{card.get('params_active', 0):,}",
            steps_label(card.get("steps", "?"), card.get("upcycle_steps")),
            str(round(card.get("wall_time_s", 0))),
            pct("unseen_values"),
            pct("unseen_phrasings"),
        )
    out.print(table)
    return 0


def cmd_cards(args: argparse.Namespace, out: Console) -> int:
    from rolepool.zoo import CHECKPOINTS
    from rolepool.zoo.cards import write_cards

    root = Path(args.root) if args.root else CHECKPOINTS
    if not root.is_dir():
        raise UserError(f"no checkpoint directory at {root}")
    for path in write_cards(root):
        out.print(f"wrote {path / 'card.json'} and README.md")
    return 0
