"""Draw a tuning run's plots: ``python -m analysis.tuning --out DIR``.

Examples::

    python -m softmax_bottleneck.tune --data prepared/synthetic --head mos --hidden-dim 16 --n-trials 4 \\
        --max-epochs 2 --out tuned/mos
    python -m analysis.tuning --out tuned/mos          # tuned/mos/history.png, importance.png

Reads what ``softmax_bottleneck.tune`` wrote in DIR (``trials.csv``, ``importance.csv``,
``best.json``) and draws ``history.png`` (every trial's value at its best epoch, pruned ones
crossed, and the running best) and ``importance.png`` (Optuna's parameter importances). The
library draws nothing itself, so that it never imports a plotting library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from softmax_bottleneck.cli import ArgumentParser, InputError, run_main

from .outputs import write_files


def read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    folder = Path(folder)
    missing = [n for n in ("trials.csv", "importance.csv", "best.json") if not (folder / n).is_file()]
    if missing:
        raise InputError(f"--out {folder}: no {', '.join(missing)}; run python -m softmax_bottleneck.tune --out "
                         f"{folder} first")
    return (pd.read_csv(folder / "trials.csv"), pd.read_csv(folder / "importance.csv"),
            json.loads((folder / "best.json").read_text()))


def write_plots(folder: Path) -> list[str]:
    """history.png and, when there are importances, importance.png; returns the names written."""
    from . import plots

    trials, importance, best = read(folder)
    writers = {"history.png": lambda f: plots.save(plots.plot_tuning_history(
        trials, metric=f"valid {best['metric']}").figure, f)}
    if len(importance):
        writers["importance.png"] = lambda f: plots.save(plots.plot_importance(importance).figure, f)
    write_files(folder, writers)
    return list(writers)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m analysis.tuning", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the tuner's --out folder")
    parser.add_argument("--json", action="store_true", help="print the files written as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        written = [str(args.out / name) for name in write_plots(args.out)]
        print(json.dumps({"written": written}) if args.json else f"wrote {', '.join(written)}")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
