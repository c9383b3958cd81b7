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

from softmax_bottleneck.cli import ArgumentParser, run_main
from softmax_bottleneck.errors import InputError

from .outputs import write_files

# pandas and matplotlib load inside the functions that use them: the command answers its flags at once


def read(folder: Path) -> tuple:
    """(trials, importance, best) of a tuner's --out folder: two DataFrames and best.json."""
    import pandas as pd

    folder = Path(folder)
    missing = [n for n in ("trials.csv", "importance.csv", "best.json") if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{{out}} {folder}: no {', '.join(missing)}; run python -m softmax_bottleneck.tune --out "
                         f"{folder} first", "out")
    columns = {"trials.csv": {"number", "state", "value"}, "importance.csv": {"parameter", "importance"}}
    tables = {}
    for name, needed in columns.items():
        try:
            tables[name] = pd.read_csv(folder / name)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(f"{folder / name}: not a tuner's table ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
        lacking = needed - set(tables[name].columns)
        if lacking:
            raise InputError(f"{folder / name}: not a tuner's table (no column {', '.join(sorted(lacking))})")
    for name, column in (("trials.csv", "value"), ("importance.csv", "importance")):
        given = tables[name][column]
        if pd.to_numeric(given, errors="coerce").isna().sum() > given.isna().sum():  # a word where a number goes
            raise InputError(f"{folder / name}: its {column} column must hold numbers")
    try:
        best = json.loads((folder / "best.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{folder / 'best.json'}: unreadable JSON ({err})") from None
    if not isinstance(best, dict) or not isinstance(best.get("metric"), str):
        raise InputError(f"{folder / 'best.json'}: not a tuner's best.json (no metric)")
    return tables["trials.csv"], tables["importance.csv"], best


def write_plots(folder: Path) -> list[str]:
    """history.png and, when there are importances, importance.png; returns the names written."""
    from . import plots

    trials, importance, best = read(folder)
    writers = {"history.png": lambda f: plots.save(plot_tuning_history(trials, metric=f"valid {best['metric']}").figure, f)}
    if len(importance):
        writers["importance.png"] = lambda f: plots.save(plot_importance(importance).figure, f)
    write_files(folder, writers)
    return list(writers)


def plot_tuning_history(trials, ax=None, *, metric: str = "valid metric"):
    """One point per trial (complete: dot, pruned: cross, at its best epoch's value) and the running best."""
    import matplotlib.ticker

    from . import plots

    ax = plots.axes_or_new(ax)
    done = trials[trials["state"].isin(["COMPLETE", "PRUNED"]) & trials["value"].notna()].sort_values("number")
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        part = done[done["state"] == state]
        ax.scatter(part["number"], part["value"], marker=marker, s=28, label=f"{state.lower()} ({len(part)})",
                   color="C0" if state == "COMPLETE" else "C7", zorder=3)
    complete = done[done["state"] == "COMPLETE"]
    if len(complete):
        ax.step(complete["number"], complete["value"].cummax(), where="post", color="C3", label="best so far")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    plots.finish(ax, "trial", metric, "tuning history", loc="lower right")
    return ax


def plot_importance(importance, ax=None):
    """Horizontal bars of Optuna's parameter importances, the most important on top."""
    from . import plots

    ax = plots.axes_or_new(ax)
    ordered = importance.sort_values("importance")
    ax.barh(ordered["parameter"], ordered["importance"], color="C0")
    for y, value in enumerate(ordered["importance"]):
        ax.annotate(f"{value:.2f}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, float(ordered["importance"].max()) * 1.15) if len(ordered) else 1.0)
    ax.set_xlabel("importance (sums to 1)")
    ax.set_title("which settings mattered")
    ax.grid(axis="x", alpha=0.3)
    return ax


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
