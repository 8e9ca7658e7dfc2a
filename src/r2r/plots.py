"""Figures of a report: per-domain bars (first stage, pretrained backbone and each run's
trained stages) and the forgetting heat map. Plain data in, a PNG out; the
report command and the analysis notebook both call these."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np


def domain_bars(
    values: Mapping[str, Mapping[str, float]],
    path: Path,
    *,
    title: str,
    metric: str = "ndcg@10",
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Grouped bars: one group per domain, one bar per configuration (a stage and settings).

    `values[config][domain]` in percent, configs in the order given (the report gives BM25
    and PT first, so the baselines sit at the left of every group); `errors[config][domain]`
    the half-width of an interval (over seeds), drawn as an error bar where given."""
    configs = list(values)
    domains = list(dict.fromkeys(d for row in values.values() for d in row))
    width = 0.8 / max(len(configs), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(domains) * max(len(configs), 2) / 3, 3.6))
    x = np.arange(len(domains))
    for i, config in enumerate(configs):
        heights = [values[config].get(d, np.nan) for d in domains]
        spread = (errors or {}).get(config, {})
        bars = ax.bar(
            x + (i - (len(configs) - 1) / 2) * width,
            heights,
            width,
            label=config,
            yerr=[spread.get(d, 0.0) for d in domains] if spread else None,
            capsize=2,
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(x, domains)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(
        fontsize=7, ncols=min(len(configs), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1)
    )
    return _save(fig, path)


def forgetting_heatmap(
    table: Mapping[str, Mapping[str, float]],
    path: Path,
    *,
    title: str,
    base: str = "base",
    metric: str = "ndcg@10",
) -> Path:
    """Each expert's change against the bare backbone on each test domain.

    `table[model][domain]` holds `metric` in percent, `table[base]` the bare backbone; the
    cells show expert − base (red: forgetting), the diagonal is each expert's own domain."""
    experts = [m for m in table if m != base]
    domains = [d for d in table[base] if d != "all"]
    delta = np.array([[table[e][d] - table[base][d] for d in domains] for e in experts])
    limit = max(float(np.nanmax(np.abs(delta))), 1e-9) if delta.size else 1.0
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(domains), 1.2 + 0.55 * len(experts)))
    image = ax.imshow(delta, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(delta):
        # White on the dark ends of the colour map; never "-0.0".
        color = "white" if abs(value) > 0.6 * limit else "black"
        text = f"{round(float(value), 1) + 0.0:+.1f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(domains)), domains)
    ax.set_yticks(range(len(experts)), [f"{e} expert" for e in experts])
    ax.set_xlabel("test domain")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=f"Δ {metric} vs {base} (points)")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    # Written beside and renamed, as every output of r2r: no half-written PNG on a crash.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    partial.replace(path)
    return path
