"""Time of the top-1 reachability certificate for a big softmax head, against the LP alone.

    python benchmarks/reach_speed.py                       # 20,000 items, d = 64 (a few minutes)
    python benchmarks/reach_speed.py --items 2000 --dim 16 # a quick look

Two heads from a fixed seed, each with a bias that falls with the log of a Zipf popularity rank
(about 8 nats from the most to the least popular item, plus noise) and item vectors
N(0, (s·2.5/√d)²): s = 1 (trained-like scales, where in a 64-dim box nearly every item can be
first) and s = 0.25 (short item vectors, so the bias decides and many items are out of reach:
the hard case for the certificate). Printed for each: the full certificate's time (median over
--repeats) and its verdicts by method; the LP alone (no filters) on --lp-sample random items,
its median time per item and the time it would take for every item; their ratio; and whether the
two agree on every sampled item.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.argmax import RELATIVE_TOL, certify_top1, logit_scale, solve_top1_lp  # noqa: E402


def make_head(n_items: int, dim: int, scale: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, scale * 2.5 / dim ** 0.5, size=(n_items, dim))
    bias = -0.8 * np.log(np.arange(1, n_items + 1)) + rng.normal(0.0, 0.5, size=n_items)
    return weight, bias


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lp-sample", type=int, default=200, help="items given to the LP alone (baseline)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.25], help="item-vector scales s")
    args = parser.parse_args(argv)
    for scale in args.scales:
        run(args, scale)


def run(args, scale: float) -> None:
    weight, bias = make_head(args.items, args.dim, scale)
    print(f"\nsoftmax head: {args.items:,} items, d = {args.dim}, item-vector scale s = {scale}, box [-1, 1]^{args.dim}")

    times, reach = [], None
    for _ in range(args.repeats):
        began = time.perf_counter()
        reach = certify_top1(weight, bias)
        times.append(time.perf_counter() - began)
    print(f"certificate (all items): median {statistics.median(times):.1f} s over {args.repeats} runs "
          f"({', '.join(f'{t:.1f}' for t in times)})")
    print(f"  verdicts: {reach.counts()}")
    print(f"  by method: {reach.method_counts()}; LP needed for {reach.n_lp:,} items ({reach.lp_rounds:,} solves)")

    tol = RELATIVE_TOL * max(logit_scale(weight, bias), 1.0)
    sample = np.random.default_rng(1).choice(args.items, size=min(args.lp_sample, args.items), replace=False)
    per_item, agree = [], 0
    for item in sample:
        began = time.perf_counter()
        status, *_ = solve_top1_lp(int(item), weight, bias, np.zeros(args.dim), tol=tol)
        per_item.append(time.perf_counter() - began)
        agree += status == reach.status[item]
    lp_all = statistics.median(per_item) * args.items
    print(f"LP alone: median {statistics.median(per_item) * 1e3:.1f} ms per item over {len(sample)} items "
          f"→ {lp_all:.0f} s for all {args.items:,} items")
    print(f"speed-up of the certificate over the LP alone: {lp_all / statistics.median(times):.1f}×")
    print(f"verdicts agree on {agree}/{len(sample)} sampled items")


if __name__ == "__main__":
    main()
