"""Compare heads on the same held-out events, with honest statistics: ``python -m analysis.compare``.

Examples::

    python -m analysis.compare --checkpoint runs/softmax.pt --checkpoint runs/mos.pt --out results/compare
    python -m analysis.compare --checkpoint runs/softmax-s0.pt --checkpoint runs/softmax-s1.pt \\
        --checkpoint runs/mos-s0.pt --checkpoint runs/mos-s1.pt --k 5 20 --json
    python -m analysis.compare --checkpoint saved/GRU4Rec-….pth --checkpoint runs/mos-s0.pt \
        --item-map ../shared/data/ml-100k/ml-100k.inter      # a RecBole model against a native MoS

Every checkpoint ranks the same next-item events against all items (conservative ties). The first
checkpoint's configuration is the baseline. Checkpoints that differ only in their seed form one
group: its metrics are mean ± std over seeds. For each group and metric: the value and the paired
difference to the baseline, with intervals and a p-value whose unit is the head, not these trained
models: a hierarchical bootstrap draws each configuration's seeds, then whole *sessions* (events of a
session are dependent; 95 % percentile by default, ``--ci-level``, ``--ci-method``), and the p-value
inverts its interval. ``--resample sessions`` keeps the seeds fixed (per-event values averaged over
seeds, sessions resampled, a paired sign-flip test over sessions): a statement about these models
only, and what a single seed per configuration gets anyway. Welch's test over the seeds' means
stands beside it (``p_welch_over_seeds``), and Holm's adjustment over every reported difference
(``p_holm``) beside the raw p. Breakdowns: by target-item training
support, by context diversity (1 − cosine of previous and target item under the baseline's item
embeddings), by distinct items in the prefix, and the support × diversity grid of relative gain.
On the synthetic world: an oracle row (the true distribution) and each model's KL(truth ‖ model).
Health (``health.csv``, and in ``compare.json``): top-K catalogue coverage, the training support of
recommended items against the targets', and for mixtures the saturated share of expert states, the
prior's entropy and each expert's share of contexts (softmax_bottleneck.evaluation.HeadHealth); and
which epoch each checkpoint holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from softmax_bottleneck.cli import (ArgumentParser, add_cutoffs_argument, add_heldout_arguments, check_cutoffs,
                                    add_sample_arguments, check_sample_events, checkpoint_sources, resolve_device)
from softmax_bottleneck.config import METRICS
from softmax_bottleneck.errors import InputError

from .outputs import run_analysis
from .stats import CI_METHODS


def print_summary(result: dict) -> None:
    summary, table = result["summary"], result["metrics"]
    for warning in summary["fairness"]:
        print(f"warning: not a fair comparison yet: {warning}", file=sys.stderr)
    if (summary.get("resolution") or {}).get("warning"):
        print(f"warning: {summary['resolution']['warning']}", file=sys.stderr)
    if summary.get("sample"):
        sample = summary["sample"]
        print(f"a seeded sample (seed {sample['seed']}) of {sample['sessions']:,} of the split's {sample['of_sessions']:,} "
              f"sessions ({sample['events']:,} of {sample['of_events']:,} events); the intervals resample these sessions")
    print(f"{summary['n_events']:,} {summary['split']} events in {summary['n_sessions']:,} sessions; baseline "
          f"{summary['baseline']}; {summary['ci_level']:.0%} {summary['ci_method']} CIs resample "
          f"{'seeds, then sessions' if summary['resample'] == 'hierarchical' else 'sessions'} "
          f"({summary['n_bootstrap']} replicates); p_holm: {summary['multiplicity']}")
    for (metric, k), part in table.groupby(["metric", "k"], sort=False):
        print(f"\n{metric}@{k}")
        for row in part.itertuples():
            line = f"  {row.model:24s} {row.value:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}]"
            if row.model != summary["baseline"] and row.model != "oracle":
                line += (f"  diff {row.diff_vs_baseline:+.4f} [{row.diff_ci_low:+.4f}, {row.diff_ci_high:+.4f}] "
                         f"p={row.p_value:.3g} (Holm {row.p_holm:.3g})")
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
                f"{'/'.join('?' if e is None else str(e) for e in model['epochs_trained'])}; top-{k} coverage {health[f'coverage@{k}']:.1%}, "
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
        if model.get("foreign"):
            from softmax_bottleneck.foreign.adapter import describe_foreign

            print(f"  {'':24s} {describe_foreign(model['foreign'])}")


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
    parser.add_argument("--resample", default="hierarchical", choices=("hierarchical", "sessions"),
                        help="hierarchical: draw seeds, then sessions (about the heads; the default); sessions: "
                             "seeds fixed, a sign-flip test (about these trained models only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutation test")
    parser.add_argument("--out", type=Path, help="folder for metrics.csv, breakdown.csv, compare.json, PNGs")
    add_sample_arguments(parser)
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def check() -> tuple[int, ...]:
        ks = check_cutoffs(args.k)
        if args.n_bootstrap < 100 or args.bins < 1:
            raise InputError("--n-bootstrap must be >= 100 and --bins >= 1")
        check_sample_events(args.sample_events)
        if not 0 < args.ci_level < 1:
            raise InputError(f"--ci-level must be between 0 and 1, got {args.ci_level}")
        return ks

    def compute(ks: tuple[int, ...]) -> dict:
        from .comparison import compare

        return compare(args.checkpoint, data=args.data, split=args.split, ks=ks, metrics=tuple(args.metrics),
                       n_bootstrap=args.n_bootstrap, seed=args.seed, n_bins=args.bins,
                       device=resolve_device(args.device), ci_level=args.ci_level, ci_method=args.ci_method,
                       sample_events=args.sample_events, sample_seed=args.sample_seed, resample=args.resample,
                       **checkpoint_sources(args))

    def write(out: Path, result: dict) -> None:
        from .comparison import write_outputs

        write_outputs(out, result, args.min_cell_events)

    return run_analysis(args, check, compute, summary=lambda result: result["summary"], write=write,
                        show=print_summary, files="compare.json, metrics.csv, health.csv, breakdown.csv and PNGs",
                        sharded=True)


if __name__ == "__main__":
    sys.exit(main())
