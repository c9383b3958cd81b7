"""The price of each head: training and evaluation events per second per model."""

from __future__ import annotations

from analysis import plots

from . import results


def sweep_order(models: list[dict], experts: int) -> list[dict]:
    """Each head variant's size sweep by d (softmax first, MoS with the sweep's K); then the rest of the
    expert sweep by K."""
    order = {name: i for i, (name, _, _) in enumerate(plots.size_sweep_families(models, experts))}

    def key(m):
        name = plots.variant(m)
        if m["head"] == "mos" and m["n_experts"] != experts:
            return (len(order), m["n_experts"], m["hidden_dim"])
        return (order[name], m["hidden_dim"], 0)

    return sorted(models, key=key)


def make(results_dir):
    summary = results.compare_summary(results_dir)
    models = sweep_order(summary["models"], results.size_sweep_experts(results_dir))
    figure, axes = plots.subplots(1, 2, figsize=(12, 0.32 * len(models) + 1.6))
    plots.plot_cost(models, axes[0], key="train_events_per_second", title="training (events/s)",
                    baseline=summary["baseline"])
    plots.plot_cost(models, axes[1], key="eval_events_per_second", title="evaluation against all items (events/s)",
                    baseline=summary["baseline"])
    return figure
