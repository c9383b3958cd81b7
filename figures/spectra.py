"""Singular-value spectra of the log-prob matrix: one panel per head variant of the size sweep
(softmax, MoS, …) over hidden sizes, the truth's on the synthetic world in each, every softmax cap marked."""

from __future__ import annotations

import math

from analysis import plots

from . import results

COLUMNS = 3  # panels per row


def make(results_dir):
    report = results.rank(results_dir)
    table = results.spectra(results_dir)
    table = table[~table["centred"]]
    families = plots.size_sweep_families(results.size_sweep_matrices(results_dir),
                                         results.size_sweep_experts(results_dir))
    columns = min(COLUMNS, len(families))
    rows = math.ceil(len(families) / columns)
    figure, axes = plots.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), sharey=True, squeeze=False)
    for ax, (_, label, models) in zip(axes.flat, families):
        lines = [(m["label"], table.loc[table["matrix"] == m["label"], "singular_value"].to_numpy(), m["rank_cap"])
                 for m in models]
        if report["truth"]:
            lines.append(("truth", table.loc[table["matrix"] == "truth", "singular_value"].to_numpy(), None))
        plots.plot_spectra(lines, ax)
        ax.set_title(f"{label} heads ({report['n_contexts']:,} contexts × {report['n_items']:,} items)", fontsize=9)
        ax.set_ylim(bottom=1e-17)
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    return figure
