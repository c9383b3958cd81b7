"""Rank of the log-prob matrix as the number of held-out contexts N grows: one panel per head."""

from __future__ import annotations

from analysis import plots

from . import results


def size_sweep_panels(results_dir, plot, title: str):
    """Small multiples of `plot` (an analysis.plots function): one panel per head variant of the size sweep,
    its sizes as the lines (darker for larger d) and the truth's, dashed, in every panel, on shared axes."""
    matrices = results.size_sweep_matrices(results_dir)
    truth = [m for m in matrices if m["label"] == "truth"]
    families = plots.size_sweep_families(matrices, results.size_sweep_experts(results_dir))
    figure, axes = plots.subplots(1, len(families), figsize=(3.2 * len(families), 3.9), sharex=True, sharey=True,
                                  squeeze=False)
    for ax, (_, label, rows) in zip(axes[0], families):
        plot(rows + truth, ax, title=label, legend="inside", short_labels=True)
        if ax is not axes[0][0]:
            ax.set_ylabel("")
    figure.suptitle(title)
    return figure


def make(results_dir):
    return size_sweep_panels(results_dir, plots.plot_rank_vs_contexts, "Rank vs number of held-out contexts")
