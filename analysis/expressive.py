"""The rank that matters: how many dimensions a model's predictions use, in the units of the predictions.

For a model M on held-out contexts C and each r of a sweep, :func:`expressive_sweep` finds a rank-r
softmax (free context states, free item factors and an item bias: the family the capacity fit
explores, :func:`analysis.capacity_fit.fit_head`) that approximates M's next-item distributions,
and reports the mean KL(M ‖ approximation) over the contexts and the top-k overlap (the share of
M's top k that the approximation keeps in its top k). The smallest r that reaches KL ≤ ε and
overlap ≥ the bar is the model's **expressive rank**.

The fit starts at the truncated SVD of the double-centred log-prob matrix (rows, then columns
centred: the column means are the bias), which renormalised per row is already a softmax of rank
r with a bias, and polishes it on the KL; it keeps the start where the polish does not improve on
it. A fit finds an approximation, not the best one: **its KL is an upper bound**, and the expressive
rank an upper bound too. For a softmax of size d (rank cap d + 2) the KL is zero, to rounding, from
r = d on: the double-centred matrix of ``log_softmax(h·Wᵀ + b)`` has rank at most d.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.errors import InputError

DEFAULT_EPS = 0.01  # nats
DEFAULT_OVERLAP = 0.99
DEFAULT_K = 20
UPPER_BOUND = "an upper bound: the KL of a rank-r softmax found by a fit, not the best one"


@dataclasses.dataclass
class TeacherContexts:
    """A model's distributions on held-out contexts, in the shape the capacity fit takes (one row each)."""

    log_truth: np.ndarray  # (m, n_items) float64 log-probabilities of the teacher
    previous: np.ndarray = None  # (m,) one free state per context
    weights: np.ndarray = None  # (m,) every context once

    def __post_init__(self):
        self.log_truth = np.ascontiguousarray(self.log_truth, dtype=np.float64)
        m = len(self.log_truth)
        self.previous = np.arange(m) if self.previous is None else self.previous
        self.weights = np.ones(m) if self.weights is None else self.weights


def check_sweep(ranks, n_items: int | None = None, eps: float = DEFAULT_EPS, overlap: float = DEFAULT_OVERLAP) -> list:
    """The sweep's ranks, sorted and distinct; InputError (one line) for r < 1, r above the items, ε ≤ 0 or an
    overlap bar outside (0, 1]."""
    ranks = sorted({int(r) for r in ranks})
    if not ranks or ranks[0] < 1:
        raise InputError(f"{{expressive}} ranks must be >= 1, got {ranks[:1] or 'none'}", "expressive")
    if n_items is not None and ranks[-1] > n_items:
        raise InputError(f"{{expressive}} rank {ranks[-1]} is above the {n_items} items", "expressive")
    if not (np.isfinite(eps) and eps > 0):
        raise InputError(f"{{kl_eps}} must be a finite number > 0, got {eps}", "kl_eps")
    if not (np.isfinite(overlap) and 0 < overlap <= 1):
        raise InputError(f"{{min_overlap}} must be in (0, 1], got {overlap}", "min_overlap")
    return ranks


def double_centred_svd(log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(u, s, vt, bias): the SVD of the log-prob matrix with rows, then columns centred (bias: the column means)."""
    centred = log_p - log_p.mean(axis=1, keepdims=True)
    bias = centred.mean(axis=0)
    u, s, vt = np.linalg.svd(centred - bias, full_matrices=False)
    return u, s, vt, bias


def svd_start(log_p: np.ndarray, r: int, decomposition=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item factors (n, r), item bias (n,), states (m, r)) of the rank-r truncated SVD of the double-centred
    log-prob matrix: ``log_softmax(states · factorsᵀ + bias)`` is a rank-r softmax near `log_p`.
    `decomposition`: :func:`double_centred_svd`'s result, made once for a whole sweep."""
    u, s, vt, bias = double_centred_svd(log_p) if decomposition is None else decomposition
    return np.ascontiguousarray(vt[:r].T), bias, u[:, :r] * s[:r]


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def mean_kl(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """Mean over rows of KL(p ‖ q), float64: the capacity fit's own measure, every row weighted once."""
    import torch

    from .capacity_fit import mean_kl as weighted_kl

    return float(weighted_kl(torch.from_numpy(log_p), torch.from_numpy(log_q), torch.ones(len(log_p), dtype=torch.float64)))


def top_k_overlap(log_p: np.ndarray, log_q: np.ndarray, k: int = DEFAULT_K) -> float:
    """Mean over rows of |top-k(p) ∩ top-k(q)| / k.

    >>> p = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    >>> top_k_overlap(p, p[:, ::-1], k=1), top_k_overlap(p, p, k=2)
    (0.0, 1.0)
    """
    k = min(k, log_p.shape[1])
    rows = np.arange(len(log_p))[:, None]
    mine = np.zeros(log_p.shape, dtype=bool)
    mine[rows, np.argpartition(-log_p, k - 1, axis=1)[:, :k]] = True
    return float(mine[rows, np.argpartition(-log_q, k - 1, axis=1)[:, :k]].sum() / (len(log_p) * k))


def _sweep_point(log_p: np.ndarray, r: int, decomposition, steps: int, seed: int, k: int) -> dict:
    """One r of the sweep: the SVD start's KL and top-k overlap, and the polished fit's (steps > 0)."""
    from .capacity_fit import fit_head

    factors, bias, states = svd_start(log_p, r, decomposition)
    start = log_softmax_rows(states @ factors.T + bias)
    row = {"r": r, "kl_svd": mean_kl(log_p, start), f"overlap_svd@{k}": top_k_overlap(log_p, start, k)}
    if steps > 0:
        config = ModelConfig(head="softmax", hidden_dim=r, n_items=log_p.shape[1], item_bias=True)
        fit = fit_head(config, TeacherContexts(log_p), restarts=0, seed=seed, steps=steps,
                       start=(factors, bias, states))
        import torch

        with torch.no_grad():
            fitted = fit.head.double().log_probs(torch.from_numpy(fit.states)).numpy()
        row.update(kl=mean_kl(log_p, fitted), **{f"overlap@{k}": top_k_overlap(log_p, fitted, k)})
    else:
        row.update(kl=row["kl_svd"], **{f"overlap@{k}": row[f"overlap_svd@{k}"]})
    return row


def expressive_sweep(log_p: np.ndarray, ranks, *, steps: int = 300, seed: int = 0, k: int = DEFAULT_K,
                     eps: float = DEFAULT_EPS, overlap: float = DEFAULT_OVERLAP) -> dict:
    """For each r: the SVD start's and the polished fit's KL and top-k overlap; the expressive rank (the smallest
    r meeting both bars, None when no r of the sweep does)."""
    from softmax_bottleneck import distributed  # torch: not for check_sweep's callers

    log_p = np.ascontiguousarray(log_p, dtype=np.float64)
    ranks = check_sweep(ranks, log_p.shape[1], eps, overlap)
    decomposition = double_centred_svd(log_p)  # one SVD serves every r
    # under torchrun each r's fit is made by one rank (dealt out as the Gram panels are) and gathered
    mine = [r for index, r in enumerate(ranks) if distributed.panel_owner(index) == distributed.rank()]
    made = {row["r"]: row for part in distributed.gather_objects(
        [_sweep_point(log_p, r, decomposition, steps, seed, k) for r in mine]) for row in part}
    rows = [made[r] for r in ranks]
    reached = [row["r"] for row in rows if row["kl"] <= eps and row[f"overlap@{k}"] >= overlap]
    return {"expressive_rank": reached[0] if reached else None, "eps": eps, "min_overlap": overlap, "k": k,
            "steps": steps, "kl_is": UPPER_BOUND, "sweep": rows}
