"""How much the rank depends on the threshold: rank at relative thresholds 1e-1 … 1e-14, one panel per head."""

from __future__ import annotations

from analysis import plots

from .rank_vs_contexts import size_sweep_panels


def make(results_dir):
    return size_sweep_panels(results_dir, plots.plot_rank_vs_threshold,
                             "Rank vs threshold σ / σ_max (dots: the default threshold, σ_max·max(N, M)·eps)")
