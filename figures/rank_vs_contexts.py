"""Rank of the log-prob matrix as the number of held-out contexts N grows."""

from __future__ import annotations

from analysis import plots

from . import results


def size_sweep_panel(results_dir, plot):
    """One 7.5 × 4.6 in panel of `plot` (an analysis.plots function) over the size sweep's rank reports."""
    ax = plot(results.size_sweep_matrices(results_dir))
    ax.figure.set_size_inches(7.5, 4.6)
    return ax.figure


def make(results_dir):
    return size_sweep_panel(results_dir, plots.plot_rank_vs_contexts)
