"""Singular-value spectra of the log-prob matrix: softmax heads (left) and MoS heads (right) over
hidden sizes, the truth's on the synthetic world, each softmax cap marked."""

from __future__ import annotations

from analysis import plots

from . import results


def make(results_dir):
    report = results.rank(results_dir)
    table = results.spectra(results_dir)
    table = table[~table["centred"]]
    figure, axes = plots.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    sweep = [m for m in results.size_sweep_matrices(results_dir) if m["label"] != "truth"]
    for ax, head, title in ((axes[0], "softmax", "softmax heads"), (axes[1], "mos", "MoS heads")):
        models = sorted((m for m in sweep if m["head"] == head), key=lambda m: m["hidden_dim"])
        lines = [(m["label"], table.loc[table["matrix"] == m["label"], "singular_value"].to_numpy(), m["rank_cap"])
                 for m in models]
        if report["truth"]:
            lines.append(("truth", table.loc[table["matrix"] == "truth", "singular_value"].to_numpy(), None))
        plots.plot_spectra(lines, ax)
        ax.set_title(f"{title} ({report['n_contexts']:,} contexts × {report['n_items']:,} items)", fontsize=9)
        ax.set_ylim(bottom=1e-17)
    return figure

