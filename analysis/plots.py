"""Axes-level plots: data and ``ax=None`` in, the ``Axes`` out (figures compose them).

Figures are ``matplotlib.figure.Figure`` objects made by :func:`subplots`, never through pyplot:
importing this module changes no global backend or state, and nothing needs closing. Files are
saved by :func:`save` with fixed metadata, so the same data gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

FIXED_METADATA = {".png": {"Software": None}, ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
                  ".svg": {"Date": None, "Creator": None}}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=(6.4, 4.2), **kwargs):
    """(figure, axes) as ``pyplot.subplots`` gives them, with a constrained layout, outside pyplot."""
    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.subplots(nrows, ncols, **kwargs)


def axes_or_new(ax):
    """`ax`, or the axes of a new 6.4 × 4.2 in figure."""
    if ax is None:
        _, ax = subplots()
    return ax


def finish(ax, xlabel: str, ylabel: str, title: str, *, legend_size: int = 8, title_size=None, **legend) -> None:
    """Labels, title, a light major grid and the legend: the common ending of the plots below."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=legend_size, **legend)


LINE_STYLES = ("-", "--", "-.", ":")
HATCHES = ("", "//", "..", "xx")
TRUTH_STYLE = {"color": "black", "ls": (0, (6, 2))}  # no model style is black


def model_styles(n: int) -> list[dict]:
    """n distinct line styles: the 10 colours of the cycle, then again with the next dash pattern
    (distinct up to 40 models)."""
    return [{"color": f"C{i % 10}", "ls": LINE_STYLES[(i // 10) % len(LINE_STYLES)]} for i in range(n)]


def bar_styles(n: int) -> list[dict]:
    """n distinct bar styles: the 10 colours of the cycle, then again with the next hatch."""
    return [{"color": f"C{i % 10}", "hatch": HATCHES[(i // 10) % len(HATCHES)]} for i in range(n)]


def plot_spectra(spectra, ax=None, *, normalise: bool = True):
    """Singular values on a log scale, one line per matrix (no two share a style); dotted verticals
    at each rank cap, their labels stacked down the top of the axes so that close caps stay readable.

    spectra: iterable of (label, singular values descending, cap or None).
    """
    ax = axes_or_new(ax)
    spectra = list(spectra)
    styles = iter(model_styles(sum(label != "truth" for label, _, _ in spectra)))
    caps = 0
    for label, values, cap in spectra:
        values = np.asarray(values, dtype=np.float64)
        shown = values / values[0] if normalise and len(values) and values[0] > 0 else values
        positive = shown > 0
        style = TRUTH_STYLE if label == "truth" else next(styles)
        (line,) = ax.plot(np.arange(1, len(shown) + 1)[positive], shown[positive], label=label, lw=1.6, **style)
        if cap is not None:
            ax.axvline(cap, color=line.get_color(), ls=":", lw=1.2)
            ax.annotate(f"cap {cap}", (cap, 1.0), xycoords=("data", "axes fraction"), textcoords="offset points",
                        xytext=(3, -12 - 10 * caps), fontsize=7, color=line.get_color(),
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5})
            caps += 1
    ax.set_yscale("log")
    ax.set_xscale("log")
    finish(ax, "index i", "σᵢ / σ₁" if normalise else "σᵢ", "Singular values of the log-probability matrix",
           legend_size=7, ncol=2 if len(spectra) > 8 else 1)
    return ax


def save(figure, path: str | Path, fmt: str | None = None) -> Path:
    """Write with fixed metadata (reproducible bytes) at 150 dpi; `fmt` defaults to the suffix (else PNG)."""
    path = Path(path)
    fmt = fmt or path.suffix.lower().lstrip(".") or "png"
    figure.savefig(path, dpi=150, metadata=FIXED_METADATA.get(f".{fmt}"), format=fmt)
    return path


def plot_metric_bars(table, ax=None):
    """Grouped bars: one group per metric@k, one bar per model, 95 % interval as error bars.

    table: rows with model, metric, k, value, ci_low, ci_high (a tidy metrics.csv slice).
    """
    ax = axes_or_new(ax)
    names = list(dict.fromkeys(f"{m}@{k}" for m, k in zip(table["metric"], table["k"])))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(len(models), 1)
    styles = iter(bar_styles(sum(m != "oracle" for m in models)))
    for index, model in enumerate(models):
        part = table[table["model"] == model]
        lookup = {f"{m}@{k}": (v, lo, hi) for m, k, v, lo, hi in
                  zip(part["metric"], part["k"], part["value"], part["ci_low"], part["ci_high"])}
        values = np.array([lookup.get(n, (np.nan,) * 3) for n in names], dtype=float)
        x = np.arange(len(names)) + (index - (len(models) - 1) / 2) * width
        style = {"color": "0.35", "hatch": ""} if model == "oracle" else next(styles)
        ax.bar(x, values[:, 0], width, label=model, alpha=0.85, edgecolor="white", linewidth=0.3,
               yerr=np.abs(np.stack([values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]])), capsize=3, **style)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("value (95 % CI over sessions)")
    ax.set_title("Recommendation quality per head")
    ax.grid(True, axis="y", alpha=0.3)
    # beside the bars, never over them; the figure widens to make room
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(models) // 16)
    return ax


def metric_bars_figure(table):
    """:func:`plot_metric_bars` on a figure wide enough for its bars and the legend beside them."""
    n_bars = table["model"].nunique() * len(table.drop_duplicates(["metric", "k"]))
    figure, ax = subplots(figsize=(max(6.4, 4.0 + 0.12 * n_bars), 4.2))
    plot_metric_bars(table, ax)
    return figure


def gain_limit(cells, min_events: int = 30, quantile: float = 0.9) -> float:
    """The colour scale's half-width ±limit of the heatmaps: the `quantile` of |relative gain| over the cells
    with enough events (give every heatmap of one comparison the same, so colours compare). Not the largest:
    a few +200 % cells of rare items would wash every other cell out; cells beyond it saturate, and their
    printed value stays exact."""
    shown = cells[(cells["n_events"] >= min_events)]["relative_gain"].astype(float).abs()
    shown = shown[np.isfinite(shown)]
    return float(np.quantile(shown, quantile)) if len(shown) and shown.max() > 0 else 1.0


def plot_gain_heatmap(cells, ax=None, *, min_events: int = 30, title: str = "", limit: float | None = None):
    """Relative gain per (support bin, diversity bin); cells with fewer than `min_events` greyed out.

    cells: rows with support_index, support_bin, diversity_index, diversity_bin, n_events, relative_gain.
    limit: the colour scale is ±limit (default: this heatmap's own :func:`gain_limit`).
    """
    ax = axes_or_new(ax)
    n_support, n_diversity = int(cells["support_index"].max()) + 1, int(cells["diversity_index"].max()) + 1
    gain, counts = np.full((n_support, n_diversity), np.nan), np.zeros((n_support, n_diversity), dtype=int)
    for row in cells.itertuples():
        counts[row.support_index, row.diversity_index] = row.n_events
        if row.n_events >= min_events and row.relative_gain is not None and np.isfinite(row.relative_gain):
            gain[row.support_index, row.diversity_index] = row.relative_gain
    limit = gain_limit(cells, min_events) if limit is None else limit
    ax.set_facecolor("0.85")  # greyed: too few events
    image = ax.imshow(np.ma.masked_invalid(gain), cmap="RdBu", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
    for i in range(n_support):
        for j in range(n_diversity):
            text = f"{gain[i, j]:+.1%}\nn={counts[i, j]}" if np.isfinite(gain[i, j]) else f"n={counts[i, j]}"
            dark = np.isfinite(gain[i, j]) and abs(gain[i, j]) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    support_labels = cells.drop_duplicates("support_index").sort_values("support_index")["support_bin"]
    diversity_labels = cells.drop_duplicates("diversity_index").sort_values("diversity_index")["diversity_bin"]
    ax.set_yticks(range(n_support), list(support_labels), fontsize=7)
    ax.set_xticks(range(n_diversity), list(diversity_labels), fontsize=7, rotation=20)
    ax.set_ylabel("target item's training support (quantile bins)")
    ax.set_xlabel("context diversity 1 − cos(previous, target) (quantile bins)")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, label="relative gain vs baseline", extend="both",
                       format=matplotlib.ticker.PercentFormatter(xmax=1.0, decimals=0))  # in %, as the cells
    return ax


REACH_STYLE = {"reachable": ("0.55", "o", 6), "undecided": ("C0", "s", 10), "unreachable": ("C3", "x", 22)}


def plot_reach(items, ax=None, *, k: int, n_contexts: int, title: str = ""):
    """One head's items: training support (x) against the share of held-out contexts that put the
    item in their top k (y); items in no context's top k sit on the floor line; colour and marker
    give the top-1 verdict (grey reachable, blue undecided, red × certified unreachable).

    items: rows of reach.csv for one model (support, status, hits@k).
    """
    ax = axes_or_new(ax)
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
    finish(ax, "training support (events)", f"share of contexts with the item in the top {k}", title,
            legend_size=7, title_size=9, loc="upper left")
    return ax


REACH_COLUMNS = 4  # panels per row of the reach figure


def reach_figure(table, *, k: int, n_contexts: int):
    """One panel per model of a reach.csv table (see :func:`plot_reach`), at most REACH_COLUMNS a row."""
    models = list(dict.fromkeys(table["model"]))
    columns = min(REACH_COLUMNS, len(models))
    rows = -(-len(models) // columns)
    figure, axes = subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes.flat, models):
        items = table[table["model"] == model]
        never = int((items[f"hits@{k}"] == 0).sum())
        plot_reach(items, ax, k=k, n_contexts=n_contexts,
                   title=f"{model}: {int((items['status'] == 'unreachable').sum())} of {len(items)} items unreachable "
                         f"at top-1,\n{never} in no context's top {k}")
    return figure


# ------------------------------------------------------------------------------ study-level plots
# Inputs are rows of rank.json's "models" (head, hidden_dim, n_experts, rank, rank_cap, sweep,
# rank_vs_n, label) and tidy tables of analysis.comparison / analysis.reachability.

# Each head variant (softmax_bottleneck.config.VARIANTS) has one colour, marker and colormap in every plot.
HEAD_STYLES = {"softmax": ("C0", "o", "Blues"), "mos": ("C1", "s", "Oranges"), "sigsoftmax": ("C2", "^", "Greens"),
               "mol": ("C3", "D", "Reds"), "softmax-dd": ("C4", "v", "Purples")}
HEAD_NAMES = {"mos": "MoS", "mol": "MoL"}
OTHER_STYLE = ("0.3", "P", "Greys")  # a variant without its own style


def variant(row) -> str:
    """A results row's head variant ("softmax-dd", …); rows written before variants existed have only a head."""
    return row.get("variant") or row["head"]


def _head_style(name: str) -> dict:
    color, marker, _ = HEAD_STYLES.get(name, OTHER_STYLE)
    return {"color": color, "marker": marker}


def _variant_order(names) -> list[str]:
    """The distinct variants of `names` in HEAD_STYLES order, then any others by name."""
    names = set(names)
    return [v for v in HEAD_STYLES if v in names] + sorted(names - set(HEAD_STYLES))


def size_sweep_families(models, experts: int | None) -> list[tuple[str, str, list]]:
    """(variant, label, rows sorted by d) for each head variant of a size sweep; MoS rows are those with
    `experts` experts (all when None), labelled "MoS K=…". `models`: rows of rank.json, reach.json,
    compare.json or capacity_sweep.csv."""
    models = [m for m in models if m.get("head") not in (None, "truth")]
    families = []
    for name in _variant_order(variant(m) for m in models):
        rows = sorted((m for m in models if variant(m) == name and (m["head"] != "mos" or experts is None
                                                                    or m["n_experts"] == experts)),
                      key=lambda m: m["hidden_dim"])
        if rows:
            label = HEAD_NAMES.get(name, name)
            families.append((name, label + (f" K={int(rows[0]['n_experts'])}" if rows[0]["head"] == "mos" else ""), rows))
    return families


def _rank_references(ax, truth_rank: int | None, ceiling: int | None) -> None:
    """The truth's rank and min(N, items) as horizontals; log-2 x and log y axes."""
    if truth_rank is not None:
        ax.axhline(truth_rank, color="black", ls="--", lw=1, label=f"truth ({truth_rank})")
    if ceiling is not None:
        ax.axhline(ceiling, color="0.5", ls=":", lw=1, label=f"min(N, items) = {ceiling}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")


def plot_rank_vs_dim(models, ax=None, *, experts: int | None = None, truth_rank: int | None = None,
                     ceiling: int | None = None):
    """Numerical rank against hidden size d, one line per head variant (MoS: with `experts` experts):
    the softmax next to its cap d+2 (d+1 without bias); the truth's rank and min(N, items) as horizontals."""
    ax = axes_or_new(ax)
    families = size_sweep_families(models, experts)
    for i, (name, label, rows) in enumerate(families):
        if name == "softmax":  # a wide pale band under the lines: visible where softmax (and softmax-dd) sit on it
            ax.plot([m["hidden_dim"] for m in rows], [m["rank_cap"] for m in rows], color="C0", lw=7, alpha=0.2,
                    solid_capstyle="butt", zorder=1,
                    label="softmax cap d+2" if rows[0]["rank_cap"] == rows[0]["hidden_dim"] + 2 else "softmax cap")
        shift = 1.06 ** (i - (len(families) - 1) / 2)  # each variant a little apart, so equal ranks stay visible
        style = _head_style(name)
        ax.plot([m["hidden_dim"] * shift for m in rows], [m["rank"] for m in rows], label=label, lw=1.6, zorder=3,
                mfc="white" if i % 2 else style["color"], **style)
    _rank_references(ax, truth_rank, ceiling)
    finish(ax, "hidden size d", "numerical rank of the log-prob matrix", "Rank vs hidden size", legend_size=7)
    return ax


def plot_rank_vs_experts(models, ax=None, *, hidden_dim: int, truth_rank: int | None = None,
                         ceiling: int | None = None):
    """MoS rank against its number of experts K at one hidden size, with the softmax cap of that size."""
    ax = axes_or_new(ax)
    rows = sorted((m for m in models if m["head"] == "mos" and m["hidden_dim"] == hidden_dim),
                  key=lambda m: m["n_experts"])
    ax.plot([m["n_experts"] for m in rows], [m["rank"] for m in rows], label=f"MoS d={hidden_dim}", lw=1.8,
            **_head_style("mos"))
    softmax = [m for m in models if m["head"] == "softmax" and m["hidden_dim"] == hidden_dim]
    if softmax:
        ax.axhline(softmax[0]["rank_cap"], color="C0", ls="--", lw=1, label=f"softmax cap ({softmax[0]['rank_cap']})")
    _rank_references(ax, truth_rank, ceiling)
    ax.set_xticks([m["n_experts"] for m in rows], [str(m["n_experts"]) for m in rows])
    finish(ax, "experts K", "numerical rank", f"Rank vs experts (d = {hidden_dim})")
    return ax


def _matrix_colors(matrices) -> list:
    """Each variant's matrices in its colormap (softmax blues, MoS oranges, …), darker for larger d
    (then larger K); the truth black."""
    colors = []
    for m in matrices:
        if m["label"] == "truth" or not m.get("head"):
            colors.append("black")
            continue
        name = variant(m)
        same = sorted({(x["hidden_dim"], x["n_experts"]) for x in matrices if x.get("head") and variant(x) == name})
        shade = 0.35 + 0.6 * same.index((m["hidden_dim"], m["n_experts"])) / max(len(same) - 1, 1)
        colors.append(matplotlib.colormaps[HEAD_STYLES.get(name, OTHER_STYLE)[2]](shade))
    return colors


def _side_legend(matrices) -> dict:
    """finish()'s legend settings for one line per matrix: beside the axes, one column per 14 lines."""
    return {"legend_size": 7, "ncol": 1 + len(matrices) // 14, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}


def _legend_settings(matrices, legend: str) -> dict:
    return _side_legend(matrices) if legend == "side" else {"legend_size": 7, "loc": "best"}


def _line_label(m, short: bool) -> str:
    """A matrix's legend entry: its label, or in a panel of one head only its size ("d=8", "truth")."""
    if not short or m["label"] == "truth" or not m.get("hidden_dim"):
        return m["label"]
    return f"d={m['hidden_dim']}" + (f" K={m['n_experts']}" if m.get("head") == "mos" else "")


def plot_rank_vs_contexts(matrices, ax=None, *, title: str = "Rank vs number of contexts", legend: str = "side",
                          short_labels: bool = False):
    """Rank of the first N contexts' rows as N grows, one line per matrix; N itself as the diagonal.
    `legend`: "side" (beside the axes, for many lines) or "inside" (a panel of one head's sizes)."""
    ax = axes_or_new(ax)
    smallest, largest = np.inf, 1
    for m, color in zip(matrices, _matrix_colors(matrices)):
        ns, ranks = [r["n"] for r in m["rank_vs_n"]], [r["rank"] for r in m["rank_vs_n"]]
        smallest, largest = min(smallest, min(ns)), max(largest, max(ns))
        ax.plot(ns, ranks, label=_line_label(m, short_labels), lw=1.6, marker=".", color=color,
                ls="--" if m["label"] == "truth" else "-")
    ax.plot([smallest, largest], [smallest, largest], color="0.6", lw=0.8, ls=":", label="rank = N")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    finish(ax, "held-out contexts N", "numerical rank", title, **_legend_settings(matrices, legend))
    return ax


def plot_rank_vs_threshold(matrices, ax=None, *, title: str = "Rank vs threshold", legend: str = "side",
                           short_labels: bool = False):
    """Rank at relative thresholds σ/σ_max = 1e-1 … 1e-14, one line per matrix; each matrix's default
    threshold (σ_max·max(N, M)·eps) as a marker."""
    ax = axes_or_new(ax)
    for m, color in zip(matrices, _matrix_colors(matrices)):
        rtols = sorted((float(r) for r in m["sweep"]), reverse=True)
        ranks = [m["sweep"][f"{r:.0e}"] for r in rtols]
        (line,) = ax.plot(rtols, ranks, label=_line_label(m, short_labels), lw=1.4, color=color,
                          ls="--" if m["label"] == "truth" else "-")
        if m.get("sigma_max"):
            ax.plot([m["threshold"] / m["sigma_max"]], [m["rank"]], marker="o", color=line.get_color(), ms=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    finish(ax, "threshold σ / σ_max", "singular values above it", title,
           **_legend_settings(matrices, legend))
    return ax


def _errorbars_vs_dim(ax, families, value: str, low: str, high: str) -> None:
    """One errorbar line per head variant of `families` (size_sweep_families) against d: the rows' `value`
    with its interval [`low`, `high`], each variant's points a little apart, labelled with its seed count."""
    for i, (name, label, chosen) in enumerate(families):
        n_seeds = max(int(r["n_seeds"]) for r in chosen)
        x = np.array([r["hidden_dim"] for r in chosen], dtype=float) * 1.05 ** (i - (len(families) - 1) / 2)
        y = np.array([r[value] for r in chosen], dtype=float)
        err = np.abs(np.stack([y - np.array([r[low] for r in chosen], dtype=float),
                               np.array([r[high] for r in chosen], dtype=float) - y]))
        ax.errorbar(x, y, yerr=err, capsize=3, lw=1.6, label=f"{label} ({n_seeds} seed{'s' if n_seeds > 1 else ''})",
                    **_head_style(name))


def plot_metric_vs_dim(table, ax=None, *, metric: str, k: int, experts: int | None = None):
    """metric@k (mean over seeds) against hidden size per head variant (MoS: with `experts` experts), with
    95 % session-bootstrap intervals of the seed-averaged per-event values as error bars (each variant's
    points a little apart), and the oracle with its interval as a band.

    table: analysis.compare's metrics.csv."""
    ax = axes_or_new(ax)
    part = table[(table["metric"] == metric) & (table["k"] == k)]
    rows = part[part["model"] != "oracle"].to_dict("records")
    families = size_sweep_families(rows, experts)
    _errorbars_vs_dim(ax, families, "value", "ci_low", "ci_high")
    oracle = part[part["model"] == "oracle"]
    if not oracle.empty:
        o = oracle.iloc[0]
        ax.axhspan(o["ci_low"], o["ci_high"], color="0.8", alpha=0.6)
        ax.axhline(o["value"], color="black", ls="--", lw=1, label=f"oracle ({o['value']:.3f})")
    ax.set_xscale("log", base=2)
    finish(ax, "hidden size d", f"{metric.upper() if metric != 'recall' else 'Recall'}@{k}",
            f"{metric}@{k} (95 % CI over sessions)", legend_size=7)
    return ax


def plot_gain_vs_dim(gains, ax=None, *, metric: str, k: int, experts: int | None = None):
    """Each head's paired difference in metric@k to the softmax **of the same hidden size**, against d, with
    its 95 % interval (each variant's points a little apart) and zero as the line to beat.

    gains: analysis.comparison.gains_by_size's table (gains.csv)."""
    ax = axes_or_new(ax)
    part = gains[(gains["metric"] == metric) & (gains["k"] == k)]
    families = size_sweep_families(part.to_dict("records"), experts)
    ax.axhline(0.0, color="C0", lw=1.2, label="softmax of the same d")
    _errorbars_vs_dim(ax, families, "diff_vs_baseline", "diff_ci_low", "diff_ci_high")
    ax.set_xscale("log", base=2)
    name = "Recall" if metric == "recall" else metric.upper()
    finish(ax, "hidden size d", f"{name}@{k} − softmax's at the same d",
           f"{name}@{k} gain over softmax of the same size (paired 95 % CI)", legend_size=7)
    return ax


def plot_cost(summary_models, ax=None, *, key: str, title: str, baseline: str | None = None):
    """Horizontal bars of one speed (events/s) per model, with the ratio to the `baseline` model's
    (default: the first)."""
    ax = axes_or_new(ax)
    labels = [m["label"] for m in summary_models]
    values = np.array([m.get(key) or np.nan for m in summary_models], dtype=float)
    colors = [_head_style(variant(m))["color"] for m in summary_models]
    y = np.arange(len(labels))
    ax.barh(y, values, color=colors, alpha=0.85)
    base = values[labels.index(baseline)] if baseline in labels else values[0]
    for yi, v in zip(y, values):
        if np.isfinite(v):
            ax.annotate(f"{v:,.0f}  ({v / base:.2f}×)", (v, yi), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("events per second")
    ax.set_xlim(0, np.nanmax(values) * 1.35 if np.isfinite(values).any() else 1)
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return ax


def plot_unreachable_vs_dim(models, ax=None, *, experts: int | None = None, n_items: int | None = None):
    """Items certified unreachable at top-1 (filled; heads with a certificate only) and in no held-out
    context's top 20 (hollow) against hidden size, per head variant; reach.json's "models"."""
    ax = axes_or_new(ax)
    for name, label, rows in size_sweep_families(models, experts):
        style = _head_style(name)
        dims = [m["hidden_dim"] for m in rows]
        if all(m.get("certificate", True) for m in rows):
            ax.plot(dims, [m.get("unreachable", 0) for m in rows], lw=1.8, label=f"{label}: unreachable at top-1",
                    **style)
        ax.plot(dims, [round((1 - m["coverage"]["20"]) * m["n_items"]) for m in rows], lw=1, ls="--",
                color=style["color"], marker=style["marker"], mfc="none", label=f"{label}: in no context's top 20")
    if n_items:
        ax.axhline(n_items, color="0.5", ls=":", lw=1, label=f"catalogue ({n_items})")
    ax.set_xscale("log", base=2)
    finish(ax, "hidden size d", "items", "Items a head cannot recommend", legend_size=6)
    return ax


def plot_capacity(rows, ax=None):
    """KL(truth ‖ model) per row of analysis.capacity: the oracle (0), the best-fit head, and each
    trained model split into its capacity gap (the fit's KL) and its residual gap (the rest)."""
    ax = axes_or_new(ax)
    labels = [r["model"] for r in rows]
    y = np.arange(len(rows))
    fit = next((r["kl"] for r in rows if r["kind"] == "best fit"), None)
    for yi, r in zip(y, rows):
        if r["kind"] == "trained" and fit is not None:
            ax.barh(yi, min(fit, r["kl"]), color="C0", alpha=0.85, label="capacity gap (best-fit head's KL)"
                    if yi == next(i for i, q in enumerate(rows) if q["kind"] == "trained") else None)
            ax.barh(yi, max(r["kl"] - fit, 0.0), left=fit, color="C1", alpha=0.85, label="residual gap"
                    if yi == next(i for i, q in enumerate(rows) if q["kind"] == "trained") else None)
        else:
            ax.barh(yi, r["kl"], color="0.45" if r["kind"] == "oracle" else "C0", alpha=0.85)
        ax.annotate(f"{r['kl']:.3f}", (r["kl"], yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(r["kl"] for r in rows) * 1.25, 1e-3))
    finish(ax, "KL(truth ‖ model), nats (the fit's: an upper bound on the family's best)", "",
           "What the head cannot express vs what training did not learn", legend_size=7, title_size=9)
    return ax


def plot_capacity_sweep(rows, ax=None, *, x: str = "hidden_dim", experts: int | None = None,
                        hidden_dim: int | None = None):
    """KL(truth ‖ model) against d (``x="hidden_dim"``: softmax, and MoS with `experts` experts) or
    against K (``x="n_experts"``: MoS at `hidden_dim`), from analysis.capacity_fit.sweep_rows: the
    best-fit head (solid; its KL is the capacity gap, an upper bound) and the trained models (dashed,
    mean over seeds, bars from the best to the worst seed); the band between them is the residual gap."""
    ax = axes_or_new(ax)
    if x == "hidden_dim":
        families = size_sweep_families(rows, experts)
        xlabel, title = "hidden size d", "Capacity and residual gaps vs hidden size"
    else:
        chosen = [r for r in rows if r["head"] == "mos" and r["hidden_dim"] == hidden_dim]
        families = [("mos", f"MoS d={hidden_dim}", sorted(chosen, key=lambda r: r[x]))] if chosen else []
        xlabel, title = "experts K", f"Capacity and residual gaps vs experts (d = {hidden_dim})"
    from matplotlib.lines import Line2D

    handles = []
    for name, label, chosen in families:
        style = _head_style(name)
        xs = [r[x] for r in chosen]
        fit = [r["fit_kl"] for r in chosen]
        ax.plot(xs, fit, lw=1.8, label=f"{label}: best fit (capacity gap)", **style)  # labels for readers of
        # the axes; the legend below is built from `handles`
        trained = [(r[x], r["trained_kl_mean"], r["trained_kl_min"], r["trained_kl_max"]) for r in chosen
                   if r["trained_kl_mean"] is not None]
        if trained:
            tx, mean, low, high = map(np.array, zip(*trained))
            ax.errorbar(tx, mean, yerr=[mean - low, high - mean], ls="--", lw=1.4, capsize=3, color=style["color"],
                        marker=style["marker"], mfc="white", label=f"{label}: trained (residual gap above the fit)")
            ax.fill_between(tx, [f for xv, f in zip(xs, fit) if xv in set(tx)], mean, color=style["color"], alpha=0.12)
        handles.append(Line2D([], [], lw=1.8, label=label, **style))
    # the legend below the axes, never over a curve: one entry per head, and what solid and dashed mean
    handles += [Line2D([], [], color="0.3", lw=1.8, label="solid: best fit (capacity gap)"),
                Line2D([], [], color="0.3", lw=1.4, ls="--", marker="o", mfc="white",
                       label="dashed: trained (residual gap above the fit)")]
    if x == "hidden_dim":
        ax.set_xscale("log", base=2)
    ticks = sorted({r[x] for _, _, chosen in families for r in chosen})
    ax.set_xticks(ticks, [str(v) for v in ticks])
    ax.set_ylim(bottom=0)
    finish(ax, xlabel, "KL(truth ‖ model), nats", title, legend_size=7, handles=handles, loc="upper center",
           bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    return ax



KL_FLOOR = 1e-6  # KL drawn at least this (a softmax reproduced exactly has KL ~1e-15)


def plot_expressive_kl(models, ax=None, *, title: str = "", eps: float | None = None, short_labels: bool = True):
    """Each model's expressive-rank sweep: KL(model ‖ best-found rank-r softmax) against r (an upper bound),
    floored at KL_FLOOR for the log scale; a softmax's cap d+2 dotted in its colour; ε dashed."""
    ax = axes_or_new(ax)
    for m, color in zip(models, _matrix_colors(models)):
        sweep = m["expressive"]["sweep"]
        ax.plot([s["r"] for s in sweep], [max(s["kl"], KL_FLOOR) for s in sweep], marker=".", lw=1.5, color=color,
                label=_line_label(m, short_labels))
        if m.get("rank_cap"):
            ax.axvline(m["rank_cap"], color=color, ls=":", lw=1)
    if eps is not None:
        ax.axhline(eps, color="0.4", ls="--", lw=0.9, label=f"ε = {eps:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    finish(ax, "rank r of the approximating softmax", f"KL(model ‖ rank-r softmax), nats (≥ {KL_FLOOR:g})", title,
           legend_size=7, loc="best")
    return ax


def plot_expressive_overlap(models, ax=None, *, title: str = "", bar: float | None = None, short_labels: bool = True):
    """Each model's sweep: the share of its top k that the rank-r approximation keeps in its top k."""
    ax = axes_or_new(ax)
    for m, color in zip(models, _matrix_colors(models)):
        sweep, k = m["expressive"]["sweep"], m["expressive"]["k"]
        ax.plot([s["r"] for s in sweep], [s[f"overlap@{k}"] for s in sweep], marker=".", lw=1.5, color=color,
                label=_line_label(m, short_labels))
    if bar is not None:
        ax.axhline(bar, color="0.4", ls="--", lw=0.9, label=f"bar {bar:g}")
    ax.set_xscale("log", base=2)
    k = models[0]["expressive"]["k"] if models else 20
    finish(ax, "rank r of the approximating softmax", f"top-{k} overlap", title, legend_size=7, loc="best")
    return ax


def plot_expressive(models, *, eps: float, bar: float):
    """The expressive-rank sweeps of several models side by side: KL against r, and top-k overlap against r
    (analysis.rank's expressive.png)."""
    figure, (left, right) = subplots(1, 2, figsize=(11, 4.2))
    plot_expressive_kl(models, left, eps=eps, short_labels=False)
    plot_expressive_overlap(models, right, bar=bar, short_labels=False)
    figure.suptitle("How close a rank-r softmax comes to each model (a fit: the KL is an upper bound)")
    return figure
