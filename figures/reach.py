"""Items a head can never recommend: certified top-1 unreachability and empirical top-20 coverage."""

from __future__ import annotations

from analysis import plots

from . import results


def make(results_dir):
    summary = results.reach(results_dir)
    experts = results.size_sweep_experts(results_dir)
    figure, axes = plots.subplots(1, 2, figsize=(12, 4.4))
    plots.plot_unreachable_vs_dim(summary["models"], axes[0], experts=experts, n_items=summary["n_items"])
    items = results.reach_items(results_dir)
    dims = [m["hidden_dim"] for m in summary["models"] if m["head"] == "softmax"]
    smallest = results.model_with(summary["models"], "reach/reach.json", head="softmax", hidden_dim=min(dims, default=None))
    plots.plot_reach(items[items["model"] == smallest["label"]], axes[1], k=20, n_contexts=summary["n_contexts"],
                     title=f"{smallest['label']}: {smallest.get('unreachable', 0)} of {summary['n_items']} items "
                           "unreachable at top-1")
    return figure
