"""Reading a study's results folder (see :mod:`figures.study`) for the figure modules."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from softmax_bottleneck.cli import InputError


def _need(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path} is missing: run `python -m figures` (without --only) to produce the results first")
    return path


def study(results_dir) -> dict:
    return json.loads(_need(Path(results_dir) / "study.json").read_text())


def rank(results_dir) -> dict:
    """analysis.rank's rank.json: "models" (one per seed-0 model) and "truth" (or None)."""
    return json.loads(_need(Path(results_dir) / "rank" / "rank.json").read_text())


def spectra(results_dir) -> pd.DataFrame:
    return pd.read_csv(_need(Path(results_dir) / "rank" / "spectrum.csv"))


def metrics(results_dir) -> pd.DataFrame:
    return pd.read_csv(_need(Path(results_dir) / "compare" / "metrics.csv"))


def breakdown(results_dir) -> pd.DataFrame:
    return pd.read_csv(_need(Path(results_dir) / "compare" / "breakdown.csv"))


def compare_summary(results_dir) -> dict:
    return json.loads(_need(Path(results_dir) / "compare" / "compare.json").read_text())


def reach(results_dir) -> dict:
    return json.loads(_need(Path(results_dir) / "reach" / "reach.json").read_text())


def reach_items(results_dir) -> pd.DataFrame:
    return pd.read_csv(_need(Path(results_dir) / "reach" / "reach.csv"))
