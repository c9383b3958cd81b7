"""Compare heads on the same held-out events, with honest statistics: ``python -m analysis.compare``.

Examples::

    python -m analysis.compare --checkpoint runs/softmax.pt --checkpoint runs/mos.pt --out results/compare
    python -m analysis.compare --checkpoint runs/softmax-s0.pt --checkpoint runs/softmax-s1.pt \\
        --checkpoint runs/mos-s0.pt --checkpoint runs/mos-s1.pt --k 5 20 --json

Every checkpoint ranks the same next-item events against all items (conservative ties). The first
checkpoint's configuration is the baseline. Checkpoints that differ only in their seed form one
group: its metrics are mean ± std over seeds, and its per-event values are averaged over seeds
before pairing. For each group and metric: the value, the paired difference to the baseline
with a 95 % bootstrap interval that resamples *sessions* (events of a session are dependent),
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

import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from softmax_bottleneck import __version__
from softmax_bottleneck.checkpoint import load_checkpoints_on_one_dataset, model_from_checkpoint
from softmax_bottleneck.cli import (ArgumentParser, InputError, add_cutoffs_argument, add_heldout_arguments,
                                    check_cutoffs, check_output_dir, resolve_device, run_main, set_threads)
from softmax_bottleneck.evaluate import HeadHealth, epoch_record, evaluate_ranks
from softmax_bottleneck.metrics import METRICS, event_values, target_ranks
from softmax_bottleneck.model import model_label
from softmax_bottleneck.synthetic import SyntheticWorld

from .logprobs import collect_contexts
from .outputs import write_files


@dataclasses.dataclass
class Group:
    """Checkpoints of one configuration (seeds), evaluated on the same events."""

    label: str
    config: dict
    paths: list[str]
    ranks: list[np.ndarray]  # one (n_events,) array per seed
    train_events_per_second: float | None
    eval_events_per_second: float
    kl: float | None = None
    seeds: list = dataclasses.field(default_factory=list)
    health: list[dict] = dataclasses.field(default_factory=list)  # one HeadHealth.result() per seed
    epochs: list[dict] = dataclasses.field(default_factory=list)  # one epoch_record per seed
    tuning: dict | None = None  # where the (shared) settings come from: a tuner's budget, or None

    def health_summary(self) -> dict:
        """Each health measure averaged over seeds (lists element-wise)."""
        return {key: (np.mean([h[key] for h in self.health], axis=0).tolist() if isinstance(value, list)
                      else float(np.mean([h[key] for h in self.health])))
                for key, value in self.health[0].items()}

    def seed_values(self, metric: str, k: int) -> list[float]:
        return [float(event_values(r, metric, k).mean()) for r in self.ranks]

    def event_values(self, metric: str, k: int) -> np.ndarray:
        """Per-event values averaged over seeds, (n_events,)."""
        return np.mean([event_values(r, metric, k) for r in self.ranks], axis=0)


def session_bootstrap(values: np.ndarray, sessions: np.ndarray, n_bootstrap: int,
                      rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile interval of the event mean of `values`, resampling whole sessions."""
    _, inverse = np.unique(sessions, return_inverse=True)
    sums, counts = np.bincount(inverse, weights=values), np.bincount(inverse).astype(np.float64)
    n_sessions, estimates = len(sums), []
    for start in range(0, n_bootstrap, 256):  # bounded memory: 256 replicates at a time
        picks = rng.integers(0, n_sessions, size=(min(256, n_bootstrap - start), n_sessions))
        estimates.append(sums[picks].sum(axis=1) / counts[picks].sum(axis=1))
    low, high = np.percentile(np.concatenate(estimates), [2.5, 97.5])
    return float(low), float(high)


def sign_flip_test(differences: np.ndarray, sessions: np.ndarray, n_permutations: int,
                   rng: np.random.Generator) -> float:
    """Two-sided p-value of a paired permutation test: under no difference, each session's summed
    difference is equally likely to have either sign."""
    _, inverse = np.unique(sessions, return_inverse=True)
    sums = np.bincount(inverse, weights=differences)
    observed = abs(sums.sum())
    if observed == 0:
        return 1.0
    extreme = 0
    for start in range(0, n_permutations, 256):
        signs = rng.choice([-1.0, 1.0], size=(min(256, n_permutations - start), len(sums)))
        extreme += int(np.count_nonzero(np.abs(signs @ sums) >= observed - 1e-12 * observed))
    return (1 + extreme) / (1 + n_permutations)


def quantile_bins(values: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[str]]:
    """(bin index per event, bin labels): quantile bins covering every event (ties may merge bins)."""
    codes, edges = pd.qcut(values, q=n_bins, labels=False, retbins=True, duplicates="drop")
    shown = np.where(np.abs(edges) < 1e-9 * max(np.abs(edges).max(), 1e-300), 0.0, edges)  # rounding noise → 0
    labels = [f"{shown[i]:.3g}–{shown[i + 1]:.3g}" for i in range(len(edges) - 1)]
    return np.asarray(codes, dtype=np.int64), labels


def _group_key(checkpoint: dict) -> str:
    train = {k: v for k, v in checkpoint["train_config"].items() if k != "seed"}
    return json.dumps([checkpoint["model_config"], train], sort_keys=True)


@torch.no_grad()
def _truth_and_kl(models: list, split, dataset, device, batch_size: int = 256):
    """Oracle ranks and each model's mean KL(truth ‖ model) over the split's contexts."""
    world = SyntheticWorld.from_arrays(dataset.world)
    catalogue = dataset.item_ids.astype(np.int64)
    contexts = [collect_contexts(model, split, device=device) for model in models]
    base = contexts[0]
    oracle_ranks, kls = [], np.zeros(len(models))
    for start in range(0, len(base), batch_size):
        stop = min(start + batch_size, len(base))
        truth = torch.from_numpy(world.log_probs(catalogue[base.previous_items[start:stop]], items=catalogue))
        oracle_ranks.append(target_ranks(truth, torch.from_numpy(base.targets[start:stop]).long()).numpy())
        p_true = truth.exp()
        for index, (model, context) in enumerate(zip(models, contexts)):
            hidden = torch.from_numpy(context.hidden[start:stop]).to(device)
            log_model = model.head.log_probs(hidden).double().cpu()
            kls[index] += float((p_true * (truth - log_model)).sum())
    return base, np.concatenate(oracle_ranks), kls / len(base)


def compare(paths: list[Path], *, data: Path | None = None, split: str = "test", ks=(1, 5, 10, 20),
            metrics=METRICS, n_bootstrap: int = 2000, seed: int = 0, n_bins: int = 4, device="cpu",
            batch_size: int = 512) -> dict:
    """Evaluate, group, test and break down; returns tables and the summary (see module docstring)."""
    if len(paths) < 2:
        raise InputError("compare needs at least two --checkpoint")
    checkpoints, dataset = load_checkpoints_on_one_dataset(paths, data)
    held_out = dataset.split(split)
    if held_out.n_transitions == 0:
        raise InputError(f"{dataset.path}: the {split} split has no events")
    ks = check_cutoffs(ks, dataset.n_items)

    groups: dict[str, Group] = {}
    models, events = [], None
    for path, checkpoint in zip(paths, checkpoints):
        model = model_from_checkpoint(checkpoint, device)
        health = HeadHealth(dataset.support, ks)
        result = evaluate_ranks(model, held_out, batch_size=batch_size, device=device, health=health)
        order = np.lexsort((result.positions, result.sessions))
        key_events = np.stack([result.sessions[order], result.positions[order], result.targets[order]], axis=1)
        events = key_events if events is None else events
        key = _group_key(checkpoint)
        seed_of = checkpoint["train_config"].get("seed")
        while key in groups and seed_of in groups[key].seeds:  # the same seed twice is not a replicate
            key += "+"
        speeds = [m["events_per_second"] for m in checkpoint.get("metrics", []) if "events_per_second" in m]
        if key not in groups:
            groups[key] = Group(model_label(checkpoint["model_config"]), checkpoint["model_config"], [], [],
                                statistics.median(speeds) if speeds else None, 0.0)
            models.append(model)
        group = groups[key]
        group.seeds.append(seed_of)
        group.paths.append(str(path))
        group.ranks.append(result.ranks[order])
        group.health.append(health.result())
        group.epochs.append(epoch_record(checkpoint))
        group.tuning = checkpoint.get("tuning")
        group.eval_events_per_second += len(result.ranks) / max(result.seconds, 1e-9)
    for group in groups.values():
        group.eval_events_per_second /= len(group.paths)
    labels = [g.label for g in groups.values()]
    for group in groups.values():  # disambiguate configurations with the same short label
        if labels.count(group.label) > 1:
            group.label = f"{group.label} ({Path(group.paths[0]).stem})"
    groups = list(groups.values())
    sessions, positions, targets = events.T

    oracle = None
    if dataset.world is not None:
        contexts, oracle_ranks, kls = _truth_and_kl(models, held_out, dataset, device)
        if not np.array_equal(contexts.key(), events[:, :2]):
            raise InputError("internal: contexts and evaluated events differ")
        for group, kl in zip(groups, kls):
            group.kl = float(kl)
        oracle = oracle_ranks

    rng = np.random.default_rng(seed)
    baseline = groups[0]
    rows = []
    for group in groups:
        for metric in metrics:
            for k in ks:
                per_seed = group.seed_values(metric, k)
                values = group.event_values(metric, k)
                difference = values - baseline.event_values(metric, k)
                low, high = session_bootstrap(values, sessions, n_bootstrap, rng)
                d_low, d_high = session_bootstrap(difference, sessions, n_bootstrap, rng)
                rows.append({
                    "model": group.label, "head": group.config["head"], "hidden_dim": group.config["hidden_dim"],
                    "n_experts": group.config["n_experts"], "n_seeds": len(group.ranks), "metric": metric, "k": k,
                    "value": float(np.mean(per_seed)), "std_over_seeds": _std(per_seed),
                    "ci_low": low, "ci_high": high, "diff_vs_baseline": float(difference.mean()),
                    "diff_ci_low": d_low, "diff_ci_high": d_high,
                    "p_value": sign_flip_test(difference, sessions, n_bootstrap, rng) if group is not baseline else 1.0,
                    "train_events_per_second": group.train_events_per_second,
                    "eval_events_per_second": group.eval_events_per_second, "kl_to_truth": group.kl})
    if oracle is not None:
        for metric in metrics:
            for k in ks:
                values = event_values(oracle, metric, k)
                low, high = session_bootstrap(values, sessions, n_bootstrap, rng)
                rows.append({"model": "oracle", "head": "truth", "metric": metric, "k": k, "value": float(values.mean()),
                             "ci_low": low, "ci_high": high, "kl_to_truth": 0.0, "n_seeds": 1})
    metrics_table = pd.DataFrame(rows).astype({"hidden_dim": "Int64", "n_experts": "Int64", "n_seeds": "Int64"})
    breakdown, grid = _breakdowns(groups, dataset, held_out, events, models[0], max(ks), metrics, n_bins)
    summary = {
        "library_version": __version__, "threads": torch.get_num_threads(), "split": split,
        "n_events": int(len(events)),
        "n_sessions": int(len(np.unique(sessions))),
        "baseline": baseline.label, "seed": seed, "n_bootstrap": n_bootstrap, "ties": "conservative",
        "models": [{"label": g.label, "checkpoints": g.paths, "n_seeds": len(g.ranks), "head": g.config["head"],
                    "hidden_dim": g.config["hidden_dim"], "n_experts": g.config["n_experts"],
                    "train_events_per_second": g.train_events_per_second,
                    "eval_events_per_second": g.eval_events_per_second, "kl_to_truth": g.kl,
                    "epochs": [e["epoch"] for e in g.epochs], "epochs_trained": [e["epochs_trained"] for e in g.epochs],
                    "select_metric": g.epochs[0]["select_metric"], "health": g.health_summary(),
                    "tuning": g.tuning,
                    **{f"{r['metric']}@{r['k']}": r["value"] for r in rows if r["model"] == g.label},
                    **{f"diff_{r['metric']}@{r['k']}": r["diff_vs_baseline"] for r in rows if r["model"] == g.label},
                    **{f"p_{r['metric']}@{r['k']}": r["p_value"] for r in rows if r["model"] == g.label}}
                   for g in groups],
        "oracle": None if oracle is None else {f"{r['metric']}@{r['k']}": r["value"] for r in rows
                                               if r["model"] == "oracle"},
    }
    summary["fairness"] = fairness_warnings(groups)
    return {"summary": summary, "metrics": metrics_table, "breakdown": breakdown, "grid": grid,
            "health": health_table(groups)}


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


@torch.no_grad()
def _breakdowns(groups, dataset, split, events, baseline_model, k, metrics, n_bins):
    """Tidy per-bin metrics, and the support × diversity grid of relative gain (vs the baseline)."""
    sessions, positions, targets = events.T
    previous = split.items[split.offsets[sessions] + positions - 1].astype(np.int64)
    embedding = (baseline_model.input_embedding.weight if baseline_model.input_embedding is not None
                 else baseline_model.head.item_weight).detach().double().cpu()
    cosine = torch.nn.functional.cosine_similarity(embedding[previous], embedding[targets], dim=1).numpy()
    distinct = np.array([len(np.unique(split.session(s)[:p])) for s, p in zip(sessions, positions)])
    bins = {"support": quantile_bins(dataset.support[targets], n_bins),
            "diversity": quantile_bins(1.0 - cosine, n_bins),
            "distinct_items": quantile_bins(distinct, n_bins)}
    baseline = groups[0]
    rows = []
    for name, (codes, labels) in bins.items():
        for code, interval in enumerate(labels):
            inside = codes == code
            for metric in metrics:
                base_value = baseline.event_values(metric, k)[inside].mean()
                for group in groups:
                    value = group.event_values(metric, k)[inside].mean()
                    rows.append({"breakdown": name, "bin": str(interval), "bin_index": code,
                                 "n_events": int(inside.sum()), "model": group.label, "metric": metric, "k": k,
                                 "value": float(value),
                                 "relative_gain": float(value / base_value - 1) if base_value > 0 else None})
    grid = []
    (support_codes, support_labels), (diversity_codes, diversity_labels) = bins["support"], bins["diversity"]
    for s_code, s_bin in enumerate(support_labels):
        for d_code, d_bin in enumerate(diversity_labels):
            inside = (support_codes == s_code) & (diversity_codes == d_code)
            for group in groups[1:]:
                for metric in metrics:
                    base_value = baseline.event_values(metric, k)[inside].mean() if inside.any() else np.nan
                    value = group.event_values(metric, k)[inside].mean() if inside.any() else np.nan
                    grid.append({"support_bin": str(s_bin), "support_index": s_code, "diversity_bin": str(d_bin),
                                 "diversity_index": d_code, "n_events": int(inside.sum()), "model": group.label,
                                 "metric": metric, "k": k, "value": float(value),
                                 "relative_gain": float(value / base_value - 1) if base_value > 0 else None})
    return pd.DataFrame(rows), pd.DataFrame(grid)


def write_outputs(out: Path, result: dict, min_cell_events: int = 30) -> None:
    from . import plots  # matplotlib only when pictures are asked for

    summary, table, grid = result["summary"], result["metrics"], result["grid"]
    k = int(table["k"].max())
    writers = {"compare.json": lambda f: f.write_text(json.dumps(summary, indent=2) + "\n"),
               "metrics.csv": lambda f: table.to_csv(f, index=False),
               "health.csv": lambda f: result["health"].to_csv(f, index=False),
               "breakdown.csv": lambda f: pd.concat([result["breakdown"], grid.assign(breakdown="support×diversity")],
                                                    ignore_index=True).to_csv(f, index=False),
               "metrics.png": lambda f: plots.save(plots.plot_metric_bars(table[table["k"] == k]).figure, f)}
    first_metric = table["metric"].iloc[0]
    for model in (grid["model"].unique() if len(grid) else []):
        cells = grid[(grid["model"] == model) & (grid["metric"] == first_metric)]
        title = f"{model} vs {summary['baseline']}: relative {first_metric}@{k} gain"
        writers[f"gain_heatmap_{_slug(model)}.png"] = (
            lambda cells, title: lambda f: plots.save(plots.plot_gain_heatmap(
                cells, min_events=min_cell_events, title=title).figure, f))(cells, title)
    write_files(out, writers)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _print(result: dict) -> None:
    summary, table = result["summary"], result["metrics"]
    for warning in summary["fairness"]:
        print(f"warning: not a fair comparison yet: {warning}", file=sys.stderr)
    print(f"{summary['n_events']:,} {summary['split']} events in {summary['n_sessions']:,} sessions; baseline "
          f"{summary['baseline']}; 95 % CIs resample sessions ({summary['n_bootstrap']} replicates)")
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutation test")
    parser.add_argument("--out", type=Path, help="folder for metrics.csv, breakdown.csv, compare.json, PNGs")
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        set_threads(args.threads)
        if args.out:
            check_output_dir(args.out, "--out")  # before the work, not after it
        ks = check_cutoffs(args.k)
        if args.n_bootstrap < 100 or args.bins < 1:
            raise InputError("--n-bootstrap must be >= 100 and --bins >= 1")
        result = compare(args.checkpoint, data=args.data, split=args.split, ks=ks,
                         metrics=tuple(args.metrics), n_bootstrap=args.n_bootstrap, seed=args.seed, n_bins=args.bins,
                         device=resolve_device(args.device))
        if args.out:
            write_outputs(args.out, result, args.min_cell_events)
        if args.json:
            print(json.dumps(result["summary"]))
        else:
            _print(result)
            if args.out:
                print(f"\nwrote {args.out}/compare.json, metrics.csv, health.csv, breakdown.csv and PNGs")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
