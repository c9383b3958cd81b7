"""Compare heads on the same held-out events, with honest statistics: ``python -m analysis.compare``.

Examples::

    python -m analysis.compare --checkpoint runs/softmax.pt --checkpoint runs/mos.pt --out results/compare
    python -m analysis.compare --checkpoint runs/softmax-s0.pt --checkpoint runs/softmax-s1.pt \\
        --checkpoint runs/mos-s0.pt --checkpoint runs/mos-s1.pt --k 5 20 --json

Every checkpoint ranks the same next-item events against all items (conservative ties). The first
checkpoint's configuration is the baseline. Checkpoints that differ only in their seed form one
group: its metrics are mean ± std over seeds, and its per-event values are averaged over seeds
before pairing. For each group and metric: the value, the paired difference to the baseline
with a bootstrap interval that resamples *sessions* (events of a session are dependent; 95 %
percentile by default, ``--ci-level``, ``--ci-method``),
and a paired sign-flip permutation test over sessions. Breakdowns: by target-item training
support, by context diversity (1 − cosine of previous and target item under the baseline's item
embeddings), by distinct items in the prefix, and the support × diversity grid of relative gain.
On the synthetic world: an oracle row (the true distribution) and each model's KL(truth ‖ model).
Health (``health.csv``, and in ``compare.json``): top-K catalogue coverage, the training support of
recommended items against the targets', and for mixtures the saturated share of expert states, the
prior's entropy and each expert's share of contexts (softmax_bottleneck.evaluate.HeadHealth); and
which epoch each checkpoint holds.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset
from softmax_bottleneck.cli import (ArgumentParser, add_cutoffs_argument, add_heldout_arguments, check_cutoffs,
                                    resolve_device)
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.metrics import METRICS, event_values
from softmax_bottleneck.provenance import library_version

from .breakdown import breakdown_table, event_bins, gain_grid
from .groups import Group, evaluate_groups
from .outputs import run_analysis, write_files
from .stats import CI_METHODS, session_bootstrap, sign_flip_test


def compare(paths: list[Path], *, data: Path | None = None, split: str = "test", ks=(1, 5, 10, 20),
            metrics=METRICS, n_bootstrap: int = 2000, seed: int = 0, n_bins: int = 4, device="cpu",
            batch_size: int = 512, ci_level: float = 0.95, ci_method: str = "percentile") -> dict:
    """Evaluate, group, test and break down; returns tables and the summary (see module docstring)."""
    if len(paths) < 2:
        raise InputError(f"compare needs at least two checkpoints, got {len(paths)}")
    checkpoints, dataset = load_checkpoints_on_one_dataset(paths, data)
    held_out = dataset.split(split)
    if held_out.n_transitions == 0:
        raise InputError(f"{dataset.path}: the {split} split has no events")
    ks = check_cutoffs(ks, dataset.n_items)
    groups, events, oracle, baseline_model = evaluate_groups(paths, checkpoints, dataset, held_out, ks,
                                                             device=device, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    rows = metric_rows(groups, events[:, 0], ks, metrics, n_bootstrap, rng, oracle=oracle, level=ci_level,
                       method=ci_method)
    metrics_table = pd.DataFrame(rows).astype({"hidden_dim": "Int64", "n_experts": "Int64", "n_seeds": "Int64"})
    bins = event_bins(dataset, held_out, events, baseline_model, n_bins)
    summary = {
        "library_version": library_version(), "threads": torch.get_num_threads(), "split": split,
        "n_events": int(len(events)), "n_sessions": int(len(np.unique(events[:, 0]))),
        "baseline": groups[0].label, "seed": seed, "n_bootstrap": n_bootstrap, "ci_level": ci_level,
        "ci_method": ci_method, "ties": "conservative",
        "models": [group_summary(g, rows) for g in groups],
        "oracle": None if oracle is None else {f"{r['metric']}@{r['k']}": r["value"] for r in rows
                                               if r["model"] == "oracle"},
        "fairness": fairness_warnings(groups),
    }
    return {"summary": summary, "metrics": metrics_table, "breakdown": breakdown_table(groups, bins, max(ks), metrics),
            "grid": gain_grid(groups, bins, max(ks), metrics), "health": health_table(groups)}


def metric_rows(groups: list[Group], sessions: np.ndarray, ks, metrics, n_bootstrap: int, rng: np.random.Generator,
                *, oracle: np.ndarray | None = None, level: float = 0.95, method: str = "percentile") -> list[dict]:
    """One row per group (then the oracle) × metric × K: mean over seeds, session-bootstrap interval,
    and the paired difference to the first group with its interval and sign-flip p-value."""
    baseline, rows = groups[0], []

    def interval(values):
        return session_bootstrap(values, sessions, n_bootstrap, rng, level=level, method=method)

    for group in groups:
        for metric in metrics:
            for k in ks:
                per_seed = group.seed_values(metric, k)
                values = group.event_values(metric, k)
                difference = values - baseline.event_values(metric, k)
                low, high = interval(values)
                d_low, d_high = interval(difference)
                rows.append({
                    "model": group.label, "head": group.config["head"], "hidden_dim": group.config["hidden_dim"],
                    "n_experts": group.config["n_experts"], "n_seeds": len(group.ranks), "metric": metric, "k": k,
                    "value": float(np.mean(per_seed)), "std_over_seeds": _std(per_seed),
                    "ci_low": low, "ci_high": high, "diff_vs_baseline": float(difference.mean()),
                    "diff_ci_low": d_low, "diff_ci_high": d_high,
                    "p_value": sign_flip_test(difference, sessions, n_bootstrap, rng) if group is not baseline else 1.0,
                    "train_events_per_second": group.train_events_per_second,
                    "eval_events_per_second": group.eval_events_per_second, "kl_to_truth": group.kl})
    for metric in metrics if oracle is not None else ():
        for k in ks:
            values = event_values(oracle, metric, k)
            low, high = interval(values)
            rows.append({"model": "oracle", "head": "truth", "metric": metric, "k": k, "value": float(values.mean()),
                         "ci_low": low, "ci_high": high, "kl_to_truth": 0.0, "n_seeds": 1})
    return rows


def group_summary(group: Group, rows: list[dict]) -> dict:
    """compare.json's entry for one group: its checkpoints, speeds, epochs, health, tuning and metrics."""
    mine = [r for r in rows if r["model"] == group.label]
    return {"label": group.label, "checkpoints": group.paths, "n_seeds": len(group.ranks), "head": group.config["head"],
            "hidden_dim": group.config["hidden_dim"], "n_experts": group.config["n_experts"],
            "train_events_per_second": group.train_events_per_second,
            "eval_events_per_second": group.eval_events_per_second, "kl_to_truth": group.kl,
            "epochs": [e["epoch"] for e in group.epochs], "epochs_trained": [e["epochs_trained"] for e in group.epochs],
            "select_metric": group.epochs[0]["select_metric"], "health": group.health_summary(),
            "tuning": group.tuning,
            **{f"{r['metric']}@{r['k']}": r["value"] for r in mine},
            **{f"diff_{r['metric']}@{r['k']}": r["diff_vs_baseline"] for r in mine},
            **{f"p_{r['metric']}@{r['k']}": r["p_value"] for r in mine}}


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


def _print(result: dict) -> None:
    summary, table = result["summary"], result["metrics"]
    for warning in summary["fairness"]:
        print(f"warning: not a fair comparison yet: {warning}", file=sys.stderr)
    print(f"{summary['n_events']:,} {summary['split']} events in {summary['n_sessions']:,} sessions; baseline "
          f"{summary['baseline']}; {summary['ci_level']:.0%} {summary['ci_method']} CIs resample sessions "
          f"({summary['n_bootstrap']} replicates)")
    for (metric, k), part in table.groupby(["metric", "k"], sort=False):
        print(f"\n{metric}@{k}")
        for row in part.itertuples():
            line = f"  {row.model:24s} {row.value:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}]"
            if row.model != summary["baseline"] and row.model != "oracle":
                line += (f"  diff {row.diff_vs_baseline:+.4f} [{row.diff_ci_low:+.4f}, {row.diff_ci_high:+.4f}] "
                         f"p={row.p_value:.3g}")
            print(line)
    print()
    for model in summary["models"]:
        train = model["train_events_per_second"]
        print(f"  {model['label']:24s} train {train:,.0f} events/s, evaluate {model['eval_events_per_second']:,.0f} "
              f"events/s" if train else f"  {model['label']:24s} evaluate {model['eval_events_per_second']:,.0f} events/s",
              end="")
        print(f", KL(truth‖model) {model['kl_to_truth']:.4f}" if model["kl_to_truth"] is not None else "")
        health, k = model["health"], max(int(key.split("@")[1]) for key in model["health"] if "@" in key)
        line = (f"  {'':24s} epoch {'/'.join(map(str, model['epochs']))} of "
                f"{'/'.join(map(str, model['epochs_trained']))}; top-{k} coverage {health[f'coverage@{k}']:.1%}, "
                f"support {health[f'support_recommended@{k}']:,.0f} recommended vs {health['support_target']:,.0f}")
        tuning = model["tuning"]
        line += ("; settings tuned: " + f"{tuning['budget']['trials']} trials ({tuning['budget']['complete']} complete, "
                 f"{tuning['budget']['pruned']} pruned), best valid {tuning['metric']} {tuning['value']:.4f}"
                 if tuning else "; settings not tuned")
        if "saturated_share" in health:
            line += (f"; saturated {health['saturated_share']:.1%}, prior entropy {health['prior_entropy']:.3f}"
                     f"/{health['prior_entropy_max']:.3f}, top expert " +
                     ", ".join(f"{x:.0%}" for x in health["expert_top_share"]))
        print(line)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.compare", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, action="extend", nargs="+", required=True, metavar="CKPT",
                        help="trained models (the first is the baseline); several per flag, or repeat the flag; two or more")
    add_cutoffs_argument(parser)
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    parser.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap replicates and permutations")
    parser.add_argument("--bins", type=int, default=4, help="quantile bins per breakdown")
    parser.add_argument("--min-cell-events", type=int, default=30, help="grey out heatmap cells with fewer events")
    parser.add_argument("--ci-level", type=float, default=0.95, help="coverage of the intervals (default: 0.95)")
    parser.add_argument("--ci-method", default="percentile", choices=CI_METHODS,
                        help="bootstrap interval: percentile, or basic (reflected about the estimate)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutation test")
    parser.add_argument("--out", type=Path, help="folder for metrics.csv, breakdown.csv, compare.json, PNGs")
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def compute() -> dict:
        ks = check_cutoffs(args.k)
        if args.n_bootstrap < 100 or args.bins < 1:
            raise InputError("--n-bootstrap must be >= 100 and --bins >= 1")
        if not 0 < args.ci_level < 1:
            raise InputError(f"--ci-level must be between 0 and 1, got {args.ci_level}")
        return compare(args.checkpoint, data=args.data, split=args.split, ks=ks, metrics=tuple(args.metrics),
                       n_bootstrap=args.n_bootstrap, seed=args.seed, n_bins=args.bins,
                       device=resolve_device(args.device), ci_level=args.ci_level, ci_method=args.ci_method)

    return run_analysis(args, compute, summary=lambda result: result["summary"],
                        write=lambda out, result: write_outputs(out, result, args.min_cell_events), show=_print,
                        files="compare.json, metrics.csv, health.csv, breakdown.csv and PNGs")


if __name__ == "__main__":
    sys.exit(main())
