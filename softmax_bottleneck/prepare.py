"""Prepare session data: raw interactions (or the synthetic world) → a prepared dataset folder.

Examples (copy-paste; the first runs in seconds on a laptop CPU)::

    python -m softmax_bottleneck.prepare --synthetic --out prepared/synthetic
    python -m softmax_bottleneck.prepare --input ../shared/data/ml-100k/ml-100k.inter --format recbole \\
        --out prepared/ml-100k
    python -m softmax_bottleneck.prepare --input ml-25m/ratings.csv --format movielens --out prepared/ml-25m
    python -m softmax_bottleneck.prepare --input rsc15.tsv --format gru4rec --test-days 1 --out prepared/rsc15 --json
    # any delimited log, a folder or a .tar.gz of files, its columns named (here the Globo.com news clicks)
    python -m softmax_bottleneck.prepare --input ../shared/data/globo-news/clicks.tar.gz --format csv \\
        --session-column session_id --item-column click_article_id --time-column click_timestamp --time-unit ms \\
        --out prepared/globo

The protocol follows the GRU4Rec authors: stable time sort (ties keep file order), 1-hour session
gap, consecutive duplicates removed, items with < 5 and sessions with < 2 events dropped
iteratively on the whole data, then a temporal split on session start (last 10 % test, the
10 % before valid) with every session cut at the split boundaries, and valid/test events of items
unseen in train dropped. Every parameter is a
flag below and is recorded in the folder's meta.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import ArgumentParser, InputError, add_config_arguments, config_from_args, run_main
from .data import FORMATS, PrepareConfig, PreparedDataset, load_interactions, prepare, save_prepared
from .data.prepared import SPLITS, check_destination
from .synthetic import SyntheticConfig, prepare_synthetic


def format_table(dataset: PreparedDataset) -> str:
    rows = [("split", "sessions", "events", "transitions", "items", "mean len")]
    for name in SPLITS:
        s = dataset.meta["splits"][name]
        rows.append((name, f"{s['sessions']:,}", f"{s['events']:,}", f"{s['transitions']:,}", f"{s['items']:,}",
                     f"{s['mean_length']:.2f}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m softmax_bottleneck.prepare", description=__doc__)
    source = parser.add_argument_group("source (one of --input/--format or --synthetic)")
    source.add_argument("--input", type=Path, help="raw interaction file (csv: also a folder or .tar.gz of files)")
    source.add_argument("--format", choices=FORMATS, help="format of --input")
    columns = parser.add_argument_group("--format csv: which column is what (each file has a header line)")
    columns.add_argument("--session-column", metavar="NAME", help="session ids (sessions kept as given)")
    columns.add_argument("--user-column", metavar="NAME", help="user ids (sessions cut at --session-gap)")
    columns.add_argument("--item-column", metavar="NAME", help="item ids")
    columns.add_argument("--time-column", metavar="NAME", help="event times (numbers)")
    columns.add_argument("--time-unit", choices=("s", "ms"), default="s", help="unit of --time-column (default: s)")
    columns.add_argument("--delimiter", choices=("comma", "tab", "semicolon", "pipe"),
                         help="field delimiter (default: sniffed from the first file's header)")
    source.add_argument("--synthetic", action="store_true", help="draw the built-in synthetic world instead")
    parser.add_argument("--out", type=Path, required=True, help="prepared dataset folder to write")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no stage log on stderr")
    add_config_arguments(parser.add_argument_group("preprocessing"), PrepareConfig)
    add_config_arguments(parser.add_argument_group("synthetic world (with --synthetic)"), SyntheticConfig)
    return parser


COLUMN_FLAGS = ("--session-column", "--user-column", "--item-column", "--time-column", "--time-unit", "--delimiter")


def csv_columns(args, argv):
    """The --format csv column settings, checked before the file is read; None for the other formats."""
    if args.format != "csv":
        given = [f for f in COLUMN_FLAGS if _given(f, argv)]
        if given:
            raise InputError(f"{', '.join(given)}: for --format csv only")
        return None
    from .data.delimited import Columns

    missing = [f for f, v in (("--item-column", args.item_column), ("--time-column", args.time_column)) if not v]
    if missing:
        raise InputError(f"--format csv needs {' and '.join(missing)}")
    return Columns(item=args.item_column, time=args.time_column, session=args.session_column,
                   user=args.user_column, time_unit=args.time_unit, delimiter=args.delimiter)


def _given(flag: str, argv: list[str] | None) -> bool:
    """Whether `flag` was typed (not just its default)."""
    words = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return any(w == flag or w.startswith(flag + "=") for w in words)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        log = None if args.quiet else (lambda message: print(message, file=sys.stderr))
        config = config_from_args(PrepareConfig, args)
        check_destination(args.out)  # before reading a 25M-row file, not after
        if args.synthetic:
            if args.input is not None or args.format is not None:
                raise InputError("--synthetic takes no --input/--format")
            if _given("--remove-consecutive-duplicates", argv):
                raise InputError("--synthetic keeps consecutive duplicates (the world's self-transitions are part of "
                                 "its true distribution); drop --remove-consecutive-duplicates")
            dataset = prepare_synthetic(config_from_args(SyntheticConfig, args), config, log=log)
        else:
            if args.input is None or args.format is None:
                raise InputError("give --input PATH --format {" + ",".join(FORMATS) + "}, or --synthetic")
            interactions = load_interactions(args.input, args.format, min_rating=config.min_rating,
                                             columns=csv_columns(args, argv))
            if interactions.sessionised and _given("--session-gap", argv):
                raise InputError(f"--session-gap does not apply: {args.input} is already split into sessions "
                                 "(its session ids are kept); drop the flag")
            dataset = prepare(interactions, config, log=log)
        save_prepared(dataset, args.out)
        if args.json:
            print(json.dumps({"out": str(args.out), "n_items": dataset.n_items,
                              "fingerprint": dataset.fingerprint, "splits": dataset.meta["splits"]}))
        else:
            print(f"prepared {args.out} ({dataset.n_items:,} items, {dataset.fingerprint[:19]})")
            print(format_table(dataset))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
