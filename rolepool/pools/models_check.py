"""`rolepool models check DIR`: what rolepool will do with a local checkpoint, before loading it.

Read from the directory alone (config, tokenizer, chat template; the weights are hashed, never
loaded): the family and what the registry says of it (`rolepool.pools.families`), the architecture
(dense or MoE: routed experts, top-k, shared experts), total and active parameters (from a
weightless copy of the model), the decode path, expert telemetry, whether the chat template
renders tools (else the text fallback, `rolepool.pools.chat_tools`), the detected tool-call
format and the context length. A directory that is not a model is one `ConfigError` (exit 2).

The decode path is predicted from the model's structure as the worker will find it; the lean
forward still compares its logits with the model's own at load and falls back to `engine` if they
differ (the worker's `stats["decode_path"]` says what happened).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelReport", "add_models_command", "check_model"]


@dataclass(frozen=True)
class ModelReport:
    """What `rolepool models check` found; `--json` prints it as is."""

    path: str
    model_type: str
    family: str | None
    """The registry's name for it; None: not a registered family (served if transformers can)."""
    architecture: str
    experts: int
    top_k: int
    shared_experts: int
    total_params: int
    active_params: int
    decode_path: str
    expert_telemetry: bool
    template_renders_tools: bool
    tools_in_prompt: str
    """"template" or "text fallback"."""
    tool_format: str
    context_length: int | None
    notes: str


def check_model(directory: str | Path) -> ModelReport:
    """Inspect a model directory; a `ConfigError` when it is not one."""
    import torch
    from transformers import AutoModelForCausalLM

    from rolepool.pools.chat_tools import declared_tool_format, renders_tools
    from rolepool.pools.decode import supports
    from rolepool.pools.expert_load import (
        EXPERT_COUNT_KEYS,
        architecture_of,
        experts_per_token,
        find_experts_modules,
        moe_param_counts,
    )
    from rolepool.pools.families import family_of, shared_experts
    from rolepool.pools.local_model import load_config_and_tokenizer, model_dir, weights_version

    path = model_dir(directory)
    config, tokenizer = load_config_and_tokenizer(path)
    weights_version(path)  # no weights is not a model
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    architecture = architecture_of(config)
    top_k = experts_per_token(config) if architecture == "moe" else 0
    total, active = moe_param_counts(skeleton, max(top_k, 1))
    experts = next(
        (v for k in EXPERT_COUNT_KEYS if isinstance(v := getattr(config, k, None), int)), 0
    )
    family = family_of(config)
    engine = supports(skeleton)
    path_name = "generate" if not engine else "lean" if family and family.lean else "engine"
    renders = renders_tools(tokenizer)
    return ModelReport(
        path=str(path),
        model_type=str(getattr(config, "model_type", "?")),
        family=family.label if family else None,
        architecture=architecture,
        experts=experts if architecture == "moe" else 0,
        top_k=top_k,
        shared_experts=shared_experts(config),
        total_params=total,
        active_params=active,
        decode_path=path_name,
        expert_telemetry=architecture == "moe" and bool(find_experts_modules(skeleton)),
        template_renders_tools=renders,
        tools_in_prompt="template" if renders else "text fallback",
        tool_format=declared_tool_format(None, tokenizer),
        context_length=getattr(config, "max_position_embeddings", None),
        notes=family.note if family else "not a registered family: served if transformers can",
    )


_PATHS = {
    "lean": "lean forward (checked against the model's own at load)",
    "engine": "decode engine, model's own forward",
    "generate": "model.generate fallback",
}


def _lines(report: ModelReport) -> list[tuple[str, str]]:
    moe = report.architecture == "moe"
    arch = f"MoE: {report.experts} routed experts, top-{report.top_k}" if moe else "dense"
    if report.shared_experts:
        arch += f", {report.shared_experts} shared (reported apart from the routed load)"
    telemetry = "per request, per layer" if report.expert_telemetry else "no"
    if moe and not report.expert_telemetry:
        telemetry = "no (experts module not recognised)"
    return [
        ("family", f"{report.family or '-'} ({report.model_type})"),
        ("architecture", arch),
        ("parameters", f"{report.total_params:,} total, {report.active_params:,} active"),
        ("decode path", _PATHS[report.decode_path]),
        ("expert telemetry", telemetry if moe else "n/a (dense)"),
        ("tools in prompt", report.tools_in_prompt),
        ("tool-call format", report.tool_format),
        ("context length", str(report.context_length or "unknown")),
        ("notes", report.notes or "-"),
    ]


def cmd_models_check(args: argparse.Namespace, out: Any) -> int:
    report = check_model(args.dir)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    out.print(f"[bold]{report.path}[/]", highlight=False)
    for key, value in _lines(report):
        out.print(f"  {key:<17} {value}", highlight=False, soft_wrap=True)
    return 0


def add_models_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `models check` on the `rolepool` command's subparsers."""
    from rolepool.cli_args import InputDir

    models = subparsers.add_parser("models", help="inspect local model checkpoints")
    commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="what rolepool will do with a local checkpoint",
        description="Family, architecture, parameters, decode path, expert telemetry, tools in "
        "the chat template, tool-call format and context length of a local model directory. "
        "Reads config and tokenizer; the weights are never loaded.",
    )
    check.add_argument("dir", type=InputDir(what="model directory"), metavar="DIR")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=cmd_models_check)
    return models
