"""Reading a study's results folder (see :mod:`figures.study`) for the figure modules."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from softmax_bottleneck.errors import InputError


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


def size_sweep_experts(report: dict) -> int | None:
    """K of the MoS size sweep in a rank report: the K shared by the most MoS models."""
    counts: dict[int, int] = {}
    for m in report["models"]:
        if m["head"] == "mos":
            counts[m["n_experts"]] = counts.get(m["n_experts"], 0) + 1
    return max(counts, key=counts.get) if counts else None


def size_sweep_matrices(report: dict) -> list[dict]:
    """The size sweep's rank reports (softmax, and MoS with the sweep's K), then the truth's if any."""
    experts = size_sweep_experts(report)
    matrices = [m for m in report["models"] if m["head"] == "softmax" or m["n_experts"] == experts]
    return matrices + ([report["truth"]] if report["truth"] else [])
