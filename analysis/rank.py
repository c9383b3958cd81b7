"""Numerical rank of a model's context × item log-probability matrix: ``python -m analysis.rank``.

Examples (the first two take seconds on a laptop CPU)::

    python -m softmax_bottleneck.prepare --synthetic --out prepared/synthetic
    python -m softmax_bottleneck.train --data prepared/synthetic --out runs/softmax.pt --hidden-dim 16 --epochs 2
    python -m softmax_bottleneck.train --data prepared/synthetic --out runs/mos.pt --hidden-dim 16 --head mos --epochs 2
    python -m analysis.rank --checkpoint runs/softmax.pt --checkpoint runs/mos.pt --out results/rank
    python -m analysis.rank --checkpoint runs/mos.pt --max-contexts 1024 --seed 3 --json
    python -m analysis.rank --checkpoint official/model.pt --data prepared/ml-100k   # an official GRU4Rec file
    torchrun --standalone --nproc-per-node 2 -m analysis.rank --checkpoint runs/mos.pt --out results/rank-2

Rows are held-out session prefixes (``--max-contexts`` of them, sampled with ``--seed``; several
checkpoints get the same prefixes), columns all items, entries exact float64 log-probabilities.
The rank is ``np.linalg.matrix_rank``'s: singular values above σ_max·max(N, M)·eps, or above
``--tol`` / σ_max·``--rtol``. A softmax head's rank is capped at d+1 (d+2 with item bias); MoS
has no such cap. On the synthetic world the *true* log-prob matrix of the same contexts is
analysed too. ``--out`` writes rank.json, spectrum.csv and spectrum.png (with ``--expressive``, also
expressive.csv and expressive.png). Under ``torchrun`` the
ranks share the log-probabilities, the Gram matrix's panels and the expressive fits, and rank 0
writes the same files as one process, byte for byte (``analysis.sharded``).

Library use: ``analysis.engines.singular_values(matrix)`` and ``numerical_rank(matrix, tol=None,
rtol=None)`` accept a NumPy array (or a block source) and choose an engine;
``analysis.rank_report.analyse(checkpoints, ...)`` is this command without the files.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from softmax_bottleneck.cli import ArgumentParser, add_heldout_arguments, checkpoint_sources, resolve_device
from softmax_bottleneck.errors import InputError

from .outputs import run_analysis

ENGINES = ("auto", "factored", "direct", "gram")  # analysis.engines.ENGINES, named here without importing it


def check_threshold(tol: float | None = None, rtol: float | None = None) -> None:
    """A rank threshold that means something: `tol` a finite number ≥ 0, `rtol` in [0, 1) (at 1 or above
    no singular value passes and every matrix has rank 0; a negative one counts every σ)."""
    if tol is not None and rtol is not None:
        raise InputError("give {tol} or {rtol}, not both", "tol", "rtol")
    if tol is not None and not (math.isfinite(tol) and tol >= 0):
        raise InputError(f"{{tol}} must be a finite number >= 0, got {tol}", "tol")
    if rtol is not None and not (math.isfinite(rtol) and 0 <= rtol < 1):
        raise InputError(f"{{rtol}} must be in [0, 1), got {rtol}", "rtol")


# The rank-analysis contract (DESIGN.md): analysis.rank.singular_values and numerical_rank. They are
# loaded on first use, so that the command answers its flags before numpy, scipy and torch load.
_LIBRARY = {"singular_values": "engines", "numerical_rank": "engines", "compute_spectra": "engines",
            "rank_report": "rank_report", "analyse": "rank_report"}


def __getattr__(name: str):
    if name not in _LIBRARY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{_LIBRARY[name]}"), name)


def print_table(result: dict) -> None:
    distinct = result.get("n_distinct_contexts")
    print(f"{result['n_contexts']:,} {result['split']} contexts (seed {result['seed']}) × {result['n_items']:,} items"
          + (f"; {distinct:,} distinct prefixes, the most any rank here can be" if distinct is not None else ""))
    header = f"{'matrix':22s} {'cap':>5s} {'rank':>6s} {'centred':>7s} {'eff.rank':>9s} {'stable':>7s} " \
             f"{'energy>cap':>10s}  engine"
    print(header)
    for row in result["models"] + ([result["truth"]] if result["truth"] else []):
        cap = "-" if row.get("rank_cap") is None else str(row["rank_cap"])
        energy = "-" if row["energy_beyond_cap"] is None else f"{row['energy_beyond_cap']:.2e}"
        print(f"{row['label']:22s} {cap:>5s} {row['rank']:6d} {row['centred']['rank']:7d} "
              f"{row['effective_rank']:9.1f} {row['stable_rank']:7.2f} {energy:>10s}  {row['engine']}"
              + (f" ({row['refined_values']} refined)" if row["refined_values"] else ""))
    print("collapse (Information Abundance ‖σ‖₁/‖σ‖∞ and effective rank, of the width):")
    for row in result["models"]:
        if row.get("embedding"):
            w, h = row["embedding"]["item_matrix"], row["embedding"]["hidden_states"]
            line = (f"  {row['label']:20s} item matrix W: IA {w['information_abundance']:6.2f}, eff. rank "
                    f"{w['effective_rank']:6.2f} of {w['width']}; hidden states: IA {h['information_abundance']:6.2f}, "
                    f"eff. rank {h['effective_rank']:6.2f} of {h['width']}")
            if "experts" in row["embedding"]:
                line += "; expert states IA " + ", ".join(f"{e['states']['information_abundance']:.2f}"
                                                         for e in row["embedding"]["experts"])
            print(line)
    for row in result["models"]:
        if row.get("foreign"):
            from softmax_bottleneck.foreign.adapter import describe_foreign

            print(f"{row['label']}: {describe_foreign(row['foreign'])}")
    for row in result["models"]:
        if row.get("expressive"):
            e = row["expressive"]
            overlap = f"overlap@{e['k']}"
            shown = ", ".join(f"r={s['r']}: KL {s['kl']:.4f}, top-{e['k']} {s[overlap]:.3f}" for s in e["sweep"])
            rank = e["expressive_rank"] if e["expressive_rank"] is not None else f"> {e['sweep'][-1]['r']}"
            print(f"{row['label']}: expressive rank {rank} (KL ≤ {e['eps']:g}, top-{e['k']} overlap ≥ {e['min_overlap']:g}; "
                  f"KL is an upper bound) — {shown}")
    first = result["models"][0]
    print(f"threshold: {first['threshold']:.3e} (σ_max·max(N, M)·eps unless --tol/--rtol); "
          f"rank vs N: " + ", ".join(f"{r['n']}→{r['rank']}" for r in first["rank_vs_n"]))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.rank", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, action="extend", nargs="+", required=True, metavar="CKPT",
                        help="trained models, several per flag or the flag repeated, analysed on the same contexts")
    parser.add_argument("--max-contexts", type=int, help="sample this many prefixes (default: all, at most 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the context sample")
    parser.add_argument("--engine", default="auto", choices=ENGINES, help="how to get the singular values")
    parser.add_argument("--tol", type=float, help="absolute threshold (as np.linalg.matrix_rank's tol)")
    parser.add_argument("--rtol", type=float, help="threshold relative to σ_max (as matrix_rank's rtol)")
    parser.add_argument("--block-size", type=int, default=2048, help="rows/columns computed at a time")
    rank_that_matters = parser.add_argument_group(
        "the expressive rank: the smallest r whose fitted rank-r softmax reproduces the model within --kl-eps nats "
        "and --min-overlap of its top 20 (an upper bound: a fit)")
    rank_that_matters.add_argument("--expressive", type=int, nargs="+", metavar="R",
                                   help="the sweep of r, e.g. 8 16 32 64 128 (off by default: a fit per r)")
    rank_that_matters.add_argument("--kl-eps", type=float, default=0.01, metavar="NATS", help="default: 0.01")
    rank_that_matters.add_argument("--min-overlap", type=float, default=0.99, metavar="F", help="default: 0.99")
    rank_that_matters.add_argument("--expressive-steps", type=int, default=300, metavar="N",
                                   help="Adam steps polishing each SVD start (default: 300; 0: the SVD start alone)")
    parser.add_argument("--out", type=Path, help="folder for rank.json, spectrum.csv, spectrum.png")
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def check() -> None:
        check_threshold(args.tol, args.rtol)
        if args.expressive is not None:
            from .expressive import check_sweep  # numpy only

            check_sweep(args.expressive, None, args.kl_eps, args.min_overlap)
            if args.expressive_steps < 0:
                raise InputError(f"--expressive-steps must be >= 0, got {args.expressive_steps}")
        if args.max_contexts is not None and args.max_contexts < 1:
            raise InputError(f"--max-contexts must be >= 1, got {args.max_contexts}")
        if args.block_size < 1:
            raise InputError(f"--block-size must be >= 1, got {args.block_size}")

    def compute(_) -> tuple[dict, list]:
        from .rank_report import analyse

        expressive = None if args.expressive is None else {
            "ranks": args.expressive, "eps": args.kl_eps, "overlap": args.min_overlap, "steps": args.expressive_steps,
            "seed": args.seed}
        result, spectra = analyse(args.checkpoint, data=args.data, split=args.split,
                                  max_contexts=args.max_contexts, seed=args.seed, engine=args.engine, tol=args.tol,
                                  rtol=args.rtol, block_size=args.block_size, device=resolve_device(args.device),
                                  expressive=expressive, **checkpoint_sources(args))
        if len(result["models"]) == 1:  # one model: its numbers at the top level
            result = {**result, **{k: v for k, v in result["models"][0].items() if k != "label"}}
        return result, spectra

    def write(out: Path, both: tuple[dict, list]) -> None:
        from .rank_report import write_outputs

        write_outputs(out, *both)

    return run_analysis(args, check, compute, summary=lambda both: both[0], write=write,
                        show=lambda both: print_table(both[0]),
                        files="rank.json, spectrum.csv, spectrum.png" + (", expressive.csv, expressive.png"
                                                                          if args.expressive else ""),
                        sharded=True)


if __name__ == "__main__":
    sys.exit(main())
