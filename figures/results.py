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
    """study.json, checked: a finished study records its profile's settings, its runs and its analyses."""
    path = _need(Path(results_dir) / "study.json")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a study record (unreadable JSON: {err}); run `python -m figures` again") from None
    if not (isinstance(record, dict) and isinstance(record.get("runs"), list) and record["runs"]
            and isinstance(record.get("analyses"), dict) and isinstance(record.get("settings"), dict)):
        raise InputError(f"{path}: not the record of a finished study (no runs, settings or analyses); run "
                         "`python -m figures` without --only")
    return record


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


def gains(results_dir) -> pd.DataFrame:
    """analysis.comparison.gains_by_size's table: each head against the softmax of its own size."""
    return pd.read_csv(_need(Path(results_dir) / "gains" / "gains.csv"))


def gains_summary(results_dir) -> dict:
    """gains.json: the split, the resampling, Holm's family and the p-values' resolution."""
    return json.loads(_need(Path(results_dir) / "gains" / "gains.json").read_text())


def has_gains(results_dir) -> bool:
    return (Path(results_dir) / "gains" / "gains.csv").is_file()


def reach(results_dir) -> dict:
    return json.loads(_need(Path(results_dir) / "reach" / "reach.json").read_text())


def reach_items(results_dir) -> pd.DataFrame:
    """reach.csv, `reachable` as the nullable boolean it was written as (empty: undecided)."""
    return pd.read_csv(_need(Path(results_dir) / "reach" / "reach.csv"), dtype={"reachable": "boolean"})


def size_sweep_experts(results_dir) -> int:
    """K of the MoS size sweep, as the study's profile set it."""
    return study(results_dir)["settings"]["experts"]


def size_sweep_matrices(results_dir) -> list[dict]:
    """The size sweep's rank reports (every head, MoS with the sweep's K), then the truth's if any."""
    report, experts = rank(results_dir), size_sweep_experts(results_dir)
    matrices = [m for m in report["models"] if m["head"] != "mos" or m["n_experts"] == experts]
    return matrices + ([report["truth"]] if report["truth"] else [])


def model_with(models: list[dict], what: str, **config) -> dict:
    """The one entry of `models` (rows of a results JSON) whose config fields equal `config`."""
    found = [m for m in models if all(m.get(k) == v for k, v in config.items())]
    if not found:
        wanted = ", ".join(f"{k}={v}" for k, v in config.items())
        raise InputError(f"{what} has no model with {wanted}; run python -m figures (without --only) to redo the study")
    return found[0]


def has_capacity(results_dir) -> bool:
    """Whether the study fitted capacities (only on a world with a known truth)."""
    return (Path(results_dir) / "capacity" / "capacity_sweep.csv").is_file()


def capacity_sweep(results_dir) -> list[dict]:
    """analysis.capacity_fit.sweep_rows of the study: one row per head × d × K (NaN read back as None)."""
    frame = pd.read_csv(_need(Path(results_dir) / "capacity" / "capacity_sweep.csv"))
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]

