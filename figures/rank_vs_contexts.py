"""Rank of the log-prob matrix as the number of held-out contexts N grows."""

from __future__ import annotations

from analysis import plots

from . import results


def size_sweep_panel(results_dir, plot):
    """One 6.5 × 4.6 in panel of `plot` (an analysis.plots function) over the size sweep's rank reports,
    its legend beside it (2.3 in per column of 14 lines)."""
    matrices = results.size_sweep_matrices(results_dir)
    ax = plot(matrices)
    ax.figure.set_size_inches(6.5 + 2.3 * (1 + len(matrices) // 14), 4.6)
    return ax.figure


def make(results_dir):
    return size_sweep_panel(results_dir, plots.plot_rank_vs_contexts)
