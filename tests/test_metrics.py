"""Metrics against hand-computed ranks, with ties under both policies."""

import numpy as np
import pytest
import torch

from softmax_bottleneck.metrics import metric_table, mrr_at, ndcg_at, recall_at, target_ranks

SCORES = torch.tensor([
    [0.1, 0.5, 0.5, 0.5, 0.9],  # target 2 ties with items 1 and 3, below item 4
    [1.0, 1.0, 1.0, 1.0, 1.0],  # everything tied: the worst rank conservatively, the best optimistically
    [0.3, 0.2, 0.1, 0.0, -1.0],  # target 0 strictly first
    [0.3, 0.2, 0.1, 0.0, -1.0],  # target 4 strictly last
])
TARGETS = torch.tensor([2, 3, 0, 4])


def test_conservative_ranks_count_ties_against_the_target():
    assert target_ranks(SCORES, TARGETS, "conservative").tolist() == [4, 5, 1, 5]


def test_standard_ranks_let_ties_favour_the_target():
    assert target_ranks(SCORES, TARGETS, "standard").tolist() == [2, 1, 1, 5]


def test_metrics_by_hand():
    ranks = np.array([4, 5, 1, 5])
    assert recall_at(ranks, 1) == 0.25 and recall_at(ranks, 4) == 0.5 and recall_at(ranks, 5) == 1.0
    assert mrr_at(ranks, 4) == pytest.approx((1 / 4 + 1) / 4)
    assert mrr_at(ranks, 5) == pytest.approx((1 / 4 + 1 / 5 + 1 + 1 / 5) / 4)
    assert ndcg_at(ranks, 4) == pytest.approx((1 / np.log2(5) + 1) / 4)
    table = metric_table(ranks, (1, 5))
    assert set(table) == {"recall@1", "recall@5", "mrr@1", "mrr@5", "ndcg@1", "ndcg@5"}
    assert table["mrr@1"] == table["recall@1"] == table["ndcg@1"] == 0.25


def test_bad_inputs():
    with pytest.raises(ValueError):
        target_ranks(SCORES, TARGETS, "optimistic")
    with pytest.raises(ValueError):
        target_ranks(torch.full((1, 3), float("nan")), torch.tensor([0]))
    with pytest.raises(ValueError):
        metric_table(np.array([], dtype=int))
