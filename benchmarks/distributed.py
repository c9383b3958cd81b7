"""Training, evaluation and rank-report rates on 1 and 2 processes (torchrun, gloo, one thread each).

    python benchmarks/distributed.py                                   # ML-100K and the 5M-event scale log
    python benchmarks/distributed.py --datasets ml-100k --repeats 1    # a quick look
    python benchmarks/distributed.py --works "rank mos" --datasets ml-100k scale-5m

Each (dataset, work, processes) runs as its own ``torchrun --standalone --nproc-per-node N`` job of this
file's ``--child`` mode, alternating, --repeats times; medians are printed with the ratio of 2 processes
to 1 measured in the same run:

- train b32 / train b512: GRU4Rec softmax d = 64, 2,048 shared samples, logQ: events/s over
  --train-events next-item events after 2,000 of warm-up, as ``train`` runs them under torchrun (each
  rank the loss of its share of the rows, gradients summed; softmax_bottleneck.distributed);
- evaluate: full-ranking evaluation (exact log-probs, conservative ties) of a seeded sample of test
  sessions holding --eval-events events, the chunks shared out by turns;
- rank mos: the rank report (Gram engine, as large catalogues use) of a MoS K = 4, d = 64 head over
  --rank-contexts seeded context states, as ``analysis.rank`` runs it under torchrun
  (analysis.sharded); its rate is contexts/s, not events/s.

Datasets: ``ml-100k`` (../shared/data/ml-100k, prepared with the default protocol) and ``scale-5m``
(benchmarks/scale.py's generated log with MovieLens-25M's shape at 5M events, 59k items; written and
prepared under --work once). Models are freshly initialised: speed does not depend on what they learned.

What bounds the speed-up: each rank replays the whole batch's GRU step and applies the whole Adagrad
update (replicated so that every rank's weights stay the single process's), and the gradient
all-reduce is a round trip per step; only the head and the loss over the candidates are split. The
rank report shares its log-probabilities and Gram panels but repeats the eigenvalues (and the QR of a
refinement, when the Gram matrix cannot resolve the bottom of the spectrum) on every rank. On 2
cores shared with other work, 2 processes also compete for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"
WORKS = ("train b32", "train b512", "evaluate", "rank mos")


def child(args) -> None:
    import torch

    torch.set_num_threads(1)
    from softmax_bottleneck import distributed
    from softmax_bottleneck.config import ModelConfig, TrainConfig
    from softmax_bottleneck.data import load_prepared, sample_sessions, session_parallel_batches
    from softmax_bottleneck.evaluation import evaluate_ranks
    from softmax_bottleneck.model import carry_state
    from softmax_bottleneck.training import build_training, train_step

    with distributed.session("cpu"):
        dataset = load_prepared(args.data, verify=False)
        if args.child_work == "rank mos":
            from analysis.logprobs import LogProbMatrix
            from analysis.rank_report import rank_report

            head = build_training(dataset, ModelConfig(hidden_dim=64, head="mos", n_experts=4),
                                  TrainConfig(seed=0))[0].eval().head
            states = torch.randn(args.events, 64, generator=torch.Generator().manual_seed(0)).tanh().numpy()
            began = time.perf_counter()
            rank_report(LogProbMatrix(head, states), engine="gram")
            seconds, done = time.perf_counter() - began, args.events
        elif args.child_work == "evaluate":
            model = build_training(dataset, ModelConfig(hidden_dim=64), TrainConfig(seed=0))[0].eval()
            sample = sample_sessions(dataset.splits["test"], max_events=args.events, seed=0)
            began = time.perf_counter()
            result = evaluate_ranks(model, sample, batch_size=512)
            seconds, done = time.perf_counter() - began, len(result.ranks)
        else:
            config = TrainConfig(batch_size=int(args.child_work.split("b")[1]), n_sample=2048, seed=0)
            model, optimizer, sampler, _, log_support = build_training(dataset, ModelConfig(hidden_dim=64), config)
            model.train()
            hidden = model.init_hidden(config.batch_size)
            done, began = 0, None
            for batch in session_parallel_batches(dataset.splits["train"], config.batch_size):
                if began is None and done >= 2000:
                    began, done = time.perf_counter(), 0
                hidden = carry_state(hidden, batch.keep, batch.reset)
                _, hidden = train_step(model, torch.from_numpy(batch.inputs), hidden, torch.from_numpy(batch.targets),
                                       config, optimizer, sampler, log_support)
                done += len(batch.targets)
                if began is not None and done >= args.events:
                    break
            seconds = time.perf_counter() - began
        if distributed.is_main():
            print(json.dumps({"events": done, "seconds": seconds, "events_per_second": done / seconds,
                              "world_size": distributed.world_size()}))


def prepared(name: str, work: Path) -> Path:
    """The dataset's prepared folder, made under `work` the first time."""
    folder = work / name
    if (folder / "meta.json").is_file():
        return folder
    if name == "ml-100k":
        source, form = ML100K, "recbole"
    else:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from scale import write_log

        source, form = work / "ratings-5m.csv", "movielens"
        if not source.is_file():
            write_log(source, 5_000_000)
    subprocess.run([sys.executable, "-m", "softmax_bottleneck.prepare", "--input", str(source), "--format", form,
                    "--out", str(folder), "--quiet"], check=True, cwd=ROOT)
    return folder


def run(data: Path, work: str, processes: int, events: int) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               __file__, "--child", "--data", str(data), "--child-work", work, "--events", str(events)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{work} on {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "scale-5m"], choices=["ml-100k", "scale-5m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-events", type=int, default=30_000)
    parser.add_argument("--eval-events", type=int, default=10_000)
    parser.add_argument("--rank-contexts", type=int, default=4096, help="contexts of the rank report (default 4096)")
    parser.add_argument("--works", nargs="+", default=list(WORKS), choices=WORKS, metavar="WORK",
                        help=f"what to time (default: all of {', '.join(WORKS)})")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sb-distributed",
                        help="where the 5M-event log and the prepared datasets are kept between runs")
    parser.add_argument("--out", type=Path, help="also write the runs and medians as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-work", choices=WORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'dataset':9s} {'work':10s} {'1 process':>11s} {'2 processes':>12s} {'ratio':>6s}   (events/s, medians "
          f"of {args.repeats}; one thread each; load average {os.getloadavg()[0]:.1f} at the start)", flush=True)
    for name in args.datasets:
        data = prepared(name, args.work)
        for work in args.works:
            events = {"evaluate": args.eval_events, "rank mos": args.rank_contexts}.get(work, args.train_events)
            runs = {1: [], 2: []}
            for _ in range(args.repeats):
                for processes in (1, 2):  # alternating, so a change of load hits both alike
                    runs[processes].append(run(data, work, processes, events)["events_per_second"])
            one, two = statistics.median(runs[1]), statistics.median(runs[2])
            rows.append({"dataset": name, "work": work, "one": one, "two": two, "ratio": two / one, "runs": runs})
            print(f"{name:9s} {work:10s} {one:11,.0f} {two:12,.0f} {two / one:6.2f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"load_average_at_start": os.getloadavg()[0], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
