"""How much the rank depends on the threshold: rank at relative thresholds 1e-1 … 1e-14."""

from __future__ import annotations

from analysis import plots

from . import results
from .spectra import report_experts

NAME = "rank_vs_threshold"


def make(results_dir):
    report = results.rank(results_dir)
    experts = report_experts(report)
    matrices = [m for m in report["models"] if m["head"] == "softmax" or m["n_experts"] == experts]
    if report["truth"]:
        matrices.append(report["truth"])
    ax = plots.plot_rank_vs_threshold(matrices)
    ax.figure.set_size_inches(7.5, 4.6)
    return ax.figure
