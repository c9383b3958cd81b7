"""Recall@20, MRR@20 and NDCG@20 per head and hidden size, with 95 % intervals, and the oracle."""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis import plots

from . import results

NAME = "metrics"


def make(results_dir):
    table = results.metrics(results_dir)
    experts = results.size_sweep_experts(results.rank(results_dir))
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for ax, metric in zip(axes, ("recall", "mrr", "ndcg")):
        plots.plot_metric_vs_dim(table, ax, metric=metric, k=20, experts=experts)
    return figure
