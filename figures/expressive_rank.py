"""How many dimensions each model's predictions use: KL to, and top-20 overlap with, the best-found rank-r softmax,
one column per head (the size sweep's seed-0 models; a softmax's cap d+2 dotted)."""

from __future__ import annotations

from analysis import plots

from . import results


def make(results_dir):
    matrices = [m for m in results.size_sweep_matrices(results_dir) if m.get("expressive")]
    families = plots.size_sweep_families(matrices, results.size_sweep_experts(results_dir))
    figure, axes = plots.subplots(2, len(families), figsize=(3.2 * len(families), 6.6), sharex=True, sharey="row",
                                  squeeze=False)
    for column, (_, label, rows) in enumerate(families):
        settings = rows[0]["expressive"]
        plots.plot_expressive_kl(rows, axes[0][column], title=label, eps=settings["eps"])
        plots.plot_expressive_overlap(rows, axes[1][column], bar=settings["min_overlap"])
        if column:
            axes[0][column].set_ylabel("")
            axes[1][column].set_ylabel("")
    figure.suptitle("The rank that matters: how close a rank-r softmax comes to each model (KL an upper bound)")
    return figure
