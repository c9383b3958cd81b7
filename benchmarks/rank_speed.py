"""Speed and memory of the rank report against materialising the matrix and calling np.linalg.matrix_rank.

    python benchmarks/rank_speed.py                          # 4,096 contexts × 20,000 items (a few minutes)
    python benchmarks/rank_speed.py --contexts 1024 --items 5000      # a quick look

Heads with trained-like scales (logit spread of a few nats, d=64, MoS with K=4) are built from a
fixed seed; the contexts are tanh states. Each contender runs in its own subprocess, so its peak
resident memory (ru_maxrss) is its own; times are medians over --repeats. Printed: time and peak
memory of the baseline (dense float64 log-prob matrix + np.linalg.matrix_rank) and of the full
report of ``analysis.rank`` (rank, centred rank, threshold sweep, effective/stable rank, rank at
N = 64 … 4,096), their ratios, whether the ranks agree, the report's time per step (log-probs,
Gram products, eigenvalues), and the GFLOP/s of the Gram accumulation next to a plain float64
matmul on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, {repo!r})
from analysis.logprobs import LogProbMatrix
from analysis.rank_report import rank_report
from softmax_bottleneck.heads import build_head

def make(kind, n_contexts, n_items, device, dim=64, experts=4):
    generator = torch.Generator().manual_seed(0)
    head = build_head(kind, n_items, dim, True, experts if kind == "mos" else 1).double()
    with torch.no_grad():
        for name, param in head.named_parameters():
            param.normal_(0.0, 1.0, generator=generator)
            param.mul_(0.3 if name == "item_bias" else 2.5 / dim ** 0.5)
    hidden = torch.tanh(torch.randn(n_contexts, dim, generator=generator, dtype=torch.float64) * 1.5)
    return LogProbMatrix(head, hidden.numpy(), device=device)

kind, mode, n_contexts, n_items, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
matrix = make(kind, n_contexts, n_items, device)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "baseline":
    dense = matrix.dense()
    result = {{"rank": int(np.linalg.matrix_rank(dense))}}
else:
    timings = {{}}
    report, _ = rank_report(matrix, cap=matrix.head.rank_cap, reference_cap=66, timings=timings)
    result = {{"rank": report["rank"], "engine": report["engine"], "refined": report["refined_values"],
              "centred_rank": report["centred"]["rank"], "timings": timings}}
result["seconds"] = time.perf_counter() - start
result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""

FLOPS = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from analysis.gram import add_upper_gram
n, m, b = int(sys.argv[1]), int(sys.argv[2]), 2048
rng = np.random.default_rng(0)
blocks = [rng.standard_normal((n, min(b, m - s))) for s in range(0, m, b)]
gram = np.zeros((n, n))
t0 = time.perf_counter()
for block in blocks:
    add_upper_gram(gram, block)
gram_s = time.perf_counter() - t0
x, y = rng.standard_normal((n, m)), rng.standard_normal((m, n))
t0 = time.perf_counter()
x @ y
matmul_s = time.perf_counter() - t0
print(json.dumps({{"gram_gflops": n * n * m / gram_s / 1e9, "matmul_gflops": 2 * n * n * m / matmul_s / 1e9}}))
"""


def run(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=4096)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender (medians reported)")
    parser.add_argument("--heads", nargs="+", default=["mos", "softmax"])
    parser.add_argument("--device", default="cpu", help="where the report runs (cpu or cuda); the baseline is numpy's, "
                        "on the CPU, always")
    args = parser.parse_args()
    repo = str(Path(__file__).resolve().parents[1])
    child = CHILD.format(repo=repo)
    print(f"{args.contexts:,} contexts × {args.items:,} items, d=64, MoS K=4; medians of {args.repeats}; the report "
          f"on {args.device}", flush=True)
    for kind in args.heads:
        results = {}
        for mode in ("baseline", "report"):
            runs = [run(child, kind, mode, args.contexts, args.items, args.device) for _ in range(args.repeats)]
            results[mode] = {**runs[0], "seconds": statistics.median(r["seconds"] for r in runs),
                             "peak_mb": statistics.median(r["peak_mb"] for r in runs)}
        base, ours = results["baseline"], results["report"]
        print(f"{kind:8s} baseline (dense + matrix_rank): {base['seconds']:8.2f} s  {base['peak_mb']:7.0f} MiB peak  "
              f"rank {base['rank']}")
        print(f"{kind:8s} full report ({ours['engine']}):{'':>9s}{ours['seconds']:8.2f} s  {ours['peak_mb']:7.0f} MiB peak  "
              f"rank {ours['rank']} (centred {ours['centred_rank']}, refined {ours['refined']})")
        print(f"{kind:8s} speed-up {base['seconds'] / ours['seconds']:.1f}x, memory {ours['peak_mb'] / base['peak_mb']:.2f}x "
              f"of the baseline's peak, same rank: {base['rank'] == ours['rank']}", flush=True)
        steps = ", ".join(f"{name.replace('_', ' ')} {seconds:.2f} s" for name, seconds in ours["timings"].items())
        print(f"{kind:8s} the report's steps (first run): {steps}", flush=True)
        if "gram" in ours["timings"]:
            gram_flops = args.contexts ** 2 * args.items  # the upper triangle of A·Aᵀ
            print(f"{kind:8s} Gram products in the report: {gram_flops / ours['timings']['gram'] / 1e9:.1f} GFLOP/s; "
                  f"Gram products + eigenvalues alone take {ours['timings']['gram'] + ours['timings']['eigenvalues']:.2f} s "
                  f"(a fifth of the baseline is {base['seconds'] / 5:.2f} s)", flush=True)
    flops = run(FLOPS.format(repo=repo), args.contexts, args.items)
    print(f"Gram accumulation {flops['gram_gflops']:.1f} GFLOP/s vs plain float64 matmul {flops['matmul_gflops']:.1f} "
          "GFLOP/s on this machine")


if __name__ == "__main__":
    main()
