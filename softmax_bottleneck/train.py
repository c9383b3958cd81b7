"""Train GRU4Rec with any of its heads (softmax, MoS, sigsoftmax, MoL; softmax-dd is a softmax with a separate
input embedding) on a prepared dataset.

Examples::

    # a tiny CPU run on the synthetic world (seconds)
    python -m softmax_bottleneck.prepare --synthetic --out prepared/synthetic
    python -m softmax_bottleneck.train --data prepared/synthetic --out runs/softmax.pt --epochs 2
    python -m softmax_bottleneck.train --data prepared/synthetic --out runs/mos.pt --head mos --n-experts 4 --epochs 2
    # continue an interrupted run to 10 epochs (same final weights as an uninterrupted run)
    python -m softmax_bottleneck.train --data prepared/synthetic --out runs/softmax.pt --epochs 10 --resume
    # one model on 2 processes (the batch's rows split, gradients summed; see softmax_bottleneck.distributed)
    torchrun --nproc-per-node 2 -m softmax_bottleneck.train --data prepared/synthetic --out runs/ddp.pt --epochs 2

As the official GRU4Rec: session-parallel mini-batches with sessions in order of first event,
one-step truncated backprop, a hidden state zeroed when a new session takes a slot, and
cross-entropy over the batch's targets plus ``--n-sample`` shared negatives drawn ∝
support^``--sample-alpha``, with the logQ correction (training only); ``--full-softmax`` trains on
all items instead. Adagrad with momentum (GRU4Rec's, indexed updates of item rows) or Adam.
Defaults are the MovieLens-100K configuration of the parity benchmark (layer 64, batch 32,
lr 0.2, momentum 0.2, dropout 0.0/0.4, 2048 negatives, alpha 0.5, logQ 1.0, 10 epochs).

After each epoch: validation metrics and a checkpoint written atomically to --out. The checkpoint
holds the weights of the **best validation epoch** under ``--select-metric`` (default mrr@20; ties
keep the earlier epoch), the whole per-epoch validation curve, the best epoch's number and the
rule; ``--patience N`` stops after N epochs without improvement (0: train all ``--epochs``). The last
epoch's weights, optimizer and generator states ride along, so ``--resume`` continues exactly.
``--config best.json`` (written by ``python -m softmax_bottleneck.tune``) sets every model and
training setting; flags given on the command line override it.

    python -m softmax_bottleneck.train --data prepared/ml-100k --out runs/mos.pt --config tuned/mos/best.json --seed 1

Threads: ``--threads`` (default 1) sets torch's intra-op threads. GRU4Rec's steps are small
sequential GEMMs: on an idle 2-core machine two threads are 1.2× as fast, but beside one busy
process they fall to 0.23×, while one thread holds its speed (benchmarks/threads.py). Results are
bit-identical for the same seed and thread count; another thread count may change the order of
float sums, and so the last digits.

The training itself is :func:`softmax_bottleneck.training.train`; this module is its command, which
checks every flag before it imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from .cli import (ArgumentParser, InputError, add_config_arguments, add_device_argument, add_threads_argument, flag,
                  check_output_file, check_threads, config_from_args, read_json_file, resolve_device, run_main, set_threads)
from .config import ModelConfig, TrainConfig


def load_config_file(path: Path) -> dict:
    """The flag values of a ``best.json`` (or any JSON with ``model_config``/``train_config``): {field: value}."""
    payload = read_json_file(path, "config")
    if not isinstance(payload, dict) or not ({"model_config", "train_config"} & set(payload)):
        raise InputError(f"{{config}} {path}: expected an object with model_config and/or train_config", "config")
    values = {}
    for key, config_cls in (("model_config", ModelConfig), ("train_config", TrainConfig)):
        section = payload.get(key, {})
        if not isinstance(section, dict):
            raise InputError(f"{{config}} {path}: {key} must be an object", "config")
        fields = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(section) - fields)
        if unknown:
            raise InputError(f"{{config}} {path}: unknown {key} field(s) {', '.join(unknown)}", "config")
        values.update({k: v for k, v in section.items() if k != "n_items"})
    return values


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m softmax_bottleneck.train", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint file to write after every epoch")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint at --out up to --epochs")
    parser.add_argument("--config", type=Path, metavar="JSON",
                        help="settings from a tuner's best.json; flags on the command line override them")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    parser.add_argument("--json", action="store_true", help="print one JSON object (best epoch, its valid metrics)")
    add_device_argument(parser)
    add_threads_argument(parser)
    add_config_arguments(parser.add_argument_group("model"), ModelConfig, skip=("n_items",))
    add_config_arguments(parser.add_argument_group("training"), TrainConfig)
    return parser


def parse_args(argv: list[str] | None = None):
    """Flags, with ``--config`` values as the defaults that explicit flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        try:
            values = load_config_file(args.config)
        except InputError as err:
            parser.exit(2, f"error: {err.render(flag)}\n")
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        from .data import load_prepared

        check_threads(args.threads)
        model_config = config_from_args(ModelConfig, args)
        config = config_from_args(TrainConfig, args)
        check_output_file(args.out, "--out")
        dataset = load_prepared(args.data)
        if dataset.splits["valid"].n_transitions == 0:
            raise InputError(f"{args.data}: the valid split has no events")
        from .training import train, tuning_record  # torch: imported once the flags and the data are checked

        from . import distributed

        set_threads(args.threads)
        device = resolve_device(args.device)
        log = (lambda message: None) if args.quiet or args.json else (lambda message: print(message, file=sys.stderr))
        tuning = tuning_record(json.loads(args.config.read_text()), args.config) if args.config else None
        with distributed.session(device):  # under torchrun: one model on every rank, rank 0 writes
            checkpoint = train(dataset, model_config, config, args.out, device=device, resume=args.resume,
                               progress=not (args.quiet or args.json), log=log, tuning=tuning)
            if not distributed.is_main():
                return
        best = checkpoint["metrics"][checkpoint["best_epoch"] - 1]
        if args.json:
            print(json.dumps({"checkpoint": str(args.out), **checkpoint["selection"], "threads": checkpoint["threads"],
                              "world_size": checkpoint["world_size"],
                              **{k: v for k, v in best.items() if k.startswith("valid_")}}))
        else:
            print(f"wrote {args.out} (epoch {checkpoint['best_epoch']} of {checkpoint['epoch']}, "
                  f"best valid {config.select_metric} {checkpoint['selection']['best_value']:.4f})")

    def interrupted() -> str:
        if args.out.is_file():
            return (f"{args.out} holds the last finished epoch; rerun the same command with --resume to go on "
                    "from there")
        return f"no epoch finished, so nothing was written to {args.out}"

    return run_main(body, interrupted)


if __name__ == "__main__":
    sys.exit(main())
