"""Each head's Recall@20 and MRR@20 gain over the softmax of the same hidden size d, with paired 95 % intervals.
Only for a study whose size sweep has another head than softmax (gains/gains.csv)."""

from __future__ import annotations

from analysis import plots

from . import results


def available(results_dir) -> bool:
    return results.has_gains(results_dir)


def make(results_dir):
    table = results.gains(results_dir)
    experts = results.size_sweep_experts(results_dir)
    figure, axes = plots.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("recall", "mrr")):
        plots.plot_gain_vs_dim(table, ax, metric=metric, k=20, experts=experts)
        ax.title.set_fontsize(10)  # the two titles side by side fit the figure's width
    return figure
