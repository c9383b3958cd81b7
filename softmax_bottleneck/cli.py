"""Shared command-line plumbing: one-line errors with exit status 2, flags built from dataclasses.

The library raises :class:`softmax_bottleneck.errors.InputError` for bad input; :func:`run_main`
turns it into one line on stderr, with the parameters it names written as flags, and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence

from .errors import InputError, flag

# InputError lives in errors.py (the library raises it); CLIs may import it from here too


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2) instead of a usage block."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def launched() -> bool:
    """Whether torchrun started this process (its WORLD_SIZE, or its run id at world size 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def run_main(body: Callable[[], int | None], interrupted: Callable[[], str] | None = None) -> int:
    """Run a CLI body; InputError becomes one stderr line and exit status 2. `interrupted()` says, after a
    Ctrl-C, what was kept and how to go on."""
    try:
        status = body()
    except InputError as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank meets the same bad input: one says it
            print(f"error: {err.render(flag)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head -1`: the reader is gone; stop quietly as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as err:  # the disk is full, a folder went read-only, …: what was there before is kept
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err} (writes are atomic: no half-written file was left, and "
              "earlier results are as they were)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or torchrun ending this rank (distributed.Stopped says which)
        hint = interrupted() if interrupted is not None else ""
        print(f"\nerror: {str(err) or 'interrupted'}{'; ' + hint if hint else ''}", file=sys.stderr)  # not after a bar
        return 130
    return 0 if status is None else status


def _optional_inner(tp) -> tuple[type, bool]:
    """(inner type, allows None) for ``X | None`` annotations."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _none_or(inner: type) -> Callable[[str], object]:
    def parse(text: str):
        if text.lower() == "none":
            return None
        return inner(text)

    parse.__name__ = inner.__name__  # argparse names the type in its error message
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, config_cls, *, skip: Sequence[str] = ()) -> None:
    """Add one ``--kebab-case`` flag per dataclass field; defaults and help live on the dataclass.

    ``X | None`` fields accept the word ``none``; booleans get ``--flag/--no-flag``.
    """
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        inner, nullable = _optional_inner(hints[field.name])
        help_text = field.metadata.get("help", "")
        default = field.default
        suffix = f" (default: {default})"
        if inner is bool:
            parser.add_argument(flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text + suffix)
            continue
        choices = field.metadata.get("choices")
        parse = _none_or(inner) if nullable else inner
        parser.add_argument(flag(field.name), dest=field.name, type=parse, default=default,
                            choices=choices, metavar=field.metadata.get("metavar"), help=help_text + suffix)


def config_from_args(config_cls, args: argparse.Namespace, **overrides):
    """Build a config dataclass from parsed flags; a ValueError from validation becomes InputError."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    values.update(overrides)
    try:
        return config_cls(**values)
    except ValueError as err:
        raise InputError(fields_as_flags(str(err), [f.name for f in dataclasses.fields(config_cls)])) from None


def fields_as_flags(message: str, fields: Sequence[str]) -> str:
    """A dataclass's validation message as a command-line user reads it: its field names as flags.

    A field is renamed where it opens the message or, for names with an underscore (which prose
    never has), anywhere: "lr must be > 0" → "--lr must be > 0", but the word "head" inside a
    sentence stays a word."""
    if not fields:
        return message
    names = "|".join(sorted(map(re.escape, fields), key=len, reverse=True))
    opening = re.compile(rf"^({names})\b")
    anywhere = re.compile(rf"(?<![-\w])({'|'.join(re.escape(f) for f in fields if '_' in f) or '(?!)'})\b")
    message = opening.sub(lambda m: flag(m.group(1)), message)
    return anywhere.sub(lambda m: flag(m.group(1)), message)


def resolve_device(name: str):
    """``auto`` → CUDA when available, else CPU; an explicit ``cuda`` without a GPU is bad input."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: not a device (use auto, cpu or cuda)") from None


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def read_json_file(path, parameter: str):
    """A JSON file a user passed as `parameter`; InputError (one line) when it is missing or not JSON."""
    import json
    from pathlib import Path

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{{{parameter}}} {path}: no such file", parameter) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{{{parameter}}} {path}: not a JSON file ({err})", parameter) from None


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = 1) -> None:
    """--threads: torch's intra-op threads (recorded with the results; see the README on reproducibility)."""
    shown = "all cores" if default is None else default
    parser.add_argument("--threads", type=int, default=default, metavar="N",
                        help=f"torch intra-op threads (default: {shown})")


def check_threads(threads: int | None) -> int:
    """The thread count --threads asks for (None: one per core); bad input before anything is imported."""
    if threads is None:
        return os.cpu_count() or 1
    if threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    return threads


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (None: one per core); returns it."""
    threads = check_threads(threads)
    import torch

    torch.set_num_threads(threads)
    return threads


def _nearest_existing(path):
    from pathlib import Path

    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def check_output_file(path, flag: str, *, force: bool | None = None) -> None:
    """Refuse, before any work, an output file that could not be written at the end; with `force` given
    (a command's ``--force``), also one that exists unless it is True."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file path")
    if force is False and (path.exists() or path.is_symlink()):
        raise InputError(f"{flag} {path}: exists; pass --force to replace it, or choose another file")
    _check_writable_parent(path, flag)


def check_output_dir(path, flag: str) -> None:
    """Refuse, before any work, an output folder that could not be made or written at the end."""
    from pathlib import Path

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: exists and is not a folder")
    _check_writable_parent(path / "x", flag, shown=path)


def _check_writable_parent(path, flag: str, shown=None) -> None:
    """`shown`: the path as the user typed it, for the message (default: `path`)."""
    import tempfile

    shown = path if shown is None else shown
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise InputError(f"{flag} {shown}: {existing} is a file, so the folder cannot be made")
    try:  # the only sure test: make (and at once remove) a file where the output will go
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(f"{flag} {shown}: cannot write in {existing} ({err.strerror or type(err).__name__})") from None


# Evaluation and the analyses default to one thread, as training does: on ML-100K, evaluate ran 2.2–4.0k
# events/s on all (two) cores beside one busy process against 12.7k on one, and beside two busy processes
# 23–31k on one against 16–20k on two (README, "Threads and reproducibility"). --threads 2 on an idle machine.
HELDOUT_THREADS = 1


def add_heldout_arguments(parser: argparse.ArgumentParser, threads: int | None = HELDOUT_THREADS) -> None:
    """--data, --split, --json, --device and --threads (default `threads`, None: all cores): what every
    tool reading held-out data takes."""
    parser.add_argument("--data", type=_path, help="prepared dataset (default: the one the checkpoint records; "
                        "required for a model trained elsewhere)")
    parser.add_argument("--split", default="test", choices=("valid", "test"), help="held-out split (default: test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    foreign = parser.add_argument_group("models trained elsewhere (RecBole 1.2.1 GRU4Rec/SASRec, official GRU4Rec)")
    foreign.add_argument("--checkpoint-format", nargs="+", choices=CHECKPOINT_FORMATS, metavar="FORMAT",
                         help=f"{'|'.join(CHECKPOINT_FORMATS)}: one for every checkpoint or one per checkpoint "
                              "(default: auto, detected from the classes the file names; nothing in it runs)")
    foreign.add_argument("--item-map", type=_path, metavar="FILE",
                         help="a RecBole model's item order: the .inter file it was trained on (default: the "
                              "data_path/dataset.inter its settings name), or a text file of its item tokens, one per line")
    parser.add_argument("--allow-other-data", action="store_true",
                        help="accept a --data whose content differs from the data the checkpoint was trained on (same "
                             "item map); its held-out split may then overlap the model's training data")
    add_device_argument(parser)
    add_threads_argument(parser, default=threads)


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    """--sample-events N and --sample-seed S: score a seeded random sample of whole held-out sessions."""
    parser.add_argument("--sample-events", type=int, metavar="N",
                        help="score a seeded random sample of whole sessions with at most N events, for a split too "
                             "large to rank in full (default: every event; CIs that resample sessions widen by themselves)")
    parser.add_argument("--sample-seed", type=int, default=0, metavar="S", help="seed of --sample-events (default: 0)")


def check_sample_events(n: int | None) -> None:
    """--sample-events, when given, must be at least 1."""
    if n is not None and n < 1:
        raise InputError(f"--sample-events must be >= 1, got {n}")


def sample_record(full, sample, seed: int) -> dict | None:
    """What a results table says about a sample of sessions (None when the whole split was scored)."""
    if sample is full:
        return None
    return {"sessions": sample.n_sessions, "of_sessions": full.n_sessions, "events": sample.n_transitions,
            "of_events": full.n_transitions, "seed": seed}


CHECKPOINT_FORMATS = ("auto", "native", "recbole", "gru4rec-official")  # foreign.adapter's, named without torch


def checkpoint_sources(args) -> dict:
    """The keyword arguments that tell the library how to read `args`' checkpoints (formats, item map)."""
    return {"formats": args.checkpoint_format, "item_map": args.item_map, "allow_other_data": args.allow_other_data}


DEFAULT_CUTOFFS = (1, 5, 10, 20)


def add_cutoffs_argument(parser: argparse.ArgumentParser) -> None:
    """--k K [K ...]: the one syntax and default of every tool's cut-offs."""
    parser.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_CUTOFFS), metavar="K",
                        help=f"cut-offs (default: {' '.join(map(str, DEFAULT_CUTOFFS))})")


def check_cutoffs(ks, n_items: int | None = None) -> list[int]:
    """Sorted distinct cut-offs; InputError for K < 1 or, given the catalogue size, K > n_items."""
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise InputError(f"--k values must be >= 1, got {' '.join(map(str, ks))}")
    if n_items is not None and max(ks) > n_items:
        raise InputError(f"--k {max(ks)} is larger than the catalogue ({n_items} items)")
    return sorted(set(ks))


def _path(text: str):
    from pathlib import Path

    return Path(text)
