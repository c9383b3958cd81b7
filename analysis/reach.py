"""Reachability audit: which items can a head never recommend? ``python -m analysis.reach``.

Top-1 verdicts for a softmax head come from :mod:`analysis.argmax` (a witness state in the box
of GRU outputs, or a certificate that no state there ranks the item first). "Reachable" means
reachable somewhere in the box, which is necessary, not sufficient: an item is rankable first by
the trained model *only if* it is reachable in the box. The count is split by witness: a held-out
context (a state the trained GRU did produce) or a box state only (a corner, a random or searched
state, an LP point: no session may ever reach it). Whether the GRU produces such states is what
the empirical audit measures: for every held-out context, which items are in the top k (``--k``,
default 1 5 10 20; ties conservative, an item tied at the boundary is out).

Mixture of softmaxes. A mixture can rank first an item that no expert ranks first (see the
tests). But the certificate does carry over, when the experts share W and b and their
states lie in the box (``tanh(Q_k h)`` does): with λ from the certificate, Jensen's inequality
gives ``exp l_i(h) ≤ e^{−gap} Σ λ_j exp l_j(h)`` at every h in the box, so every expert has
``p_k(i) < Σ λ_j p_k(j)`` and so has the mixture: ``p(i) < Σ λ_j p(j) ≤ max_j p(j)``. MoS items are
therefore ``unreachable`` by the same LP over the shared W, ``reachable`` only by a witness of the
whole mixture (a held-out context or a random head input in the box), and ``undecided`` otherwise.

Example::

    python -m analysis.reach --checkpoint runs/softmax.pt --checkpoint runs/mos.pt --out runs/reach
"""

from __future__ import annotations

import sys
from pathlib import Path

from softmax_bottleneck.cli import (ArgumentParser, add_cutoffs_argument, add_heldout_arguments, check_cutoffs,
                                    checkpoint_sources, resolve_device)
from softmax_bottleneck.errors import InputError

from .outputs import run_analysis


def print_summary(summary: dict) -> None:
    ks = summary["ks"]
    print(f"{summary['n_items']:,} items, {summary['n_contexts']:,} {summary['split']} contexts, "
          f"{summary['n_random']:,} random box states")
    print(f"{'model':18s} {'reachable (context/box only)':>28s} {'unreach.':>8s} {'tie':>4s} {'undecided':>9s} "
          f"{'in top-10% supp.':>16s}  " + "  ".join(f"{'cov@' + str(k):>7s}" for k in ks) + "   LP items  time")
    for m in summary["models"]:
        reachable = (f"{m.get('reachable', 0)} ({m['reachable_by_a_held_out_context']}/"
                     f"{m['reachable_by_a_box_state_only']})")
        print(f"{m['label']:18s} {reachable:>28s} {m.get('unreachable', 0):8d} {m.get('tie', 0):4d} {m.get('undecided', 0):9d} "
              f"{m['unreachable_in_top_decile_support']:16d}  " + "  ".join(f"{m['coverage'][str(k)]:7.3f}" for k in ks)
              + (f"   {m['lp_items']:8d}" if m["certificate"] else f"   {'-':>8s}")
              + f"  {(m['certificate_seconds'] or 0) + m['scan_seconds']:.1f} s")
    for m in summary["models"]:
        if not m["certificate"]:
            print(f"{m['label']}: no top-1 certificate for this head; items are reachable (a witness) or undecided")
        if m["most_frequent_unreachable"]:
            shown = ", ".join(f"{x['item']} (support {x['support']}, #{x['support_rank']})"
                              for x in m["most_frequent_unreachable"][:5])
            print(f"{m['label']}: most frequent unreachable items: {shown}")
    pairs: dict[tuple[str, str], list[str]] = {}
    for diff in summary["differences"]:
        pairs.setdefault((diff["a"], diff["b"]), []).append(f"top-{diff['k']} {diff['only_a']}/{diff['only_b']}")
    for (a, b), parts in pairs.items():
        print(f"items in some context's top k only under {a} / only under {b}: {', '.join(parts)}")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.reach", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, action="extend", nargs="+", required=True, metavar="CKPT",
                        help="trained models, several per flag or the flag repeated, audited on the same contexts")
    add_cutoffs_argument(parser)  # the empirical top-k audit; the certificate itself is for top-1
    parser.add_argument("--max-contexts", type=int, help="sample this many held-out contexts (default: all)")
    parser.add_argument("--n-random", type=int, default=4096, help="random box states tried before the LP (default: 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the context sample and the random states")
    parser.add_argument("--out", type=Path, help="folder for reach.csv, reach.json, reach.png")
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def check() -> tuple[int, ...]:
        if args.max_contexts is not None and args.max_contexts < 1:
            raise InputError(f"--max-contexts must be >= 1, got {args.max_contexts}")
        if args.n_random < 0:
            raise InputError(f"--n-random must be >= 0, got {args.n_random}")
        return check_cutoffs(args.k)

    def compute(ks: tuple[int, ...]) -> tuple:
        from .reachability import audit

        return audit(args.checkpoint, data=args.data, split=args.split, ks=ks, max_contexts=args.max_contexts,
                     n_random=args.n_random, seed=args.seed, device=resolve_device(args.device),
                     progress=not args.json, **checkpoint_sources(args))

    def write(out: Path, both: tuple) -> None:
        from .reachability import write_outputs

        write_outputs(out, *both)

    return run_analysis(args, check, compute, summary=lambda both: both[1], write=write,
                        show=lambda both: print_summary(both[1]), files="reach.csv, reach.json, reach.png")


if __name__ == "__main__":
    sys.exit(main())
