"""The report's figures, drawn with matplotlib's Agg backend (no display, no network) and saved as
PNG files next to the report; the HTML report embeds the same bytes.

matplotlib is imported here only, so loading suites or scoring replays never pays for it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rolepool.evals.result_line import ResultLine
from rolepool.evals.role_expert_load import ExpertHealth
from rolepool.evals.summary_types import Summary, WorkerSummary

PLOTTED = ("exact_acc", "name_acc", "schema_valid")
# four shades each, one per seed of the shipped set; a fifth model of one architecture repeats one
ARCH_COLOURS = {
    "dense": ("#123f75", "#2f6db5", "#6fa3db", "#b3d1ef"),
    "moe": ("#8c2d0b", "#c9582a", "#ea8f4f", "#f6c196"),
}
OTHER = ("#3d7d3d", "#6fae6f", "#a3d3a3", "#7a4fa0", "#a987c7")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def worker_colours(workers: dict[str, WorkerSummary]) -> dict[str, str]:
    """Shades of one hue per architecture, so dense and MoE read apart at a glance."""
    used: dict[str, int] = {}
    out = {}
    for name, w in workers.items():
        palette = ARCH_COLOURS.get(w.architecture, OTHER)
        i = used.get(palette[0], 0)
        used[palette[0]] = i + 1
        out[name] = palette[i % len(palette)]
    return out


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def accuracy_by_role(summary: Summary) -> bytes:
    """One panel per metric: a bar per worker per role, with its Wilson 95% interval."""
    plt = _pyplot()
    workers = summary.workers
    roles = sorted({r for w in workers.values() for r in w.by_role})
    colours = worker_colours(workers)
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.6 * len(PLOTTED), 3.6), sharey=True)
    width = 0.8 / max(1, len(workers))
    for ax, metric in zip(axes, PLOTTED, strict=True):
        for i, (name, w) in enumerate(workers.items()):
            xs, ys, lo, hi = [], [], [], []
            for j, role in enumerate(roles):
                group = w.by_role.get(role)
                cell = group.cell(metric) if group is not None else None
                if cell is None or cell.rate is None:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(cell.rate)
                lo.append(max(0.0, cell.rate - cell.ci95[0]))
                hi.append(max(0.0, cell.ci95[1] - cell.rate))
            ax.bar(
                xs,
                ys,
                width,
                yerr=[lo, hi],
                capsize=2,
                color=colours[name],
                label=name,
                error_kw={"elinewidth": 0.8, "ecolor": "#333"},
            )
        ax.set_xticks(range(len(roles)), roles, rotation=20 if len(roles) > 4 else 0)
        ax.set_ylim(0, 1.05)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("rate (bars: Wilson 95% interval)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Accuracy by role", fontsize=11, y=1.03)
    return _png(fig)


def latency(records: Sequence[ResultLine], summary: Summary) -> bytes:
    """Per-case latency (sum of the case's model calls) per worker, as box plots."""
    plt = _pyplot()
    workers = list(summary.workers)
    data = [[float(r.latency) for r in records if r.worker == w] for w in workers]
    colours = worker_colours(summary.workers)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(workers) + 2), 3.4))
    box = ax.boxplot(
        data, tick_labels=workers, patch_artist=True, showfliers=True, flierprops={"markersize": 3}
    )
    for patch, name in zip(box["boxes"], workers, strict=True):
        patch.set_facecolor(colours[name])
        patch.set_alpha(0.75)
    ax.set_ylabel("seconds per case")
    ax.set_title("Latency per case (model time, batching wait included)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def expert_heatmap(name: str, health: ExpertHealth) -> bytes:
    """One heatmap per role: each layer's share of tokens per expert (even share = 1/experts)."""
    plt = _pyplot()
    roles = list(health.by_role)
    fig, axes = plt.subplots(1, len(roles), figsize=(3.2 * len(roles) + 1, 2.9), squeeze=False)
    image = None
    top = max(s for r in roles for layer in health.by_role[r].share for s in layer) or 1
    for ax, role in zip(axes[0], roles, strict=True):
        share = health.by_role[role].share
        image = ax.imshow(share, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        ax.set_title(f"{role}  (H={health.by_role[role].entropy_mean:.2f})", fontsize=9)
        ax.set_xlabel("expert")
        ax.set_xticks(range(len(share[0])))
        ax.set_yticks(range(len(share)))
    axes[0][0].set_ylabel("layer")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.85, label="share of tokens")
    fig.suptitle(f"{name}: expert load by role", fontsize=10, y=1.04)
    return _png(fig)


def all_figures(records: Sequence[ResultLine], summary: Summary) -> dict[str, bytes]:
    """File name -> PNG bytes for every figure the report shows."""
    figures = {"accuracy_by_role.png": accuracy_by_role(summary)}
    figures["latency.png"] = latency(records, summary)
    for name, w in summary.workers.items():
        if w.expert_health is not None:
            figures[f"expert_load_{_safe(name)}.png"] = expert_heatmap(name, w.expert_health)
    return figures


def save_figures(figures: dict[str, bytes], directory: Path) -> list[Path]:
    paths = []
    for file, data in figures.items():
        path = directory / file
        path.write_bytes(data)
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
