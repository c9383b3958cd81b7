"""What each head costs: GRU4Rec at d = 64 on 20,000 items, every head measured in the same run.

    python benchmarks/heads_speed.py                      # all heads (a few minutes on 2 cores)
    python benchmarks/heads_speed.py --heads softmax mol --repeats 1
    python benchmarks/heads_speed.py --heads softmax mol --profile   # where each head's training time goes

For each head, in a fresh process (one torch thread, as training runs): training events/s with
sampled softmax as GRU4Rec trains (batch 32, 2,048 shared negatives ∝ support^0.5 with logQ,
Adagrad with momentum; random item sequences with Zipf-like support), full-ranking evaluation
events/s (a batch of 512 states scored against all items, each target's rank with conservative
ties), and the process's peak memory. Printed as medians over --repeats and as ratios to softmax.
``--profile`` instead runs the training steps once under torch.profiler and prints, per head, the
operators that take the most of its own time (forward and backward), as ms per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADS = ("softmax", "mos", "sigsoftmax", "mol")

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from softmax_bottleneck.config import ModelConfig, TrainConfig
from softmax_bottleneck.metrics import target_ranks
from softmax_bottleneck.model import GRU4Rec
from softmax_bottleneck.training import NegativeSampler, _make_optimizer, train_step
head, n_items, dim, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
profile = len(sys.argv) > 5
torch.set_num_threads(1)
rng = np.random.default_rng(0)
support = (1.0 / np.arange(1, n_items + 1) ** 0.9) * 1e6  # Zipf-like item popularity
config = TrainConfig()
model = GRU4Rec(ModelConfig(n_items=n_items, head=head, hidden_dim=dim))
model.reset_parameters(torch.Generator().manual_seed(0))
optimizer = _make_optimizer(model, config)
sampler = NegativeSampler(support, config.sample_alpha, config.n_sample, torch.Generator().manual_seed(1), "cpu")
log_support = torch.log(torch.as_tensor(support, dtype=torch.float32))
p = support / support.sum()
items = torch.from_numpy(rng.choice(n_items, size=(steps + 21, config.batch_size), p=p))
hidden = model.init_hidden(config.batch_size)
model.train()
profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
for step in range(steps + 20):
    if step == 20:
        began = time.perf_counter()  # warm-up steps excluded
        if profile:
            profiler.start()
    targets = items[step + 1]
    _, hidden = train_step(model, items[step], hidden.detach(), targets, config, optimizer, sampler, log_support)
train = steps * config.batch_size / (time.perf_counter() - began)
if profile:
    profiler.stop()
    rows = sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)
    print(json.dumps({"step_ms": 1e3 * config.batch_size / train,
                      "ops": [[e.key, e.self_cpu_time_total / 1e3 / steps] for e in rows[:8]]}))
    sys.exit(0)
model.eval()
with torch.no_grad():
    states = torch.tanh(torch.randn(512, dim, generator=torch.Generator().manual_seed(2)))
    targets = torch.from_numpy(rng.choice(n_items, size=512, p=p))
    model.head.log_probs(states[:8])  # warm-up
    began, batches = time.perf_counter(), 4
    for _ in range(batches):
        target_ranks(model.head.log_probs(states), targets, ties="conservative")
    evaluate = batches * 512 / (time.perf_counter() - began)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"train": train, "evaluate": evaluate, "peak_mib": peak}))
"""


def measure(head: str, n_items: int, dim: int, steps: int, profile: bool = False) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, head, str(n_items), str(dim), str(steps)]
                          + (["profile"] if profile else []), cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def print_profiles(heads, args) -> None:
    """Per head: the step's time under the profiler and its 8 most expensive operators (self time)."""
    for head in heads:
        found = measure(head, args.items, args.dim, args.steps, profile=True)
        print(f"{head}: {found['step_ms']:.2f} ms per training step under the profiler; self time per step:")
        for name, ms in found["ops"]:
            print(f"  {ms:7.3f} ms  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300, help="training steps measured (after 20 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="where each head's training time goes, instead")
    args = parser.parse_args()
    heads = ["softmax"] + [h for h in args.heads if h != "softmax"]  # the baseline is always measured
    if args.profile:
        return print_profiles(heads, args)
    runs = {h: [] for h in heads}
    for _ in range(args.repeats):
        for head in heads:  # alternating, so drift in the machine's load hits every head alike
            runs[head].append(measure(head, args.items, args.dim, args.steps))
    medians = {h: {k: statistics.median(r[k] for r in rs) for k in ("train", "evaluate", "peak_mib")}
               for h, rs in runs.items()}
    base = medians["softmax"]
    print(f"d = {args.dim}, {args.items:,} items, batch 32 with 2,048 negatives, 1 thread; medians of {args.repeats}")
    print(f"{'head':11s} {'train ev/s':>11s} {'× softmax':>9s}  {'eval ev/s':>10s} {'× softmax':>9s}  "
          f"{'peak MiB':>9s} {'× softmax':>9s}  {'train cost × softmax':>20s}")
    for head, m in medians.items():
        print(f"{head:11s} {m['train']:11,.0f} {m['train'] / base['train']:9.2f}  {m['evaluate']:10,.0f} "
              f"{m['evaluate'] / base['evaluate']:9.2f}  {m['peak_mib']:9,.0f} {m['peak_mib'] / base['peak_mib']:9.2f}  "
              f"{base['train'] / m['train']:20.2f}")


if __name__ == "__main__":
    main()
