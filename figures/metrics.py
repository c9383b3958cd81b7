"""Recall@20, MRR@20 and NDCG@20 per head and hidden size, with 95 % intervals, and the oracle."""

from __future__ import annotations

from analysis import plots

from . import results


def make(results_dir):
    table = results.metrics(results_dir)
    experts = results.size_sweep_experts(results_dir)
    figure, axes = plots.subplots(1, 3, figsize=(14, 4.2))
    for ax, metric in zip(axes, ("recall", "mrr", "ndcg")):
        plots.plot_metric_vs_dim(table, ax, metric=metric, k=20, experts=experts)
    return figure
