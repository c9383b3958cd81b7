"""Session-level statistics for per-event metrics: bootstrap intervals, a paired test, quantile bins.

Events of one session share a context history, so they are not independent: every resampling
here works on whole sessions (sums and counts per session), never on events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CI_METHODS = ("percentile", "basic")
REPLICATES_AT_ONCE = 256  # bounded memory: replicates × sessions indices at a time


def session_bootstrap(values: np.ndarray, sessions: np.ndarray, n_bootstrap: int, rng: np.random.Generator, *,
                      level: float = 0.95, method: str = "percentile") -> tuple[float, float]:
    """Interval for the event mean of `values`, resampling whole sessions with replacement.

    method ``percentile``: the replicates' quantiles; ``basic``: those reflected about the
    estimate (2·θ̂ − q_high, 2·θ̂ − q_low). `level` is the coverage (0.95: a 95 % interval).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in CI_METHODS:
        raise ValueError(f"method must be one of {', '.join(CI_METHODS)}, got {method!r}")
    _, inverse = np.unique(sessions, return_inverse=True)
    sums, counts = np.bincount(inverse, weights=values), np.bincount(inverse).astype(np.float64)
    n_sessions, estimates = len(sums), []
    for start in range(0, n_bootstrap, REPLICATES_AT_ONCE):
        picks = rng.integers(0, n_sessions, size=(min(REPLICATES_AT_ONCE, n_bootstrap - start), n_sessions))
        estimates.append(sums[picks].sum(axis=1) / counts[picks].sum(axis=1))
    tail = round(50.0 * (1.0 - level), 10)  # percent in each tail (2.5 for a 95 % interval, exactly)
    low, high = np.percentile(np.concatenate(estimates), [tail, 100.0 - tail])
    if method == "basic":
        estimate = sums.sum() / counts.sum()
        low, high = 2 * estimate - high, 2 * estimate - low
    return float(low), float(high)


def sign_flip_test(differences: np.ndarray, sessions: np.ndarray, n_permutations: int,
                   rng: np.random.Generator) -> float:
    """Two-sided p-value of a paired permutation test: under no difference, each session's summed
    difference is equally likely to have either sign. (1 + extreme) / (1 + permutations)."""
    _, inverse = np.unique(sessions, return_inverse=True)
    sums = np.bincount(inverse, weights=differences)
    observed = abs(sums.sum())
    if observed == 0:
        return 1.0
    extreme = 0
    for start in range(0, n_permutations, REPLICATES_AT_ONCE):
        signs = rng.choice([-1.0, 1.0], size=(min(REPLICATES_AT_ONCE, n_permutations - start), len(sums)))
        extreme += int(np.count_nonzero(np.abs(signs @ sums) >= observed - 1e-12 * observed))
    return (1 + extreme) / (1 + n_permutations)


def quantile_bins(values: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[str]]:
    """(bin index per event, bin labels): quantile bins covering every event (ties may merge bins)."""
    codes, edges = pd.qcut(values, q=n_bins, labels=False, retbins=True, duplicates="drop")
    shown = np.where(np.abs(edges) < 1e-9 * max(np.abs(edges).max(), 1e-300), 0.0, edges)  # rounding noise → 0
    labels = [f"{_edge(shown[i])}–{_edge(shown[i + 1])}" for i in range(len(edges) - 1)]
    return np.asarray(codes, dtype=np.int64), labels


def _edge(value: float) -> str:
    """A bin edge as people read it: whole numbers from 1,000 up ("1,060", never "1.06e+03"), else 3 digits."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
