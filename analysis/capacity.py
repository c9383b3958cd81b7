"""What a head cannot express, and what else a trained model misses: ``python -m analysis.capacity``.

On the synthetic world the truth is known, so the gap of a trained model to the oracle splits in
two. **Capacity**: the best head of the family (softmax, MoS with K experts, sigsoftmax or MoL) at size d,
fitted to the true next-item distributions of the held-out contexts themselves — no GRU, no
sampled data: every context gets a free state vector h, and the head's own parameters (item
factors, bias; for MoS the prior and the projections) are free too. (A GRU's output lies in the
box (−1, 1)^d, but both families see h only through a free linear map — h·Wᵀ, and Q_k·h, P·h for
MoS — so rescaling h into the box and the map by the inverse factor gives the same head: free
states lose no generality and condition the fit better.) The fit minimises the context-weighted
mean KL(truth ‖ head), full batch, by Adam (lr 0.05, cosine-decayed over ``--steps``; the first
80 % of the steps in float32, the rest and the reported KL in float64) from ``--restarts``
seeded starts, keeping the best; a MoS fit runs one more start from the fitted softmax of the
same d, which a mixture contains, so its bound is never looser than the softmax's (cold starts
alone stopped at 0.072 nats against the softmax's 0.016 on a dial world at d = 8; from the
softmax the MoS fit reached 0.014). (Adam, not L-BFGS: on 1,024 contexts × 500 items at d = 16,
3,000 Adam steps reached KL 0.0064 for MoS K=4 where 1,500 L-BFGS iterations stopped at 0.0217,
and were level for softmax; see benchmarks/capacity_speed.py.) A fit finds a
head, not the best one, so its KL is an **upper bound** on the family's best achievable KL.
**Residual**: how much further a trained model (``--checkpoint``) falls on the same contexts. It is
not all learning: it also holds what the GRU encoder cannot represent (the fit's states are free,
a GRU's are a function of the prefix), finite data (the model saw samples, not the truth) and the
sampled training loss. A checkpoint must belong to the fitted family (head, d, K, item bias, MoL's
sizes): another family's gaps would compare it with a fit it is not part of, so it is refused.

Per row (oracle | best-fit head | each checkpoint): KL(truth ‖ model); the expected Recall@K and
MRR@K under the true distribution (the true probability mass of the model's top K, and the mass
weighted by 1/rank); the numerical rank of its log-prob matrix. For a checkpoint: the capacity
gap (the fit's KL) and the residual gap (its KL minus the fit's).

The world is first-order (the truth depends on the previous item only), so contexts with the same
previous item share one fitted state: the best any head could do with a state per context.

Examples::

    python -m softmax_bottleneck.prepare --synthetic --low-rank 8 --sparse-weight 2 --out prepared/dial
    python -m analysis.capacity --data prepared/dial --head softmax --hidden-dim 8 --json
    python -m softmax_bottleneck.train --data prepared/dial --head mos --n-experts 4 --hidden-dim 8 --epochs 3 \\
        --out runs/mos-d8.pt
    python -m analysis.capacity --data prepared/dial --head mos --n-experts 4 --hidden-dim 8 \\
        --checkpoint runs/mos-d8.pt --out results/capacity
    # real data has no truth: fit the heads to a strong model's predictions instead
    python -m analysis.capacity --teacher runs/mos-K4-s0.pt --head softmax --hidden-dim 32 \\
        --checkpoint runs/softmax-d32-s0.pt --out results/capacity-teacher

With ``--teacher CKPT`` the trained model stands in for the truth: each held-out context is its own row,
the fit is the best head of the family and size for the teacher's distributions, and a checkpoint's
KL is KL(teacher ‖ checkpoint). That asks what a softmax of size d could take over from a strong
model, on a catalogue with no known truth.
"""

from __future__ import annotations

import sys
from pathlib import Path

from softmax_bottleneck.cli import (ArgumentParser, add_cutoffs_argument, add_heldout_arguments, check_cutoffs,
                                    checkpoint_sources, fields_as_flags, resolve_device)
from softmax_bottleneck.config import HEADS, ModelConfig
from softmax_bottleneck.errors import InputError

from .outputs import run_analysis

# The fit is thousands of mid-sized elementwise steps: two threads are 1.3× as fast on an idle
# 2-core machine, but beside one busy process 2.2× slower than one (12.7 s against 28.0 s for a
# softmax fit of the dial world at d = 8), and in the study's 13 fits more than 5× slower. One it is.
CAPACITY_THREADS = 1


def print_summary(summary: dict) -> None:
    from .capacity_fit import UPPER_BOUND

    k = max(summary["ks"])
    reference = "truth" if summary.get("teacher") is None else "teacher"
    where = (f"({summary['n_distinct_contexts']} distinct previous items)" if reference == "truth"
             else f"(the teacher: {summary['teacher']})")
    print(f"{summary['n_contexts']:,} {summary['split']} contexts {where} × {summary['n_items']:,} items; the fit's KL "
          f"is {UPPER_BOUND}")
    print(f"{'model':28s} {'KL(' + reference + '‖model)':>17s} {'E[recall@' + str(k) + ']':>15s} {'E[mrr@' + str(k) + ']':>12s} "
          f"{'rank':>6s} {'capacity gap':>13s} {'residual gap':>13s}")
    for r in summary["rows"]:
        gaps = (f"{r['capacity_gap']:13.4f} {r['residual_gap']:13.4f}" if "capacity_gap" in r else "")
        print(f"{r['model']:28s} {r['kl']:15.4f} {r[f'expected_recall@{k}']:15.4f} {r[f'expected_mrr@{k}']:12.4f} "
              f"{r['rank']:6d} {gaps}")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.capacity", description=__doc__)
    parser.add_argument("--head", required=True, choices=HEADS, help="the head family to fit")
    parser.add_argument("--hidden-dim", type=int, required=True, metavar="D", help="its size d")
    parser.add_argument("--n-experts", type=int, metavar="K", help="MoS experts (default 4; softmax: 1)")
    parser.add_argument("--no-item-bias", action="store_true", help="fit the head without an item bias")
    mol = parser.add_argument_group("MoL's sizes (default: train's defaults)")
    for name, kind in (("mol_context_components", int), ("mol_item_components", int), ("mol_dim", int),
                       ("mol_temperature", float)):
        mol.add_argument("--" + name.replace("_", "-"), type=kind, metavar="X")
    parser.add_argument("--checkpoint", type=Path, action="extend", nargs="+", default=[], metavar="CKPT",
                        help="trained models to split into capacity and residual gaps (same data)")
    parser.add_argument("--teacher", type=Path, metavar="CKPT",
                        help="on real data: a strong model whose predictions stand in for the truth (the fit and "
                             "every KL are against it)")
    parser.add_argument("--max-contexts", type=int, default=1024, help="held-out contexts sampled (default: 1024)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the context sample and the fit's starts")
    parser.add_argument("--restarts", type=int, default=2, help="seeded starts of the fit; the best is kept (default: 2)")
    parser.add_argument("--steps", type=int, default=1500, help="full-batch Adam steps per start (default: 1500)")
    add_cutoffs_argument(parser)
    parser.add_argument("--out", type=Path, help="folder for capacity.json, capacity.csv, capacity.png")
    add_heldout_arguments(parser, threads=CAPACITY_THREADS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def check() -> tuple[ModelConfig, tuple[int, ...]]:
        for flag, value, least in (("--max-contexts", args.max_contexts, 1), ("--restarts", args.restarts, 1),
                                   ("--steps", args.steps, 1), ("--hidden-dim", args.hidden_dim, 1)):
            if value < least:
                raise InputError(f"{flag} must be >= {least}, got {value}")
        try:
            mol = {name: getattr(args, name) for name in ("mol_context_components", "mol_item_components", "mol_dim",
                                                          "mol_temperature") if getattr(args, name) is not None}
            if mol and args.head != "mol":
                raise InputError(f"--{next(iter(mol)).replace('_', '-')} is for --head mol")
            config = ModelConfig(head=args.head, hidden_dim=args.hidden_dim, n_experts=args.n_experts,
                                 item_bias=not args.no_item_bias, **mol)
        except ValueError as err:
            raise InputError(fields_as_flags(str(err), list(mol) + ["n_experts", "hidden_dim"])) from None
        return config, check_cutoffs(args.k)

    def compute(checked: tuple[ModelConfig, tuple[int, ...]]) -> dict:
        from .capacity_fit import capacity

        config, ks = checked
        return capacity(config, data=args.data, checkpoints=args.checkpoint, split=args.split,
                        max_contexts=args.max_contexts, seed=args.seed, restarts=args.restarts,
                        steps=args.steps, ks=ks, device=resolve_device(args.device), teacher=args.teacher,
                        **checkpoint_sources(args))

    def write(out: Path, summary: dict) -> None:
        from .capacity_fit import write_outputs

        write_outputs(out, summary)

    return run_analysis(args, check, compute, summary=lambda s: s, write=write, show=print_summary,
                        files="capacity.json, capacity.csv, capacity.png")


if __name__ == "__main__":
    sys.exit(main())
