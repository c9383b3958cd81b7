"""Evaluate a checkpoint: every next-item event of every held-out session, ranked against all items.

Examples::

    python -m softmax_bottleneck.evaluate --checkpoint runs/softmax.pt --split test
    python -m softmax_bottleneck.evaluate --checkpoint runs/mos.pt --ties standard --k 1 5 10 20 100 --json
    python -m softmax_bottleneck.evaluate --checkpoint runs/mos.pt --per-event runs/mos-test-ranks.csv
    torchrun --nproc-per-node 2 -m softmax_bottleneck.evaluate --checkpoint runs/mos.pt --json   # 2 processes, same numbers
    python -m softmax_bottleneck.evaluate --checkpoint saved/GRU4Rec-….pth --data prepared/ml-100k \
        --item-map ../shared/data/ml-100k/ml-100k.inter      # a RecBole checkpoint (see README)

Each session starts from a zero hidden state (GRU4Rec's session-parallel evaluation); the score of
an item is its exact log-probability under the model's head. ``--ties conservative`` (default,
the headline) counts items tied with the target as ranked above it; ``standard`` lets ties favour
the target. The checkpoint records its prepared data, so ``--data`` is needed only to override.

The work itself is :func:`softmax_bottleneck.evaluation.evaluate_ranks`; this module is its command,
which checks every flag before it imports torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import (ArgumentParser, InputError, add_cutoffs_argument, add_heldout_arguments, check_cutoffs,
                  add_sample_arguments, check_output_file, check_sample_events, check_threads, checkpoint_sources, resolve_device, run_main,
                  sample_record, set_threads)
from .config import TIES, describe


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m softmax_bottleneck.evaluate", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--ties", default="conservative", choices=TIES)
    add_cutoffs_argument(parser)
    parser.add_argument("--batch-size", type=int, default=512, help="sessions evaluated in parallel")
    parser.add_argument("--per-event", type=Path, help="write session, position, target, rank per event (CSV); "
                        "an existing file is refused unless --force")
    parser.add_argument("--force", action="store_true", help="replace an existing --per-event file")
    add_sample_arguments(parser)
    add_heldout_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        ks = check_cutoffs(args.k)
        check_sample_events(args.sample_events)
        if args.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
        check_threads(args.threads)
        if args.per_event:
            check_output_file(args.per_event, "--per-event", force=args.force)
        from .atomic import atomic_path
        from .data import sample_sessions
        from .checkpoint import load_checkpoints_on_one_dataset, model_from_checkpoint
        from .evaluation import HeadHealth, describe_epoch, describe_health, epoch_record, evaluate_ranks
        from .foreign.adapter import describe_foreign, foreign_summary
        from .metrics import metric_table  # torch: imported once the flags are checked

        set_threads(args.threads)
        device = resolve_device(args.device)
        (checkpoint,), dataset = load_checkpoints_on_one_dataset([args.checkpoint], args.data,
                                                                 **checkpoint_sources(args))
        check_cutoffs(ks, dataset.n_items)
        full = dataset.split(args.split)
        if full.n_transitions == 0:
            raise InputError(f"{dataset.path}: the {args.split} split has no events")
        split = full if args.sample_events is None else sample_sessions(full, max_events=args.sample_events,
                                                                        seed=args.sample_seed)
        from . import distributed

        model = model_from_checkpoint(checkpoint, device)
        health = HeadHealth(dataset.support, ks)
        with distributed.session(device):  # under torchrun: each rank scores its chunks, every rank gets all
            result = evaluate_ranks(model, split, ties=args.ties, batch_size=args.batch_size, device=device,
                                    progress=not args.json, health=health)
            world_size, main = distributed.world_size(), distributed.is_main()
        if not main:
            return  # rank 0 writes and prints
        metrics = metric_table(result.ranks, ks)
        if args.per_event:
            with atomic_path(args.per_event) as tmp:
                result.to_frame(dataset.item_ids).to_csv(tmp, index=False)
        summary = {"checkpoint": str(args.checkpoint), "split": args.split, "ties": args.ties,
                   "n_events": int(len(result.ranks)), **describe(checkpoint["model_config"]),
                   "events_per_second": len(result.ranks) / max(result.seconds, 1e-9),
                   "log_likelihood": result.log_likelihood, **metrics, **health.result(),
                   **epoch_record(checkpoint), "world_size": world_size}
        foreign = foreign_summary(checkpoint, split)
        if foreign is not None:
            summary["foreign"] = foreign
        sample = sample_record(full, split, args.sample_seed)
        if sample is not None:
            summary["sample"] = sample
        if args.json:
            print(json.dumps(summary))
            return
        print(f"{args.checkpoint} on {args.split} ({summary['n_events']:,} events, ties={args.ties}, "
              f"{summary['events_per_second']:,.0f} events/s)")
        if sample is not None:
            print(f"a seeded sample (seed {sample['seed']}): {sample['sessions']:,} of {sample['of_sessions']:,} sessions, "
                  f"{sample['events']:,} of {sample['of_events']:,} events")
        print("metric  " + "".join(f"{'@' + str(k):>9s}" for k in ks))
        for name in ("recall", "mrr", "ndcg"):
            print(f"{name:7s} " + "".join(f"{metrics[f'{name}@{k}']:9.4f}" for k in ks))
        print(describe_health(summary, ks))
        print(describe_epoch(summary))
        if foreign is not None:
            print(describe_foreign(foreign))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
