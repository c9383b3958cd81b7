"""Writing results: folders whose every file appears whole or not at all, and the CLI body they share."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from softmax_bottleneck.atomic import write_all_or_nothing
from softmax_bottleneck.cli import check_output_dir, check_threads, launched, resolve_device, run_main, set_threads
from softmax_bottleneck.errors import InputError


def write_files(out: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """Create `out` if needed and write every named file into it, all or none (atomic.write_all_or_nothing)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{{out}} {out}: exists and is not a folder", "out")
    write_all_or_nothing(out, writers)


def run_analysis(args, check: Callable[[], object], compute: Callable[[object], object], *,
                 summary: Callable[[object], dict], write: Callable[[Path, object], None],
                 show: Callable[[object], None], files: str, sharded: bool = False) -> int:
    """The body every analysis CLI shares (args: its parsed --threads, --out, --json).

    First what needs no torch: --threads, --out (before any work, not after it) and ``check()``, the
    command's own flags; so bad input is answered at once. Then threads set, ``compute(check())``
    (which imports the heavy modules), ``write(out, result)`` and either ``summary(result)`` as one
    JSON line or ``show(result)`` and a line naming the `files` written. Bad input anywhere: one
    line on stderr, exit 2.

    Under torchrun, a `sharded` analysis computes on every rank (the evaluation's chunks shared among
    them, softmax_bottleneck.distributed) and rank 0 alone writes and prints; any other refuses in one
    line."""
    def body() -> None:
        if launched() and not sharded:
            raise InputError("this analysis does not share its work among torchrun's processes yet; run it as "
                             "one process (python -m ...)")
        check_threads(args.threads)
        if args.out:
            check_output_dir(args.out, "--out")
        checked = check()
        set_threads(args.threads)
        from softmax_bottleneck import distributed  # torch: once the flags are checked

        with distributed.session(resolve_device(getattr(args, "device", "cpu"))):
            result = compute(checked)
            if not distributed.is_main():
                return
        if args.out:
            write(args.out, result)
        if args.json:
            print(json.dumps(summary(result)))
            return
        show(result)
        if args.out:
            print(f"wrote {args.out}/{files}")

    return run_main(body)
