"""The price of MoS: training and evaluation events per second per model."""

from __future__ import annotations

from analysis import plots

from . import results


def sweep_order(models: list[dict], experts: int) -> list[dict]:
    """Softmax by d; then the MoS size sweep (its K) by d; then the rest of the expert sweep by K."""
    def key(m):
        if m["head"] == "softmax":
            return (0, m["hidden_dim"], 0)
        in_size_sweep = m["n_experts"] == experts
        return (1, m["hidden_dim"], 0) if in_size_sweep else (2, m["n_experts"], m["hidden_dim"])

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
