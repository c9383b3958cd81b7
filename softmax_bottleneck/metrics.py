"""Ranking metrics over full item rankings, with the tie policy named.

A target's rank among all items, from scores where higher is better:

- ``conservative`` (the headline): items scoring *equal* to the target count as ranked above it,
  ``rank = #{items: score ≥ target's}``. A model that scores every item alike gets the worst rank.
- ``standard``: ties favour the target, ``rank = 1 + #{items: score > target's}``.

GRU4Rec's ``evaluation.py`` defines the same two modes. Metrics are means over events:
Recall@K = [rank ≤ K], MRR@K = 1/rank if rank ≤ K else 0, NDCG@K = 1/log2(rank + 1) if rank ≤ K
else 0 (one relevant item per event).
"""

from __future__ import annotations

import numpy as np
import torch

from .config import METRICS, TIES



def target_ranks(scores: torch.Tensor, targets: torch.Tensor, ties: str = "conservative") -> torch.Tensor:
    """1-based rank of each row's target among all columns: (batch, n_items), (batch,) → (batch,) int64.

    >>> scores = torch.tensor([[0.5, 0.9, 0.5, 0.1]])
    >>> target_ranks(scores, torch.tensor([0]), "conservative").item(), target_ranks(scores, torch.tensor([0]), "standard").item()
    (3, 2)
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    target_scores = scores.gather(1, targets[:, None])  # (batch, 1)
    if torch.isnan(target_scores).any():
        raise ValueError("NaN scores: cannot rank")
    if ties == "conservative":
        return (scores >= target_scores).sum(dim=1)
    return (scores > target_scores).sum(dim=1) + 1


def event_values(ranks: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Per-event contribution to `metric`@k, float64: the metric is the mean of these.

    >>> event_values(np.array([1, 4, 25]), "mrr", 20).tolist()
    [1.0, 0.25, 0.0]
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    inside = ranks <= k
    if metric == "recall":
        return inside.astype(np.float64)
    if metric == "mrr":
        return np.where(inside, 1.0 / ranks, 0.0)
    if metric == "ndcg":
        return np.where(inside, 1.0 / np.log2(ranks + 1.0), 0.0)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def recall_at(ranks: np.ndarray, k: int) -> float:
    """Share of events whose target is in the top k.

    >>> recall_at(np.array([1, 3, 25]), 20)
    0.6666666666666666
    """
    return float(np.mean(event_values(ranks, "recall", k)))


def mrr_at(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, 0 beyond k.

    >>> mrr_at(np.array([1, 4, 25]), 20)
    0.4166666666666667
    """
    return float(np.mean(event_values(ranks, "mrr", k)))


def ndcg_at(ranks: np.ndarray, k: int) -> float:
    """Mean 1/log2(rank + 1), 0 beyond k.

    >>> ndcg_at(np.array([1, 3, 25]), 20)
    0.5
    """
    return float(np.mean(event_values(ranks, "ndcg", k)))


METRIC_FUNCTIONS = {"recall": recall_at, "mrr": mrr_at, "ndcg": ndcg_at}


def metric_table(ranks: np.ndarray, ks=(1, 5, 10, 20)) -> dict[str, float]:
    """Flat keys such as ``"recall@20"``, for every metric and K."""
    if len(ranks) == 0:
        raise ValueError("no events to score")
    return {f"{name}@{k}": fn(ranks, k) for name, fn in METRIC_FUNCTIONS.items() for k in ks}
