"""Evaluate a checkpoint: every next-item event of every held-out session, ranked against all items.

Examples::

    python -m softmax_bottleneck.evaluate --checkpoint runs/softmax.pt --split test
    python -m softmax_bottleneck.evaluate --checkpoint runs/mos.pt --ties standard --k 1 5 10 20 100 --json
    python -m softmax_bottleneck.evaluate --checkpoint runs/mos.pt --per-event runs/mos-test-ranks.csv

Each session starts from a zero hidden state (GRU4Rec's session-parallel evaluation); the score of
an item is its exact log-probability under the model's head. ``--ties conservative`` (default,
the headline) counts items tied with the target as ranked above it; ``standard`` lets ties favour
the target. The checkpoint records its prepared data, so ``--data`` is needed only to override.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .checkpoint import dataset_for_checkpoint, load_checkpoint, model_from_checkpoint
from .cli import ArgumentParser, InputError, add_heldout_arguments, check_cutoffs, resolve_device, run_main
from .data import SessionSplit, session_parallel_batches
from .metrics import TIES, metric_table, target_ranks
from .model import GRU4Rec, carry_state


@dataclasses.dataclass
class EventRanks:
    """One entry per evaluated event: which session, which position, which target, its rank."""

    sessions: np.ndarray  # (n_events,) int64 session index within the split
    positions: np.ndarray  # (n_events,) int64 position of the target in its session (1-based next item)
    targets: np.ndarray  # (n_events,) int64 item index
    ranks: np.ndarray  # (n_events,) int64 1-based rank among all items
    target_log_probs: np.ndarray  # (n_events,) float64 log p(target | context)
    seconds: float = 0.0

    @property
    def log_likelihood(self) -> float:
        """Mean log-probability of the observed next items."""
        return float(np.mean(self.target_log_probs))

    def to_frame(self, item_ids: np.ndarray | None = None) -> pd.DataFrame:
        frame = pd.DataFrame({"session": self.sessions, "position": self.positions, "target": self.targets,
                              "rank": self.ranks, "log_prob": self.target_log_probs})
        if item_ids is not None:
            frame.insert(3, "target_id", np.asarray(item_ids)[self.targets])
        return frame.sort_values(["session", "position"], kind="stable", ignore_index=True)


@torch.no_grad()
def evaluate_ranks(model: GRU4Rec, split: SessionSplit, *, ties: str = "conservative", batch_size: int = 512,
                   device: torch.device | str = "cpu", progress: bool = False) -> EventRanks:
    """Rank every next-item event of `split` under `model` (in eval mode: no dropout)."""
    if split.n_transitions == 0:
        raise InputError("the split has no next-item events to evaluate")
    model.eval()
    hidden = model.init_hidden(min(batch_size, split.n_sessions), device)
    parts = []
    start = time.perf_counter()
    bar = tqdm(total=split.n_transitions, unit="ev", disable=not progress, desc="evaluate", leave=False)
    for batch in session_parallel_batches(split, batch_size):
        hidden = carry_state(hidden, batch.keep, batch.reset)
        output, hidden = model.step(torch.from_numpy(batch.inputs).to(device), hidden)
        targets = torch.from_numpy(batch.targets).to(device)
        log_p = model.log_probs(output)  # (batch, n_items)
        if not torch.isfinite(log_p).all():
            raise InputError(f"the {model.config.head} head produced non-finite log-probabilities")
        ranks = target_ranks(log_p, targets, ties).cpu().numpy()
        target_log_p = log_p.gather(1, targets[:, None])[:, 0].double().cpu().numpy()
        parts.append((batch.sessions, batch.positions, batch.targets, ranks, target_log_p))
        bar.update(len(ranks))
    bar.close()
    columns = [np.concatenate(c) for c in zip(*parts)]
    return EventRanks(*columns, seconds=time.perf_counter() - start)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m softmax_bottleneck.evaluate", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--ties", default="conservative", choices=TIES)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 10, 20], help="cut-offs (default: 1 5 10 20)")
    parser.add_argument("--batch-size", type=int, default=512, help="sessions evaluated in parallel")
    parser.add_argument("--per-event", type=Path, help="write session, position, target, rank per event (CSV)")
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        ks = check_cutoffs(args.k)
        if args.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
        device = resolve_device(args.device)
        checkpoint = load_checkpoint(args.checkpoint)
        dataset = dataset_for_checkpoint(checkpoint, args.data)
        split = dataset.split(args.split)
        if split.n_transitions == 0:
            raise InputError(f"{dataset.path}: the {args.split} split has no events")
        model = model_from_checkpoint(checkpoint, device)
        result = evaluate_ranks(model, split, ties=args.ties, batch_size=args.batch_size, device=device,
                                progress=not args.json)
        metrics = metric_table(result.ranks, ks)
        if args.per_event:
            args.per_event.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.per_event.with_name(f".{args.per_event.name}.tmp")
            result.to_frame(dataset.item_ids).to_csv(tmp, index=False)
            tmp.replace(args.per_event)
        summary = {"checkpoint": str(args.checkpoint), "split": args.split, "ties": args.ties,
                   "n_events": int(len(result.ranks)), "head": checkpoint["model_config"]["head"],
                   "n_experts": checkpoint["model_config"]["n_experts"],
                   "hidden_dim": checkpoint["model_config"]["hidden_dim"],
                   "events_per_second": len(result.ranks) / max(result.seconds, 1e-9),
                   "log_likelihood": result.log_likelihood, **metrics}
        if args.json:
            print(json.dumps(summary))
            return
        print(f"{args.checkpoint} on {args.split} ({summary['n_events']:,} events, ties={args.ties}, "
              f"{summary['events_per_second']:,.0f} events/s)")
        print("metric  " + "".join(f"{'@' + str(k):>9s}" for k in ks))
        for name in ("recall", "mrr", "ndcg"):
            print(f"{name:7s} " + "".join(f"{metrics[f'{name}@{k}']:9.4f}" for k in ks))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
