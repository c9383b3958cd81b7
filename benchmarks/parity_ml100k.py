"""Parity with the official GRU4Rec on MovieLens-100K, and the price of a MoS head.

    python benchmarks/parity_ml100k.py                       # softmax and MoS (K=4), 3 seeds each
    python benchmarks/parity_ml100k.py --heads softmax --seeds 0 --epochs 2     # a quick look

Protocol of DESIGN.md on ../shared/data/ml-100k (1-hour gap, support 5, last 10 % of sessions
test). Settings of the official run: cross-entropy, constrained embedding, layer 64, batch 32,
lr 0.2, momentum 0.2, dropout 0.0/0.4, n_sample 2048, sample_alpha 0.5, logq 1.0, 10 epochs.
The official PyTorch code once reached on the test split (conservative ties) Recall@20 0.2046 and
MRR@20 0.0480 (mean of 3 seeds) at about 6,800 training events/s on this 2-core machine. Those are
**historical** numbers, measured by an earlier session and not in this run: the "vs historical"
columns compare with them, not with a measurement. `benchmarks/peer_training.py` runs the official
code side by side in one run, and is the benchmark to quote for speed. The popularity baseline gets
0.0715 / 0.0148 (recomputed here as a check on the evaluation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from softmax_bottleneck.data import PrepareConfig, load_interactions, prepare, save_prepared
from softmax_bottleneck.evaluation import evaluate_ranks
from softmax_bottleneck.metrics import metric_table, target_ranks
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.config import TrainConfig
from softmax_bottleneck.training import train

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "ml-100k.inter"
# measured once with the official code (3 seeds), not in this run: see the module docstring
HISTORICAL_OFFICIAL = {"recall@20": 0.2046, "mrr@20": 0.0480, "events_per_second": 6800}
POPULARITY = {"recall@20": 0.0715, "mrr@20": 0.0148}


def popularity_metrics(dataset) -> dict:
    split = dataset.splits["test"]
    targets = torch.from_numpy(np.concatenate([split.session(s)[1:] for s in range(split.n_sessions)]).astype(np.int64))
    scores = torch.as_tensor(dataset.support, dtype=torch.float64).expand(len(targets), -1)
    return metric_table(target_ranks(scores, targets, "conservative").numpy(), (20,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=["softmax", "mos"], choices=["softmax", "mos"])
    parser.add_argument("--n-experts", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    work = Path(tempfile.mkdtemp(prefix="parity-"))
    dataset = prepare(load_interactions(ML100K, "recbole"), PrepareConfig())
    save_prepared(dataset, work / "ml-100k")
    pop = popularity_metrics(dataset)
    print(f"popularity baseline: recall@20 {pop['recall@20']:.4f} (official {POPULARITY['recall@20']}), "
          f"mrr@20 {pop['mrr@20']:.4f} (official {POPULARITY['mrr@20']})", flush=True)
    rows = []
    for head in args.heads:
        for seed in args.seeds:
            model_config = ModelConfig(head=head, n_experts=args.n_experts if head == "mos" else None)
            config = TrainConfig(epochs=args.epochs, seed=seed)
            checkpoint = train(dataset, model_config, config, work / f"{head}-{seed}.pt", progress=False,
                               log=lambda m: print("  " + m, file=sys.stderr, flush=True))
            from softmax_bottleneck.checkpoint import model_from_checkpoint
            model = model_from_checkpoint(checkpoint)
            test = metric_table(evaluate_ranks(model, dataset.splits["test"]).ranks, (20,))
            speed = statistics.median(m["events_per_second"] for m in checkpoint["metrics"])
            rows.append({"head": head, "seed": seed, "recall@20": test["recall@20"], "mrr@20": test["mrr@20"],
                         "median_epoch_events_per_second": speed})
            print(f"{head:8s} seed {seed}: recall@20 {test['recall@20']:.4f}  mrr@20 {test['mrr@20']:.4f}  "
                  f"{speed:,.0f} events/s (median epoch)", flush=True)
    print()
    print("vs historical: against the official code's numbers of an earlier session, not measured in this run")
    print(f"{'head':10s} {'recall@20':>10s} {'vs historical':>14s} {'mrr@20':>8s} {'vs historical':>14s} "
          f"{'events/s':>9s} {'vs historical':>14s}")
    summary = {}
    for head in args.heads:
        mine = [r for r in rows if r["head"] == head]
        recall = statistics.mean(r["recall@20"] for r in mine)
        mrr = statistics.mean(r["mrr@20"] for r in mine)
        speed = statistics.median(r["median_epoch_events_per_second"] for r in mine)
        summary[head] = {"recall@20": recall, "mrr@20": mrr, "events_per_second": speed, "seeds": len(mine)}
        print(f"{head:10s} {recall:10.4f} {recall / HISTORICAL_OFFICIAL['recall@20'] - 1:+13.1%} {mrr:8.4f} "
              f"{mrr / HISTORICAL_OFFICIAL['mrr@20'] - 1:+13.1%} {speed:9,.0f} "
              f"{speed / HISTORICAL_OFFICIAL['events_per_second']:13.2f}x")
    if "softmax" in summary and "mos" in summary:
        ratio = summary["softmax"]["events_per_second"] / summary["mos"]["events_per_second"]
        print(f"MoS (K={args.n_experts}) training cost per event: {ratio:.2f}x softmax's (same run)")
    if args.out:
        args.out.write_text(json.dumps({"runs": rows, "summary": summary, "popularity": pop}, indent=2))


if __name__ == "__main__":
    main()
