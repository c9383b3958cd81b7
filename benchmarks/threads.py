"""Training speed against torch's thread count, on an idle machine and beside a CPU-bound process.

    python benchmarks/threads.py                 # MovieLens-100K (../shared/data/ml-100k), 1 and 2 threads
    python benchmarks/threads.py --steps 600 --repeats 5

What it measures: GRU4Rec training events/s (default settings, seed 0) for a fixed number of
session-parallel steps, alternating the thread counts, each in a fresh process, median of the
repeats; then the same while another process spins on one core (the situation of a shared
machine, or of the study's and the tuner's parallel workers). It prints each median and the ratio
to one thread. This is the benchmark behind ``--threads`` defaulting to 1 for training and tuning.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"

CHILD = r"""
import json, sys, time, torch
from softmax_bottleneck.data import load_prepared, session_parallel_batches
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.model import GRU4Rec, carry_state
from softmax_bottleneck.config import TrainConfig
from softmax_bottleneck.training import NegativeSampler, _make_optimizer, train_step
threads, steps, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
dataset = load_prepared(data)
config = TrainConfig()
model = GRU4Rec(ModelConfig(n_items=dataset.n_items))
model.reset_parameters(torch.Generator().manual_seed(0))
optimizer = _make_optimizer(model, config)
sampler = NegativeSampler(dataset.support, config.sample_alpha, config.n_sample, torch.Generator().manual_seed(1), "cpu")
log_support = torch.log(torch.as_tensor(dataset.support, dtype=torch.float32))
hidden = model.init_hidden(config.batch_size)
events, start = 0, None
for step, batch in enumerate(session_parallel_batches(dataset.splits["train"], config.batch_size)):
    if step == 20:
        start, events = time.perf_counter(), 0  # warm-up steps excluded
    if step == 20 + steps:
        break
    hidden = carry_state(hidden, batch.keep, batch.reset)
    targets = torch.from_numpy(batch.targets)
    _, hidden = train_step(model, torch.from_numpy(batch.inputs), hidden, targets, config, optimizer, sampler,
                           log_support)
    events += len(targets)
print(json.dumps({"events_per_second": events / (time.perf_counter() - start)}))
"""


def _spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def measure(threads: int, steps: int, data: Path) -> float:
    result = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), str(data)], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["events_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from softmax_bottleneck.data import PrepareConfig, load_interactions, prepare, save_prepared

    folder = Path(tempfile.mkdtemp(prefix="threads-"))
    save_prepared(prepare(load_interactions(ML100K, "recbole"), PrepareConfig()), folder / "ml-100k")
    rows = []
    for load in ("idle", "beside a busy process"):
        speeds = {t: [] for t in args.threads}
        for _ in range(args.repeats):
            for threads in args.threads:  # alternating, so drift in the machine's load hits both alike
                spinner = None
                if load != "idle":
                    spinner = multiprocessing.Process(target=_spin, args=(time.time() + 600,))
                    spinner.start()
                try:
                    speeds[threads].append(measure(threads, args.steps, folder / "ml-100k"))
                finally:
                    if spinner is not None:
                        spinner.terminate()
                        spinner.join()
        base = statistics.median(speeds[args.threads[0]])
        for threads in args.threads:
            median = statistics.median(speeds[threads])
            rows.append((load, threads, median, median / base))
    print(f"{'machine':24s} {'threads':>7s} {'events/s':>10s} {'ratio':>7s}")
    for load, threads, median, ratio in rows:
        print(f"{load:24s} {threads:7d} {median:10,.0f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
