"""Numerical rank against hidden size d (softmax at d+2, MoS not) and against the number of experts K."""

from __future__ import annotations

from analysis import plots

from . import results


def make(results_dir):
    report = results.rank(results_dir)
    study = results.study(results_dir)
    truth = report["truth"]["rank"] if report["truth"] else None
    ceiling = min(report["n_contexts"], report["n_items"])
    figure, axes = plots.subplots(1, 2, figsize=(11, 4.2))
    plots.plot_rank_vs_dim(report["models"], axes[0], experts=results.size_sweep_experts(results_dir),
                           truth_rank=truth, ceiling=ceiling)
    plots.plot_rank_vs_experts(report["models"], axes[1], hidden_dim=study["settings"]["expert_dim"],
                               truth_rank=truth, ceiling=ceiling)
    return figure
