"""Cost of the expressive-rank sweep (``analysis.rank --expressive``) for one MoS model, against its floor.

    python benchmarks/expressive_speed.py                        # ML-100K's shape: 4,096 contexts × 1,339 items
    python benchmarks/expressive_speed.py --items 10000          # a 10k-item catalogue (Globo.com's)

A MoS head (K = 4, d = 64) with seeded random weights is evaluated on 4,096 random states in the
GRU's box; its float64 log-prob matrix is the teacher. The sweep is the command's default: r = 8,
16, 32, 64, 128, each an SVD start polished with 300 Adam steps (80 % float32, then float64). The
floor, measured in the same run on the same shapes: for every step of every r, the forward and
backward GEMMs of the rank-r softmax's logits (states · factorsᵀ, (contexts, r) × (r, items)) and its
log_softmax, in the step's precision; the sweep's one SVD is counted apart. Targets (issue 28): ≤ 2 minutes
on 2 cores at ML-100K's shape, ≤ 20 minutes at 10k items.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.expressive import double_centred_svd, expressive_sweep  # noqa: E402
from softmax_bottleneck.heads import build_head  # noqa: E402


def teacher(items: int, contexts: int, seed: int = 0) -> np.ndarray:
    head = build_head("mos", items, 64, True, 4).double()
    head.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        head.item_weight.mul_(8.0)  # logits of a trained model's spread, not of an initialisation's
        states = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (contexts, 64)))
        return head.log_probs(states).numpy()


def floor_seconds(contexts: int, items: int, ranks, steps: int, float64_share: float = 0.2) -> float:
    """The GEMMs and log_softmax of every step, forward and backward, timed once per (r, precision) and scaled."""
    total = 0.0
    for r in ranks:
        for dtype, share in ((torch.float32, 1 - float64_share), (torch.float64, float64_share)):
            states = torch.randn(contexts, r, dtype=dtype, requires_grad=True)
            factors = torch.randn(items, r, dtype=dtype, requires_grad=True)
            began = time.perf_counter()
            for _ in range(3):
                torch.log_softmax(states @ factors.T, dim=1).sum().backward()
            total += (time.perf_counter() - began) / 3 * round(steps * share)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1339)
    parser.add_argument("--contexts", type=int, default=4096)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log_p = teacher(args.items, args.contexts)
    began = time.perf_counter()
    double_centred_svd(log_p)  # the sweep's one SVD
    svd = time.perf_counter() - began
    times, result = [], None
    for _ in range(args.repeats):
        began = time.perf_counter()
        result = expressive_sweep(log_p, args.ranks, steps=args.steps)
        times.append(time.perf_counter() - began)
    floor = floor_seconds(args.contexts, args.items, args.ranks, args.steps)
    sweep = statistics.median(times)
    print(f"{args.contexts:,} contexts × {args.items:,} items, MoS K=4 d=64 teacher, r = {args.ranks}, "
          f"{args.steps} steps each, {args.threads} threads")
    print(f"sweep {sweep:.1f} s (median of {args.repeats}); floor: GEMMs + log_softmax of every step {floor:.1f} s, "
          f"SVD starts {svd:.1f} s; sweep / (floor + SVD) = {sweep / (floor + svd):.2f}")
    print("per r: " + ", ".join(f"r={s['r']}: KL {s['kl']:.4f}, top-20 {s['overlap@20']:.3f}" for s in result["sweep"]))


if __name__ == "__main__":
    main()
