"""Rank of the log-prob matrix as the number of held-out contexts N grows."""

from __future__ import annotations

from analysis import plots

from . import results

NAME = "rank_vs_contexts"


def make(results_dir):
    matrices = results.size_sweep_matrices(results_dir)
    ax = plots.plot_rank_vs_contexts(matrices)
    ax.figure.set_size_inches(7.5, 4.6)
    return ax.figure
