"""Singular-value spectra of the log-prob matrix: softmax heads (left) and MoS heads (right) over
hidden sizes, the truth's on the synthetic world, each softmax cap marked."""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis import plots

from . import results

NAME = "spectra"


def make(results_dir):
    report = results.rank(results_dir)
    table = results.spectra(results_dir)
    table = table[~table["centred"]]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharey=True)
    for ax, head, title in ((axes[0], "softmax", "softmax heads"), (axes[1], "mos", "MoS heads")):
        models = sorted((m for m in report["models"] if m["head"] == head),
                        key=lambda m: (m["n_experts"] != report_experts(report), m["hidden_dim"], m["n_experts"]))
        models = [m for m in models if head == "softmax" or m["n_experts"] == report_experts(report)]
        lines = [(m["label"], table.loc[table["matrix"] == m["label"], "singular_value"].to_numpy(), m["rank_cap"])
                 for m in models]
        if report["truth"]:
            lines.append(("truth", table.loc[table["matrix"] == "truth", "singular_value"].to_numpy(), None))
        plots.plot_spectra(lines, ax)
        ax.set_title(f"{title} ({report['n_contexts']:,} contexts × {report['n_items']:,} items)", fontsize=9)
        ax.set_ylim(bottom=1e-17)
    return figure


def report_experts(report) -> int | None:
    """K of the MoS size sweep: the K shared by the most MoS models."""
    counts = {}
    for m in report["models"]:
        if m["head"] == "mos":
            counts[m["n_experts"]] = counts.get(m["n_experts"], 0) + 1
    return max(counts, key=counts.get) if counts else None
