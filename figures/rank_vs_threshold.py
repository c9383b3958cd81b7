"""How much the rank depends on the threshold: rank at relative thresholds 1e-1 … 1e-14."""

from __future__ import annotations

from analysis import plots

from .rank_vs_contexts import size_sweep_panel


def make(results_dir):
    return size_sweep_panel(results_dir, plots.plot_rank_vs_threshold)
