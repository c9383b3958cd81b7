"""Run the study and draw the paper's figures (PNG and PDF, reproducible bytes).

Trains the GRU4Rec models the profile names (softmax, MoS, sigsoftmax, MoL and softmax-dd over
hidden sizes, MoS over expert counts; cached by a hash of data and settings: a second run
only redraws), runs the rank report, the head comparison, the reachability audit and (on the
synthetic world) the capacity fits on held-out sessions, and writes one PNG and one PDF per figure.

Examples::

    python -m figures                                   # quick profile: 5 heads, synthetic world (~5.5 min on 2 cores)
    python -m figures --profile full                    # the paper's grid (hours on a CPU; --device cuda)
    python -m figures --only spectra --only metrics     # redraw two figures
    python -m softmax_bottleneck.prepare --input ../shared/data/ml-100k/ml-100k.inter --format recbole --out prepared/ml-100k
    python -m figures --data prepared/ml-100k           # the same study on MovieLens-100K (no truth/oracle)
    python -m figures --retune                          # tune every head × d again instead of figures/tuned/
    python -m figures --data prepared/globo --profile real --jobs 2   # a real 10,000-item catalogue (hours)

Every head is trained with settings tuned for it on the valid split (see figures/study.py): the
quick profile's are committed in figures/tuned/quick/; other data or profiles are tuned first,
with the profile's budget, and cached in RESULTS/tuned/.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

from softmax_bottleneck.cli import ArgumentParser, InputError, add_device_argument, resolve_device, run_main

from .profiles import PROFILES

# one module figures/NAME.py per figure, with make(results_dir) -> Figure; loaded when drawn
# (a module may say it does not apply to a study with available(results_dir), e.g. capacity on real data)
FIGURES = ("spectra", "rank_vs_size", "rank_vs_contexts", "rank_vs_threshold", "expressive_rank", "metrics",
           "gain_by_size", "gain_heatmap", "cost", "reach", "capacity")
FORMATS = ("png", "pdf")


def draw(results_dir: Path, out: Path, names: list[str] | None = None) -> list[Path]:
    """Draw the named figures (all by default) from a results folder into `out`; returns the files."""
    from analysis import plots
    from analysis.outputs import write_files

    written = []
    for name in [f for f in FIGURES if not names or f in names]:
        module = importlib.import_module(f"{__package__}.{name}")
        if not getattr(module, "available", lambda results_dir: True)(results_dir):
            if names:
                raise InputError(f"--only {name}: this study has no results for it ({module.__doc__.splitlines()[-1]})")
            continue
        figure = module.make(results_dir)
        write_files(out, {f"{name}.{fmt}": (lambda fmt: lambda path: plots.save(figure, path, fmt))(fmt)
                          for fmt in FORMATS})
        written += [out / f"{name}.{fmt}" for fmt in FORMATS]
    return written


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m figures", description=__doc__)
    parser.add_argument("--data", type=Path, help="a prepared dataset (default: the profile's synthetic world)")
    parser.add_argument("--results", type=Path, help="results folder (default: results/PROFILE, or "
                                                       "results/PROFILE-DATANAME with --data)")
    parser.add_argument("--out", type=Path, help="figures folder (default: RESULTS/figures)")
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="study size (default: quick)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="draw only this figure; repeatable. One of: " + ", ".join(FIGURES))
    parser.add_argument("--retune", action="store_true",
                        help="ignore the committed tuned settings (figures/tuned/) and tune into RESULTS/tuned/")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="cores to use: worker processes (one thread each) for the tunings, the trainings and the "
                             "analyses; no model or number depends on N (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the files written (and the results folder) as JSON")
    add_device_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        began = time.perf_counter()
        if args.jobs < 1:
            raise InputError(f"--jobs {args.jobs}: must be at least 1")
        unknown = sorted(set(args.only or []) - set(FIGURES))
        if unknown:
            raise InputError(f"--only {', '.join(unknown)}: no such figure; choose from "
                             + ", ".join(FIGURES))
        if args.data is not None and not args.data.is_dir():
            raise InputError(f"--data {args.data}: no such prepared dataset folder")
        results = args.results or Path("results") / (args.profile if args.data is None
                                                     else f"{args.profile}-{args.data.resolve().name}")
        out = args.out or results / "figures"
        for flag, folder in (("--results", results), ("--out", out)):
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{flag} {folder}: exists and is not a folder")
        if args.only:  # redraw from the finished study as it is: nothing is trained or analysed
            if not (results / "study.json").is_file():
                raise InputError(f"--only draws from a finished study, and {results.resolve()} holds none; run "
                                 "python -m figures without --only first, or pass --results to the study's folder")
            from .results import study

            study(results)
        else:
            from .study import run_study  # torch: imported once the flags are checked

            run_study(args.profile, results, args.data, device=resolve_device(args.device),
                      committed_tuning=not args.retune, jobs=args.jobs)
        written = draw(results, out, args.only)
        if args.json:
            print(json.dumps({"results": str(results.resolve()), "written": [str(p) for p in written]}))
            return
        print(f"{len(written) // len(FORMATS)} figures ({', '.join(FORMATS)}) in {out}/ "
              f"({time.perf_counter() - began:.0f} s); results in {results.resolve()}/")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
