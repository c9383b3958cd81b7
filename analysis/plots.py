"""Axes-level plots: data and ``ax=None`` in, the ``Axes`` out (figures compose them).

Files are saved by :func:`save` with fixed metadata, so the same data gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIXED_METADATA = {".png": {"Software": None}, ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
                  ".svg": {"Date": None, "Creator": None}}


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    return ax


def plot_spectra(spectra, ax=None, *, normalise: bool = True):
    """Singular values on a log scale, one line per matrix; dotted verticals at each rank cap.

    spectra: iterable of (label, singular values descending, cap or None).
    """
    ax = _axes(ax)
    for index, (label, values, cap) in enumerate(spectra):
        values = np.asarray(values, dtype=np.float64)
        shown = values / values[0] if normalise and len(values) and values[0] > 0 else values
        positive = shown > 0
        (line,) = ax.plot(np.arange(1, len(shown) + 1)[positive], shown[positive], label=label, lw=1.6,
                          color="black" if label == "truth" else f"C{index}",
                          ls="--" if label == "truth" else "-")
        if cap is not None:
            ax.axvline(cap, color=line.get_color(), ls=":", lw=1.2)
            ax.annotate(f"cap {cap}", (cap, 1.0), textcoords="offset points", xytext=(3, -12), fontsize=8,
                        color=line.get_color())
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("σᵢ / σ₁" if normalise else "σᵢ")
    ax.set_title("Singular values of the log-probability matrix")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def save(figure, path: str | Path) -> Path:
    """Write with fixed metadata (reproducible bytes) and close the figure."""
    path = Path(path)
    suffix = path.suffix.lower()
    figure.savefig(path, dpi=150, metadata=FIXED_METADATA.get(suffix), format=suffix.lstrip(".") or "png")
    plt.close(figure)
    return path


def plot_metric_bars(table, ax=None):
    """Grouped bars: one group per metric@k, one bar per model, 95 % interval as error bars.

    table: rows with model, metric, k, value, ci_low, ci_high (a tidy metrics.csv slice).
    """
    ax = _axes(ax)
    names = list(dict.fromkeys(f"{m}@{k}" for m, k in zip(table["metric"], table["k"])))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(len(models), 1)
    for index, model in enumerate(models):
        part = table[table["model"] == model]
        lookup = {f"{m}@{k}": (v, lo, hi) for m, k, v, lo, hi in
                  zip(part["metric"], part["k"], part["value"], part["ci_low"], part["ci_high"])}
        values = np.array([lookup.get(n, (np.nan,) * 3) for n in names], dtype=float)
        x = np.arange(len(names)) + (index - (len(models) - 1) / 2) * width
        color = "0.35" if model == "oracle" else f"C{index}"
        ax.bar(x, values[:, 0], width, label=model, color=color, alpha=0.85,
               yerr=np.abs(np.stack([values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]])), capsize=3)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("value (95 % CI over sessions)")
    ax.set_title("Recommendation quality per head")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_gain_heatmap(cells, ax=None, *, min_events: int = 30, title: str = ""):
    """Relative gain per (support bin, diversity bin); cells with fewer than `min_events` greyed out.

    cells: rows with support_index, support_bin, diversity_index, diversity_bin, n_events, relative_gain.
    """
    ax = _axes(ax)
    n_support, n_diversity = int(cells["support_index"].max()) + 1, int(cells["diversity_index"].max()) + 1
    gain, counts = np.full((n_support, n_diversity), np.nan), np.zeros((n_support, n_diversity), dtype=int)
    for row in cells.itertuples():
        counts[row.support_index, row.diversity_index] = row.n_events
        if row.n_events >= min_events and row.relative_gain is not None and np.isfinite(row.relative_gain):
            gain[row.support_index, row.diversity_index] = row.relative_gain
    limit = np.nanmax(np.abs(gain)) if np.isfinite(gain).any() else 1.0
    ax.set_facecolor("0.85")  # greyed: too few events
    image = ax.imshow(np.ma.masked_invalid(gain), cmap="RdBu", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
    for i in range(n_support):
        for j in range(n_diversity):
            text = f"{gain[i, j]:+.1%}\nn={counts[i, j]}" if np.isfinite(gain[i, j]) else f"n={counts[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    support_labels = cells.drop_duplicates("support_index").sort_values("support_index")["support_bin"]
    diversity_labels = cells.drop_duplicates("diversity_index").sort_values("diversity_index")["diversity_bin"]
    ax.set_yticks(range(n_support), list(support_labels), fontsize=7)
    ax.set_xticks(range(n_diversity), list(diversity_labels), fontsize=7, rotation=20)
    ax.set_ylabel("target item's training support (quantile bins)")
    ax.set_xlabel("context diversity 1 − cos(previous, target) (quantile bins)")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, label="relative gain vs baseline")
    return ax


REACH_STYLE = {"reachable": ("0.55", "o", 6), "undecided": ("C0", "s", 10), "unreachable": ("C3", "x", 22)}


def plot_reach(items, ax=None, *, k: int, n_contexts: int, title: str = ""):
    """One head's items: training support (x) against the share of held-out contexts that put the
    item in their top k (y); items in no context's top k sit on the floor line; colour and marker
    give the top-1 verdict (grey reachable, blue undecided, red × certified unreachable).

    items: rows of reach.csv for one model (support, status, hits@k).
    """
    ax = _axes(ax)
    share = items[f"hits@{k}"].to_numpy() / max(n_contexts, 1)
    floor = 0.5 / max(n_contexts, 1)
    shown = np.where(share > 0, share, floor)
    for status, (color, marker, size) in REACH_STYLE.items():
        part = (items["status"] == status).to_numpy()
        if part.any():
            ax.scatter(items["support"].to_numpy()[part], shown[part], s=size, c=color, marker=marker,
                       linewidths=1.0, label=f"{status} at top-1 ({part.sum()})", alpha=0.8)
    ax.axhline(floor, color="0.3", lw=0.8, ls=":")
    ax.annotate(f"in no context's top {k}", (0.01, floor), xycoords=("axes fraction", "data"), xytext=(0, 3),
                textcoords="offset points", fontsize=7, color="0.3")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training support (events)")
    ax.set_ylabel(f"share of contexts with the item in the top {k}")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return ax


def reach_figure(table, *, k: int, n_contexts: int):
    """One panel per model of a reach.csv table (see :func:`plot_reach`)."""
    models = list(dict.fromkeys(table["model"]))
    figure, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), layout="constrained",
                                sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        items = table[table["model"] == model]
        never = int((items[f"hits@{k}"] == 0).sum())
        plot_reach(items, ax, k=k, n_contexts=n_contexts,
                   title=f"{model}: {int((items['status'] == 'unreachable').sum())} of {len(items)} items unreachable "
                         f"at top-1,\n{never} in no context's top {k}")
    return figure
