"""Statistics for per-event metrics: bootstrap intervals, paired tests, Holm's adjustment, quantile bins.

Events of one session share a context history, so they are not independent: every resampling
here works on whole sessions (sums and counts per session), never on events. A claim about a head
(not about these trained models) also resamples the seeds: the hierarchical bootstrap draws seeds,
then sessions.
"""

from __future__ import annotations

import warnings

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
    estimate, replicates = bootstrap_replicates(values, sessions, n_bootstrap, rng)
    return interval_from_replicates(estimate, replicates, level=level, method=method)


def bootstrap_replicates(values: np.ndarray, sessions: np.ndarray, n_bootstrap: int, rng: np.random.Generator, *,
                         baseline: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(estimate, replicates) of the event mean of `values` (minus that of `baseline`), resampling the
    models' seeds, then whole sessions.

    `values` and `baseline`: (n_events,) for one model, or (n_seeds, n_events) for the seeds of one
    configuration, on the same events. The estimate is the mean over seeds of each seed's event
    mean. A replicate draws each configuration's seeds with replacement (independently: two heads'
    seeds are not paired), then the sessions with replacement (shared: the events are paired), so the
    interval covers what another set of seeds would give, not only these trained models. With one
    seed per configuration it is the session bootstrap; the sessions are drawn from `rng` exactly as
    then, the seeds from a child of it, so identical seeds give the session interval.
    """
    _, inverse = np.unique(sessions, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    parts = [(+1.0, _session_sums(values, inverse))]
    if baseline is not None:
        parts.append((-1.0, _session_sums(baseline, inverse)))
    estimate = sum(sign * sums.mean(axis=0).sum() for sign, sums in parts) / counts.sum()
    seed_rng = rng.spawn(1)[0] if any(len(sums) > 1 for _, sums in parts) else None
    n_sessions, replicates = len(counts), []
    for start in range(0, n_bootstrap, REPLICATES_AT_ONCE):
        size = min(REPLICATES_AT_ONCE, n_bootstrap - start)
        picks = rng.integers(0, n_sessions, size=(size, n_sessions))
        total = np.zeros(size)
        for sign, sums in parts:
            if len(sums) == 1:
                total += sign * sums[0][picks].sum(axis=1)
            else:  # each replicate's seeds as weights (multiplicity / n_seeds) on the seeds' session sums
                drawn = seed_rng.integers(0, len(sums), size=(size, len(sums)))
                weights = (drawn[:, :, None] == np.arange(len(sums))).sum(axis=1) / len(sums)  # (size, n_seeds)
                total += sign * np.take_along_axis(weights @ sums, picks, axis=1).sum(axis=1)
        replicates.append(total / counts[picks].sum(axis=1))
    return float(estimate), np.concatenate(replicates)


def _session_sums(values: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """(n_seeds, n_sessions) sums of each seed's per-event values per session."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    return np.stack([np.bincount(inverse, weights=row, minlength=inverse.max() + 1) for row in values])


def interval_from_replicates(estimate: float, replicates: np.ndarray, *, level: float = 0.95,
                             method: str = "percentile") -> tuple[float, float]:
    """Percentile (or basic: reflected about the estimate) interval of coverage `level`."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in CI_METHODS:
        raise ValueError(f"method must be one of {', '.join(CI_METHODS)}, got {method!r}")
    tail = round(50.0 * (1.0 - level), 10)  # percent in each tail (2.5 for a 95 % interval, exactly)
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    if method == "basic":
        low, high = 2 * estimate - high, 2 * estimate - low
    return float(low), float(high)


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "no difference" by inverting the percentile interval: twice the smaller share
    of replicates on either side of zero, counted as (1 + n) / (1 + replicates).

    >>> bootstrap_p_value(np.array([0.1, 0.2, 0.3]))  # no replicate at or below zero: 2·1/4
    0.5
    >>> bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0]))
    0.8
    """
    n = len(replicates)
    below, above = int(np.count_nonzero(replicates <= 0)), int(np.count_nonzero(replicates >= 0))
    return min(1.0, 2 * (1 + min(below, above)) / (1 + n))


def welch_p_value(values: list[float], baseline: list[float]) -> float | None:
    """Welch's t-test of two configurations' per-seed means (the seeds as the unit); None below 2 seeds each."""
    if len(values) < 2 or len(baseline) < 2:
        return None
    from scipy.stats import ttest_ind

    if np.ptp(values) == 0 and np.ptp(baseline) == 0:
        return 1.0 if np.mean(values) == np.mean(baseline) else 0.0
    with warnings.catch_warnings():  # seeds that agree to rounding: scipy warns of precision loss, p is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(values, baseline, equal_var=False).pvalue)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate).

    >>> holm([0.01, 0.04, 0.03]).tolist()  # sorted 0.01·3, 0.03·2, max(0.04·1, 0.06)
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def p_value_resolution(p_methods, n_resamples: int, n_sessions: int, level: float = 0.95) -> dict:
    """The smallest p-value the tests of a table can report with `n_resamples` (``p_floor``), the smallest
    Holm-adjusted one over its ``len(p_methods)`` differences (``holm_floor``: the family's size times the
    floor), and, when that cannot go below 1 − `level`, a warning naming the resamples that would let it.

    The hierarchical bootstrap's p is at least 2/(1 + B) (:func:`bootstrap_p_value`), a drawn sign-flip
    test's 1/(1 + B), an enumerated one's 2/2^sessions (:func:`sign_flip_test`).

    >>> r = p_value_resolution(["hierarchical bootstrap (seeds, then sessions)"] * 48, 1000, 9862)
    >>> round(r["p_floor"], 6), round(r["holm_floor"], 4), r["warning"][:36]
    (0.001998, 0.0959, "Holm's p cannot go below 0.0959 here")
    """
    methods = list(p_methods)
    if not methods:
        return {"p_floor": None, "holm_floor": None, "warning": None}

    enumerated = 2 ** min(n_sessions, 64) <= n_resamples  # sign_flip_test's rule: every pattern, B not used
    sign_flip = 2 / 2 ** n_sessions if enumerated else 1 / (1 + n_resamples)
    floor = min(2 / (1 + n_resamples) if "bootstrap" in m else sign_flip for m in methods)
    holm_floor = min(1.0, len(methods) * floor)
    alpha, warning = 1 - level, None
    if holm_floor >= alpha:
        warning = (f"Holm's p cannot go below {holm_floor:.3g} here: no p is below {floor:.3g} with {n_resamples} "
                   f"resamples and {n_sessions} sessions, and the family has {len(methods)} differences")
        if not (enumerated and floor == sign_flip):  # the floor is the resamples': more of them lower it
            warning += f"; at least {int(np.ceil(2 * len(methods) / alpha))} resamples (--n-bootstrap) let it go below {alpha:g}"
    return {"p_floor": floor, "holm_floor": holm_floor, "warning": warning}


def sign_flip_test(differences: np.ndarray, sessions: np.ndarray, n_permutations: int,
                   rng: np.random.Generator) -> float:
    """Two-sided p-value of a paired permutation test: under no difference, each session's summed
    difference is equally likely to have either sign.

    Where 2^sessions ≤ `n_permutations`, every sign pattern is enumerated and the p-value is exact (the
    share of patterns at least as extreme, the observed one among them); otherwise patterns are drawn
    and p = (1 + extreme) / (1 + permutations), which counts the observed pattern and is never 0.
    """
    _, inverse = np.unique(sessions, return_inverse=True)
    sums = np.bincount(inverse, weights=differences)
    observed = abs(sums.sum())
    if observed == 0:
        return 1.0
    threshold = observed - 1e-12 * observed
    if 2 ** len(sums) <= n_permutations:
        patterns = 1.0 - 2.0 * ((np.arange(2 ** len(sums))[:, None] >> np.arange(len(sums))) & 1)
        return int(np.count_nonzero(np.abs(patterns @ sums) >= threshold)) / 2 ** len(sums)
    extreme = 0
    for start in range(0, n_permutations, REPLICATES_AT_ONCE):
        signs = rng.choice([-1.0, 1.0], size=(min(REPLICATES_AT_ONCE, n_permutations - start), len(sums)))
        extreme += int(np.count_nonzero(np.abs(signs @ sums) >= threshold))
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
