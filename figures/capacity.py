"""What the head cannot express vs what training did not learn: the best-fit head's KL to the truth
(the capacity gap) and the trained models' (the residual gap above it), against d and against K.
Drawn on the synthetic world only: the fit needs a known truth."""

from __future__ import annotations

from analysis import plots

from . import results


def available(results_dir) -> bool:
    return results.has_capacity(results_dir)


def make(results_dir):
    rows = results.capacity_sweep(results_dir)
    settings = results.study(results_dir)["settings"]
    figure, axes = plots.subplots(1, 2, figsize=(11, 4.9))
    plots.plot_capacity_sweep(rows, axes[0], x="hidden_dim", experts=settings["experts"])
    plots.plot_capacity_sweep(rows, axes[1], x="n_experts", hidden_dim=settings["expert_dim"])
    return figure
