"""How much the rank depends on the threshold: rank at relative thresholds 1e-1 … 1e-14."""

from __future__ import annotations

from analysis import plots

from . import results

NAME = "rank_vs_threshold"


def make(results_dir):
    matrices = results.size_sweep_matrices(results_dir)
    ax = plots.plot_rank_vs_threshold(matrices)
    ax.figure.set_size_inches(7.5, 4.6)
    return ax.figure
