"""The MoS head's mix of its experts: ``heads.log_mix`` against ``torch.logsumexp(dim=-2)``, forward and backward.

    python benchmarks/log_mix_speed.py                       # 1,024 contexts × 4 experts × 20,000 items
    python benchmarks/log_mix_speed.py --items 60000 --repeats 3

The capacity fit's MoS steps, and MoS training and evaluation, mix K experts' log-probabilities over a
(contexts, K, items) tensor. Both functions give the same values and gradient (tests/test_heads.py);
this prints their medians over --repeats, in float32 and float64, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softmax_bottleneck.heads import log_mix  # noqa: E402


def seconds(mix, x: torch.Tensor, grad: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first run is a warm-up
        leaf = x.detach().requires_grad_(True)
        began = time.perf_counter()
        mix(leaf).backward(grad)
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"{args.contexts:,} contexts × {args.experts} experts × {args.items:,} items, forward + backward, "
          f"{args.threads} threads, median of {args.repeats}")
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(args.contexts, args.experts, args.items, generator=generator).to(dtype)
        grad = torch.randn(args.contexts, args.items, generator=generator).to(dtype)
        theirs = seconds(lambda t: torch.logsumexp(t, dim=-2), x, grad, args.repeats)
        mine = seconds(log_mix, x, grad, args.repeats)
        print(f"{str(dtype).removeprefix('torch.'):8s} torch.logsumexp {theirs:6.3f} s   log_mix {mine:6.3f} s   "
              f"{theirs / mine:4.2f}× faster")


if __name__ == "__main__":
    main()
