"""Where each head gains over softmax: relative Recall@20 gain by target support × context diversity,
one panel per head variant at the expert sweep's size d (MoS with the size sweep's K), one colour scale."""

from __future__ import annotations

import math

import pandas as pd

from analysis import plots
from softmax_bottleneck.errors import InputError

from . import results

COLUMNS = 2  # panels per row


def make(results_dir):
    study = results.study(results_dir)
    d, k = study["settings"]["expert_dim"], study["settings"]["experts"]
    summary = results.compare_summary(results_dir)
    at_d = [m for m in summary["models"] if m["hidden_dim"] == d and m["label"] != summary["baseline"]]
    challengers = [rows[0]["label"] for _, _, rows in plots.size_sweep_families(at_d, k)]
    if not challengers:
        raise InputError(f"compare/compare.json has no model at d={d} besides the baseline; run python -m figures "
                         "(without --only) to redo the study")
    grid = results.breakdown(results_dir)
    grid = grid[(grid["breakdown"] == "support×diversity") & (grid["metric"] == "recall")]
    grid = grid.astype({"support_index": int, "diversity_index": int, "n_events": int})
    cells = {label: grid[grid["model"] == label] for label in challengers}
    limit = plots.gain_limit(pd.concat(cells.values()))  # one scale, from every panel's cells together
    columns = min(COLUMNS, len(cells))
    rows = math.ceil(len(cells) / columns)
    figure, axes = plots.subplots(rows, columns, figsize=(7.5 * columns, 5.0 * rows), squeeze=False)
    for ax, (label, chosen) in zip(axes.flat, cells.items()):
        plots.plot_gain_heatmap(chosen, ax, limit=limit,
                                title=f"{label} vs {summary['baseline']}: relative Recall@{int(chosen['k'].iloc[0])} gain")
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    return figure
