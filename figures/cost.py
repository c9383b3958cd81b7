"""The price of MoS: training and evaluation events per second per model."""

from __future__ import annotations

from analysis import plots

from . import results

NAME = "cost"


def make(results_dir):
    summary = results.compare_summary(results_dir)
    models = sorted(summary["models"], key=lambda m: (m["head"] != "softmax", m["n_experts"], m["hidden_dim"]))
    figure, axes = plots.subplots(1, 2, figsize=(12, 0.32 * len(models) + 1.6))
    plots.plot_cost(models, axes[0], key="train_events_per_second", title="training (events/s)",
                    baseline=summary["baseline"])
    plots.plot_cost(models, axes[1], key="eval_events_per_second", title="evaluation against all items (events/s)",
                    baseline=summary["baseline"])
    return figure
