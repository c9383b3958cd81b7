"""Where MoS gains over softmax: relative Recall@20 gain by target support × context diversity."""

from __future__ import annotations

from analysis import plots

from . import results


def make(results_dir):
    study = results.study(results_dir)
    d, k = study["settings"]["expert_dim"], study["settings"]["experts"]
    summary = results.compare_summary(results_dir)
    mos = results.model_with(summary["models"], "compare/compare.json", head="mos", hidden_dim=d, n_experts=k)["label"]
    grid = results.breakdown(results_dir)
    grid = grid[(grid["breakdown"] == "support×diversity") & (grid["metric"] == "recall")]
    cells = grid[grid["model"] == mos].astype({"support_index": int, "diversity_index": int, "n_events": int})
    title = f"{mos} vs {summary['baseline']}: relative Recall@{int(cells['k'].iloc[0])} gain"
    ax = plots.plot_gain_heatmap(cells, title=title)
    ax.figure.set_size_inches(7.5, 5.0)
    return ax.figure
