"""The analysis commands' own plots stay readable with many models: one property of each picture's content."""

import itertools

import matplotlib.colors
import numpy as np
import pandas as pd

from analysis import plots
from analysis.stats import quantile_bins

N_MODELS = 14


def _labels(n):
    return [f"model {i}" for i in range(n)]


def _renderer(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_spectra_give_every_model_its_own_style_and_caps_readable_labels():
    rng = np.random.default_rng(0)
    spectra = [(label, np.sort(rng.uniform(1e-8, 1, 300))[::-1], cap)  # 300 items, as the quick world
               for label, cap in zip(_labels(N_MODELS), [3, 4, 6, 10, 18] + [None] * (N_MODELS - 5))]
    _, axes = plots.subplots(1, 2, figsize=(11, 4.2))  # a panel of the paper's spectra figure
    ax = plots.plot_spectra(spectra + [("truth", np.logspace(0, -6, 300), None)], axes[0])
    lines = [line for line in ax.get_lines() if line.get_label() in {s[0] for s in spectra} | {"truth"}]
    assert len(lines) == N_MODELS + 1
    styles = {(matplotlib.colors.to_hex(line.get_color()), str(line.get_linestyle())) for line in lines}
    assert len(styles) == len(lines)  # no two lines look alike
    renderer = _renderer(ax.figure)
    caps = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().startswith("cap ")]
    assert len(caps) == 5 and not any(_overlap(a, b) for a, b in itertools.combinations(caps, 2))


def _metric_table(n):
    rows = [{"model": m, "metric": metric, "k": 20, "value": 0.1 + 0.01 * i, "ci_low": 0.09, "ci_high": 0.2}
            for i, m in enumerate(_labels(n)) for metric in ("recall", "mrr", "ndcg")]
    return pd.DataFrame(rows)


def test_metric_bars_keep_the_legend_off_the_bars_and_every_model_distinct():
    figure = plots.metric_bars_figure(_metric_table(N_MODELS))
    ax = figure.axes[0]
    renderer = _renderer(figure)
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # beside the axes, not over the bars
    looks = {(matplotlib.colors.to_hex(c.patches[0].get_facecolor()), c.patches[0].get_hatch())
             for c in ax.containers if hasattr(c, "patches")}
    assert len(looks) == N_MODELS


def test_reach_panels_wrap_into_a_grid():
    n = 13
    table = pd.DataFrame([{"model": m, "support": s + 1, "status": "reachable", "hits@20": s}
                          for m in _labels(n) for s in range(5)])
    figure = plots.reach_figure(table, k=20, n_contexts=10)
    shown = [ax for ax in figure.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert len(shown) == n
    columns = {round(ax.get_position().x0, 3) for ax in shown}
    assert len(columns) == plots.REACH_COLUMNS
    assert figure.get_size_inches()[0] <= 5.2 * plots.REACH_COLUMNS + 1e-9


def test_the_heatmaps_of_one_comparison_share_one_colour_scale(tmp_path, monkeypatch):
    from analysis import comparison as compare

    cells = [{"support_bin": f"s{s}", "support_index": s, "diversity_bin": f"d{d}", "diversity_index": d,
              "n_events": 100, "model": model, "metric": "recall", "k": 20, "value": 0.1,
              "relative_gain": gain * (s - d)}
             for model, gain in (("a", 0.05), ("b", 0.5)) for s in range(2) for d in range(2)]
    result = {"summary": {"baseline": "base"}, "metrics": _metric_table(3), "health": pd.DataFrame(),
              "breakdown": pd.DataFrame(), "grid": pd.DataFrame(cells)}
    limits = []
    real = plots.plot_gain_heatmap

    def spy(*args, **kwargs):
        ax = real(*args, **kwargs)
        limits.append(ax.images[0].get_clim())
        return ax

    monkeypatch.setattr(plots, "plot_gain_heatmap", spy)
    compare.write_outputs(tmp_path, result)
    assert len(limits) == 2 and limits[0] == limits[1] == (-0.5, 0.5)


def test_a_few_huge_gains_do_not_wash_out_the_heatmap_scale():
    """A +200 % cell of rare items set the scale, and every MoS cell looked white: the scale is a high quantile,
    the outlier saturates, and the colour bar reads in % as the cells do."""
    gains = [0.02, -0.03, 0.05, -0.04, 0.01, 0.06, -0.02, 0.03, 0.04, 2.0]
    cells = pd.DataFrame([{"support_bin": f"s{i // 5}", "support_index": i // 5, "diversity_bin": f"d{i % 5}",
                           "diversity_index": i % 5, "n_events": 100, "relative_gain": g} for i, g in enumerate(gains)])
    limit = plots.gain_limit(cells)
    assert 0.05 <= limit < 0.3
    ax = plots.plot_gain_heatmap(cells, limit=limit)
    colorbar = ax.images[0].colorbar
    assert colorbar.formatter(0.5, 0).endswith("%") and "+200.0%" in [t.get_text().split("\n")[0] for t in ax.texts]


def test_bin_labels_are_readable_numbers():
    values = np.arange(1, 5001, dtype=float)
    _, labels = quantile_bins(values, 4)
    assert labels == ["1–1,251", "1,251–2,500", "2,500–3,750", "3,750–5,000"]  # never "1.25e+03"
    _, small = quantile_bins(np.linspace(0, 1.5, 101), 2)
    assert small == ["0–0.75", "0.75–1.5"]


def test_cost_bars_follow_the_sweeps():
    from figures.cost import sweep_order

    models = [{"head": v.removesuffix("-dd"), "variant": v, "hidden_dim": d, "n_experts": k, "label": f"{v} d={d} K={k}"}
              for v, d, k in [("mos", 8, 1), ("softmax-dd", 8, 1), ("mos", 8, 2), ("mos", 2, 4), ("mos", 8, 4),
                              ("mos", 32, 4), ("sigsoftmax", 2, 1), ("mos", 8, 8), ("softmax", 8, 1), ("softmax", 2, 1)]]
    order = [(m["variant"], m["hidden_dim"], m["n_experts"]) for m in sweep_order(models, experts=4)]
    assert order == [("softmax", 2, 1), ("softmax", 8, 1), ("mos", 2, 4), ("mos", 8, 4), ("mos", 32, 4),
                     ("sigsoftmax", 2, 1), ("softmax-dd", 8, 1), ("mos", 8, 1), ("mos", 8, 2), ("mos", 8, 8)]


def test_the_capacity_sweep_draws_each_familys_fit_below_its_trained_models():
    from analysis.capacity_fit import sweep_rows

    def summary(variant, d, k, fit, trained):
        return {"fit": {"restarts": 1, "steps": 10},
                "rows": [{"kind": "oracle", "kl": 0.0, "expected_recall@20": 0.9},
                         {"kind": "best fit", "head": variant.removesuffix("-dd"), "variant": variant, "hidden_dim": d,
                          "n_experts": k, "kl": fit, "expected_recall@20": 0.8},
                         *[{"kind": "trained", "kl": kl, "expected_recall@20": 0.5} for kl in trained]]}

    summaries = [summary("softmax", d, 1, 1.0 / d, [2.0 / d, 2.5 / d]) for d in (2, 4, 8)]
    summaries += [summary("mos", d, 4, 0.5 / d, [1.5 / d, 1.7 / d]) for d in (2, 4, 8)]
    summaries += [summary("mos", 4, k, 0.5 / k, [1.0 / k]) for k in (1, 2)]
    summaries += [summary(v, d, 1, 0.7 / d, [1.9 / d]) for v in ("softmax-dd", "mol") for d in (2, 4)]
    rows = sweep_rows(summaries)
    assert rows[0]["trained_kl_mean"] == 2.25 / 2 and rows[0]["residual_gap_mean"] == 2.25 / 2 - 0.5
    ax = plots.plot_capacity_sweep(rows, x="hidden_dim", experts=4)
    fits = [line for line in ax.get_lines() if "best fit" in line.get_label()]
    assert [line.get_label() for line in fits] == ["softmax: best fit (capacity gap)", "MoS K=4: best fit (capacity gap)",
                                                   "MoL: best fit (capacity gap)", "softmax-dd: best fit (capacity gap)"]
    # the expert sweep's K=1, 2 left out
    assert [list(line.get_xdata()) for line in fits] == [[2, 4, 8], [2, 4, 8], [2, 4], [2, 4]]
    assert len(ax.collections) >= 4 and len(ax.containers) == 4  # a learning-gap band and seed bars per family
    assert len({line.get_color() for line in fits}) == 4
    experts = plots.plot_capacity_sweep(rows, x="n_experts", hidden_dim=4)
    assert [list(line.get_xdata()) for line in experts.get_lines() if "best fit" in line.get_label()] == [[1, 2, 4]]
