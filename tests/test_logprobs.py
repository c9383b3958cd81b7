"""The blocked log-prob engine: every block, the dense form and the factorisation equal the head's own
log-probabilities, whatever the tiling; non-finite heads are refused."""

import numpy as np
import pytest
import torch

from analysis.logprobs import LogProbMatrix
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.heads import build_head

N_ITEMS, DIM, N_CONTEXTS = 53, 5, 29


def make(kind, bias=True, experts=3, scale=1.0):
    head = build_head(kind, N_ITEMS, DIM, bias, experts if kind == "mos" else 1)
    head.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        head.item_weight.mul_(scale)
        if bias:
            head.item_bias.normal_(0, 2, generator=torch.Generator().manual_seed(1))
    states = torch.tanh(torch.randn(N_CONTEXTS, DIM, generator=torch.Generator().manual_seed(2)) * 2).numpy()
    with torch.no_grad():
        reference = head.double().log_probs(torch.from_numpy(states).double()).numpy()
    return head, states, reference


@pytest.mark.parametrize("kind, experts", [("softmax", 1), ("mos", 3), ("mos", 1), ("sigsoftmax", 1), ("mol", 1)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tile_bytes", [8 * 7 * 3, 1 << 20])  # many ragged tiles, and one tile
def test_blocks_equal_the_heads_log_probs(kind, experts, bias, tile_bytes):
    head, states, reference = make(kind, bias, experts)
    matrix = LogProbMatrix(head, states, tile_bytes=tile_bytes)
    assert matrix.shape == reference.shape
    np.testing.assert_allclose(matrix.dense(), reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(matrix.rows(4, 17), reference[4:17], rtol=0, atol=1e-12)
    buffer = np.full((40, 40), np.nan)
    block = matrix.columns(10, 30, row_stop=20, out=buffer)
    np.testing.assert_allclose(block, reference[:20, 10:30], rtol=0, atol=1e-12)
    assert np.shares_memory(block, buffer)
    with pytest.raises(ValueError):
        matrix.columns(0, 30, row_stop=20, out=np.empty((20, 20)))
    factors = matrix.factors()
    assert (factors is not None) == (kind in ("softmax", "mos") and experts == 1) == matrix.has_factors
    if factors is not None:
        np.testing.assert_allclose(factors[0] @ factors[1].T, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["softmax", "mos"])
def test_online_normaliser_is_exact_when_the_maximum_moves_late(kind, monkeypatch):
    """Logits spread over hundreds of nats, the largest in the last tile: no overflow, no loss."""
    from analysis import logprobs

    monkeypatch.setattr(logprobs, "TILE_COLUMNS", 4)  # 14 item tiles: the running maximum moves again and again
    head, states, _ = make(kind, scale=60.0)
    with torch.no_grad():
        head.item_bias[-1, 0] = 400.0
    with torch.no_grad():
        reference = head.double().log_probs(torch.from_numpy(states).double()).numpy()
    matrix = LogProbMatrix(head, states, tile_bytes=8 * 4 * 4)  # 4 × 4 tiles; the largest logit is in the last
    np.testing.assert_allclose(matrix.dense(), reference, rtol=1e-13, atol=1e-10)
    # the normalisers themselves, against a logsumexp over each expert's whole logit row at once
    log_prior, expert_states = head.expert_factors(torch.from_numpy(states).double())
    items = head.item_factors().detach()
    expected = torch.logsumexp(torch.einsum("kcr,ir->kci", expert_states.detach(), items), dim=2).T.numpy()
    np.testing.assert_allclose(matrix.normalisers().numpy(), expected, rtol=1e-14, atol=0)
    np.testing.assert_allclose(np.exp(matrix.dense()).sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_a_head_of_scores_is_served_by_its_own_scores_with_the_normaliser_computed_once(monkeypatch):
    """Sigsoftmax is no mixture: blocks come from Head.scores on item tiles, minus one online logsumexp."""
    from analysis import logprobs

    monkeypatch.setattr(logprobs, "TILE_COLUMNS", 4)
    head, states, _ = make("sigsoftmax", scale=60.0)
    with torch.no_grad():
        head.item_bias[-1, 0] = 400.0  # the largest score in the last tile
        reference = head.double().log_probs(torch.from_numpy(states).double()).numpy()
    matrix = LogProbMatrix(head, states, tile_bytes=8 * 4 * 4)
    calls = []
    real = type(matrix.head).scores
    monkeypatch.setattr(type(matrix.head), "scores", lambda self, *a: calls.append(1) or real(self, *a))
    np.testing.assert_allclose(matrix.dense(), reference, rtol=1e-13, atol=1e-10)
    first = len(calls)
    matrix.columns(0, N_ITEMS)
    assert len(calls) - first == first // 2  # the second pass scores each tile once: the normalisers are kept
    assert not matrix.mixture and matrix.factors() is None


def test_the_head_is_analysed_in_float64_without_touching_the_model():
    head, states, _ = make("mos")
    LogProbMatrix(head, states)
    assert head.item_weight.dtype == torch.float64  # make() converted it; the analysis copies
    float_head = build_head("softmax", N_ITEMS, DIM, True)
    float_head.reset_parameters(torch.Generator().manual_seed(0))
    matrix = LogProbMatrix(float_head, states)
    assert float_head.item_weight.dtype == torch.float32 and matrix.dense().dtype == np.float64


@pytest.mark.parametrize("where", ["weight", "bias"])
def test_non_finite_heads_are_refused_by_name(where):
    head, states, _ = make("mos")
    with torch.no_grad():
        if where == "weight":
            head.item_weight[3, 0] = float("nan")
        else:
            head.item_bias[7, 0] = -float("inf")  # finite normalisers, but log p(item 7) = −inf
    matrix = LogProbMatrix(head, states, name="mos head of x.pt")
    with pytest.raises(InputError, match="mos head of x.pt .*non-finite"):
        matrix.dense()
