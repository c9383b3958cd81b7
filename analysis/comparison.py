"""The head comparison behind ``python -m analysis.compare`` (whose docstring gives the method).

:func:`compare` evaluates every checkpoint once on the same events (:mod:`analysis.groups`),
groups seeds, and builds the metric table with paired session-bootstrap CIs and sign-flip tests
(:mod:`analysis.stats`), the breakdowns (:mod:`analysis.breakdown`), the health table and the
fairness warnings; :func:`write_outputs` writes compare.json and the CSV/PNG files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from softmax_bottleneck import distributed
from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset
from softmax_bottleneck.cli import check_cutoffs, sample_record
from softmax_bottleneck.config import describe
from softmax_bottleneck.data import sample_sessions
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.metrics import METRICS, event_values
from softmax_bottleneck.provenance import library_version

from .breakdown import breakdown_table, event_bins, gain_grid
from .groups import Group, evaluate_groups
from .outputs import write_files
from .stats import (bootstrap_p_value, bootstrap_replicates, holm, interval_from_replicates, p_value_resolution,
                    session_bootstrap, sign_flip_test, welch_p_value)


def compare(paths: list[Path], *, data: Path | None = None, split: str = "test", ks=(1, 5, 10, 20),
            metrics=METRICS, n_bootstrap: int = 2000, seed: int = 0, n_bins: int = 4, device="cpu",
            batch_size: int = 512, ci_level: float = 0.95, ci_method: str = "percentile", formats=None,
            item_map: Path | None = None, allow_other_data: bool = False, sample_events: int | None = None,
            sample_seed: int = 0,
            resample: str = "hierarchical") -> dict:
    """Evaluate, group, test and break down; returns tables and the summary (see module docstring)."""
    if len(paths) < 2:
        raise InputError(f"compare needs at least two checkpoints, got {len(paths)}")
    checkpoints, dataset = load_checkpoints_on_one_dataset(paths, data, formats, item_map,
                                                          allow_other_data=allow_other_data)
    full = dataset.split(split)
    if full.n_transitions == 0:
        raise InputError(f"{dataset.path}: the {split} split has no events")
    held_out = full if sample_events is None else sample_sessions(full, max_events=sample_events, seed=sample_seed)
    ks = check_cutoffs(ks, dataset.n_items)
    groups, events, oracle, baseline_model = evaluate_groups(paths, checkpoints, dataset, held_out, ks,
                                                             device=device, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    rows = metric_rows(groups, events[:, 0], ks, metrics, n_bootstrap, rng, oracle=oracle, level=ci_level,
                       method=ci_method, resample=resample)
    metrics_table = pd.DataFrame(rows).astype({"hidden_dim": "Int64", "n_experts": "Int64", "n_seeds": "Int64"})
    bins = event_bins(dataset, held_out, events, baseline_model, n_bins)
    n_sessions = int(len(np.unique(events[:, 0])))
    summary = {
        "library_version": library_version(), "threads": torch.get_num_threads(),
        "world_size": distributed.world_size(), "split": split,
        "n_events": int(len(events)), "n_sessions": n_sessions,
        "baseline": groups[0].label, "seed": seed, "n_bootstrap": n_bootstrap, "ci_level": ci_level,
        "ci_method": ci_method, "resample": resample, "ties": "conservative",
        "multiplicity": f"Holm over the {sum(r['model'] != groups[0].label and r['model'] != 'oracle' for r in rows)} "
                        "differences to the baseline in metrics.csv (p_holm)",
        "models": [group_summary(g, rows) for g in groups],
        "oracle": None if oracle is None else {f"{r['metric']}@{r['k']}": r["value"] for r in rows
                                               if r["model"] == "oracle"},
        "fairness": fairness_warnings(groups), "sample": sample_record(full, held_out, sample_seed),
        "resolution": p_value_resolution([r["p_method"] for r in rows if "p_holm" in r], n_bootstrap, n_sessions,
                                         ci_level),
    }
    return {"summary": summary, "metrics": metrics_table, "breakdown": breakdown_table(groups, bins, max(ks), metrics),
            "grid": gain_grid(groups, bins, max(ks), metrics), "health": health_table(groups)}


RESAMPLING = ("hierarchical", "sessions")


def metric_rows(groups: list[Group], sessions: np.ndarray, ks, metrics, n_bootstrap: int, rng: np.random.Generator,
                *, oracle: np.ndarray | None = None, level: float = 0.95, method: str = "percentile",
                resample: str = "hierarchical") -> list[dict]:
    """One row per group (then the oracle) × metric × K: mean over seeds, its interval, and the paired
    difference to the first group with its interval, p-value and Holm-adjusted p-value.

    ``resample="hierarchical"`` (where a compared configuration has ≥ 2 seeds): the intervals and the
    p-value come from a bootstrap that draws seeds, then sessions, so they are about the heads, not
    these trained models. ``"sessions"``: per-event values averaged over seeds, sessions resampled, and a
    paired sign-flip test over sessions: about these models only. Welch's test over the seeds' means
    stands beside either. Holm's adjustment runs over every difference the table reports."""
    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLING)}, got {resample!r}")
    baseline, rows = groups[0], []
    for group in groups:
        for metric in metrics:
            for k in ks:
                per_seed, values = group.seed_values(metric, k), group.seed_event_values(metric, k)
                base = baseline.seed_event_values(metric, k)
                hierarchical = resample == "hierarchical" and max(len(values), len(base)) > 1
                if hierarchical:
                    estimate, replicates = bootstrap_replicates(values, sessions, n_bootstrap, rng)
                    low, high = interval_from_replicates(estimate, replicates, level=level, method=method)
                    estimate, replicates = bootstrap_replicates(values, sessions, n_bootstrap, rng, baseline=base)
                    d_low, d_high = interval_from_replicates(estimate, replicates, level=level, method=method)
                    p_value = bootstrap_p_value(replicates) if group is not baseline else 1.0
                else:
                    difference = values.mean(axis=0) - base.mean(axis=0)
                    low, high = session_bootstrap(values.mean(axis=0), sessions, n_bootstrap, rng, level=level,
                                                  method=method)
                    d_low, d_high = session_bootstrap(difference, sessions, n_bootstrap, rng, level=level,
                                                      method=method)
                    p_value = sign_flip_test(difference, sessions, n_bootstrap, rng) if group is not baseline else 1.0
                rows.append({
                    "model": group.label, **describe(group.config), "n_seeds": len(group.ranks), "metric": metric, "k": k,
                    "value": float(np.mean(per_seed)), "std_over_seeds": _std(per_seed),
                    "ci_low": low, "ci_high": high,
                    "diff_vs_baseline": float(np.mean(per_seed) - np.mean(baseline.seed_values(metric, k))),
                    "diff_ci_low": d_low, "diff_ci_high": d_high, "p_value": p_value,
                    "p_method": "hierarchical bootstrap (seeds, then sessions)" if hierarchical
                    else "sign-flip over sessions",
                    "p_welch_over_seeds": (welch_p_value(per_seed, baseline.seed_values(metric, k))
                                           if group is not baseline else None),
                    "train_events_per_second": group.train_events_per_second,
                    "eval_events_per_second": group.eval_events_per_second, "kl_to_truth": group.kl})
    compared = [r for r in rows if r["model"] != baseline.label]
    for row, adjusted in zip(compared, holm([r["p_value"] for r in compared])):
        row["p_holm"] = float(adjusted)
    for metric in metrics if oracle is not None else ():
        for k in ks:
            values = event_values(oracle, metric, k)
            low, high = session_bootstrap(values, sessions, n_bootstrap, rng, level=level, method=method)
            rows.append({"model": "oracle", "head": "truth", "variant": "truth", "metric": metric, "k": k, "value": float(values.mean()),
                         "ci_low": low, "ci_high": high, "kl_to_truth": 0.0, "n_seeds": 1})
    return rows


GAIN_COLUMNS = ("hidden_dim", "model", "head", "variant", "n_experts", "n_seeds", "metric", "k", "value",
                "baseline", "baseline_value", "diff_vs_baseline", "diff_ci_low", "diff_ci_high", "relative_diff",
                "p_value", "p_method", "p_welch_over_seeds")


def gains_by_size(paths_by_size: dict[int, list[Path]], *, data: Path | None = None, split: str = "test",
                  ks=(20,), metrics=METRICS, n_bootstrap: int = 2000, seed: int = 0, device="cpu",
                  ci_level: float = 0.95) -> dict:
    """Every head against the softmax **of its own hidden size**: one :func:`compare` per size d, whose
    first checkpoints are that size's softmax (its seeds), on the same held-out events.

    Returns {"gains", "breakdown", "summary"}: gains has one row per size × head × metric × K with the
    paired difference to the size's softmax, its interval and p-value as :func:`metric_rows` makes them
    (a hierarchical bootstrap over seeds, then sessions, where a configuration has ≥ 2 seeds), and Holm's
    adjustment over every row of the table together (``p_holm``: the family is every head × d × metric ×
    K); breakdown is each size's :func:`analysis.breakdown.breakdown_table` (by target support, context
    diversity and distinct items; relative gains over that size's softmax, descriptive)."""
    rows, breakdowns, summaries = [], [], {}
    for d, paths in sorted(paths_by_size.items()):
        result = compare(paths, data=data, split=split, ks=ks, metrics=metrics, n_bootstrap=n_bootstrap, seed=seed,
                         device=device, ci_level=ci_level)
        table, summary = result["metrics"], result["summary"]
        summaries[d] = summary
        breakdowns.append(result["breakdown"].assign(hidden_dim=d, baseline=summary["baseline"]))
        base = table[table["model"] == summary["baseline"]].set_index(["metric", "k"])["value"]
        for row in table[(table["model"] != summary["baseline"]) & (table["model"] != "oracle")].to_dict("records"):
            baseline_value = float(base[(row["metric"], row["k"])])
            rows.append({**{c: row.get(c) for c in GAIN_COLUMNS}, "hidden_dim": d, "baseline": summary["baseline"],
                         "baseline_value": baseline_value,
                         "relative_diff": row["diff_vs_baseline"] / baseline_value if baseline_value else float("nan")})
    if not rows:
        raise InputError("no size has a head besides its softmax: nothing to compare")
    gains = pd.DataFrame(rows, columns=list(GAIN_COLUMNS))
    gains["p_holm"] = holm(gains["p_value"].to_numpy())
    first = next(iter(summaries.values()))
    summary = {"library_version": library_version(), "split": split, "n_events": first["n_events"],
               "n_sessions": first["n_sessions"], "n_bootstrap": n_bootstrap, "seed": seed, "ci_level": ci_level,
               "resample": first["resample"], "ties": first["ties"],
               "baselines": {str(d): s["baseline"] for d, s in summaries.items()},
               "multiplicity": f"Holm over the {len(gains)} differences of gains.csv (every head × d × metric × K)",
               "fairness": sorted({w for s in summaries.values() for w in s["fairness"]}),
               "resolution": p_value_resolution(gains["p_method"], n_bootstrap, first["n_sessions"], ci_level)}
    return {"gains": gains, "breakdown": pd.concat(breakdowns, ignore_index=True), "summary": summary}


def write_gains(out: Path, result: dict) -> None:
    """gains.csv, breakdown.csv and gains.json (:func:`gains_by_size`)."""
    write_files(out, {"gains.csv": lambda f: result["gains"].to_csv(f, index=False),
                      "breakdown.csv": lambda f: result["breakdown"].to_csv(f, index=False),
                      "gains.json": lambda f: f.write_text(json.dumps(result["summary"], indent=2) + "\n")})


def group_summary(group: Group, rows: list[dict]) -> dict:
    """compare.json's entry for one group: its checkpoints, speeds, epochs, health, tuning and metrics."""
    mine = [r for r in rows if r["model"] == group.label]
    return {"label": group.label, "checkpoints": group.paths, "n_seeds": len(group.ranks), **describe(group.config),
            "train_events_per_second": group.train_events_per_second,
            "eval_events_per_second": group.eval_events_per_second, "kl_to_truth": group.kl,
            "epochs": [e["epoch"] for e in group.epochs], "epochs_trained": [e["epochs_trained"] for e in group.epochs],
            "select_metric": group.epochs[0]["select_metric"], "health": group.health_summary(),
            "tuning": group.tuning, **({"foreign": group.foreign} if group.foreign else {}),
            **{f"{r['metric']}@{r['k']}": r["value"] for r in mine},
            **{f"diff_{r['metric']}@{r['k']}": r["diff_vs_baseline"] for r in mine},
            **{f"p_{r['metric']}@{r['k']}": r["p_value"] for r in mine},
            **{f"p_holm_{r['metric']}@{r['k']}": r["p_holm"] for r in mine if "p_holm" in r}}


def fairness_warnings(groups: list[Group]) -> list[str]:
    """What keeps this comparison from being a fair one: untuned settings, unequal budgets, single seeds."""
    warnings = []
    untuned = [g.label for g in groups if g.tuning is None]
    if untuned:
        warnings.append(f"settings not chosen by tuning for: {', '.join(untuned)} (train with --config best.json "
                        "from python -m softmax_bottleneck.tune)")
    budgets = {g.label: (g.tuning or {}).get("budget", {}).get("trials") for g in groups if g.tuning}
    if len(set(budgets.values())) > 1:
        warnings.append("unequal tuning budgets: " + ", ".join(f"{k} {v} trials" for k, v in budgets.items()))
    single = [g.label for g in groups if len(g.ranks) < 2]
    if single:
        warnings.append(f"one seed only: {', '.join(single)} (seed variation is not in the intervals)")
    no_selection = [g.label for g in groups if any(e["select_metric"] is None for e in g.epochs)]
    if no_selection:
        warnings.append(f"no validation epoch selection recorded: {', '.join(no_selection)}")
    return warnings


def health_table(groups: list[Group]) -> pd.DataFrame:
    """Tidy: model × measure (× K, × expert) with the mean and std over seeds (see HeadHealth)."""
    rows = []
    for group in groups:
        for key in group.health[0]:
            per_seed = [h[key] for h in group.health]
            measure, _, k = key.partition("@")
            if isinstance(per_seed[0], list):  # expert_top_share: one row per expert
                for expert, values in enumerate(zip(*per_seed)):
                    rows.append({"model": group.label, "measure": measure, "k": None, "expert": expert,
                                 "value": float(np.mean(values)), "std_over_seeds": _std(values)})
            else:
                rows.append({"model": group.label, "measure": measure, "k": int(k) if k else None, "expert": None,
                             "value": float(np.mean(per_seed)), "std_over_seeds": _std(per_seed)})
    return pd.DataFrame(rows).astype({"k": "Int64", "expert": "Int64"})


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def write_outputs(out: Path, result: dict, min_cell_events: int = 30) -> None:
    from . import plots  # matplotlib only when pictures are asked for

    summary, table, grid = result["summary"], result["metrics"], result["grid"]
    k = int(table["k"].max())
    writers = {"compare.json": lambda f: f.write_text(json.dumps(summary, indent=2) + "\n"),
               "metrics.csv": lambda f: table.to_csv(f, index=False),
               "health.csv": lambda f: result["health"].to_csv(f, index=False),
               "breakdown.csv": lambda f: pd.concat([result["breakdown"], grid.assign(breakdown="support×diversity")],
                                                    ignore_index=True).to_csv(f, index=False),
               "metrics.png": lambda f: plots.save(plots.metric_bars_figure(table[table["k"] == k]), f)}
    first_metric = table["metric"].iloc[0]
    cells = grid[grid["metric"] == first_metric] if len(grid) else grid
    limit = plots.gain_limit(cells, min_cell_events) if len(cells) else None  # one colour scale for all heatmaps
    for model in (cells["model"].unique() if len(cells) else []):
        title = f"{model} vs {summary['baseline']}: relative {first_metric}@{k} gain"
        writers[f"gain_heatmap_{_slug(model)}.png"] = (
            lambda part, title: lambda f: plots.save(plots.plot_gain_heatmap(
                part, min_events=min_cell_events, title=title, limit=limit).figure, f))(cells[cells["model"] == model], title)
    write_files(out, writers)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
