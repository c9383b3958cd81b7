"""GRU4Rec: config validation, initialisation, state carrying, session isolation in evaluation."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from softmax_bottleneck.data import SessionSplit
from softmax_bottleneck.evaluation import evaluate_ranks
from softmax_bottleneck.metrics import target_ranks
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.model import GRU4Rec, carry_state


@pytest.mark.parametrize("bad", [dict(head="mos", n_experts=0), dict(hidden_dim=0), dict(dropout_hidden=1.0),
                                 dict(dropout_embedding=-0.1), dict(head="softmax", n_experts=4),
                                 dict(embedding="tied"), dict(n_layers=0), dict(embedding_dim=8)])
def test_invalid_configs_are_refused(bad):
    with pytest.raises(ValueError):
        ModelConfig(n_items=10, **bad)


def test_mos_defaults_to_four_experts_softmax_to_one():
    assert ModelConfig(n_items=5, head="mos").n_experts == 4
    assert ModelConfig(n_items=5).n_experts == 1


def test_initialisation_follows_gru4rec_bounds():
    model = GRU4Rec(ModelConfig(n_items=300, hidden_dim=16, embedding="separate", embedding_dim=24))
    model.reset_parameters(torch.Generator().manual_seed(0))
    assert model.head.item_weight.abs().max() <= math.sqrt(6 / (300 + 16))
    assert model.grus[0].weight_ih.abs().max() <= math.sqrt(6 / (24 + 16))
    assert model.grus[0].weight_hh.abs().max() <= math.sqrt(6 / (16 + 16))
    assert model.grus[0].bias_ih.abs().max() == 0 and model.head.item_bias.abs().max() == 0


def test_constrained_embedding_is_the_output_item_matrix():
    model = GRU4Rec(ModelConfig(n_items=20, hidden_dim=4))
    items = torch.tensor([3, 7])
    torch.testing.assert_close(model.embed(items), model.head.item_weight[items])
    assert model.input_embedding is None


def test_carry_state_drops_then_zeroes_rows():
    hidden = torch.arange(1.0, 7.0).view(1, 3, 2).requires_grad_()
    out = carry_state(hidden * 1, keep=np.array([True, False, True]), reset=np.array([False, True]))
    assert out.tolist() == [[[1.0, 2.0], [0.0, 0.0]]]
    assert not out.requires_grad  # one-step truncated backprop


def test_dropout_only_in_training():
    model = GRU4Rec(ModelConfig(n_items=20, hidden_dim=8, dropout_embedding=0.5, dropout_hidden=0.5))
    items, hidden = torch.tensor([1, 2, 3]), model.init_hidden(3)
    model.eval()
    a, _ = model.step(items, hidden)
    b, _ = model.step(items, hidden)
    torch.testing.assert_close(a, b)
    model.train()
    c, _ = model.step(items, hidden)
    assert not torch.equal(a, c)


def _sessions(seed, n_sessions=9, n_items=15):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, n_sessions)
    return SessionSplit(items=rng.integers(0, n_items, lengths.sum()), offsets=np.r_[0, np.cumsum(lengths)],
                        timestamps=np.arange(lengths.sum(), dtype=float))


@pytest.mark.parametrize("head", ["softmax", "mos"])
def test_evaluation_matches_one_session_at_a_time_from_zero_state(head):
    """Session-parallel evaluation must give each session exactly what it gets when run alone."""
    model = GRU4Rec(ModelConfig(n_items=15, hidden_dim=6, head=head, n_layers=2)).eval()
    split = _sessions(1)
    expected_ranks, expected_log_p = [], []
    with torch.no_grad():
        for s in range(split.n_sessions):
            items = torch.from_numpy(split.session(s).astype(np.int64))
            hidden = model.init_hidden(1)
            for position in range(1, len(items)):
                output, hidden = model.step(items[position - 1:position], hidden)
                log_p = model.log_probs(output)
                expected_ranks.append(int(target_ranks(log_p, items[position:position + 1])[0]))
                expected_log_p.append(float(log_p[0, items[position]]))
    for batch_size in (1, 4, 100):
        result = evaluate_ranks(model, split, batch_size=batch_size)
        order = np.lexsort((result.positions, result.sessions))
        assert result.ranks[order].tolist() == expected_ranks
        np.testing.assert_allclose(result.target_log_probs[order], expected_log_p, rtol=1e-5, atol=1e-6)


def test_a_separate_input_embedding_names_the_dd_variant_everywhere():
    from softmax_bottleneck.config import VARIANTS, describe, variant_of, variant_settings
    from softmax_bottleneck.model import model_label

    decoupled = ModelConfig(head="softmax", embedding="separate", hidden_dim=8)
    assert variant_of(decoupled) == "softmax-dd" and model_label(decoupled) == "softmax-dd d=8"
    assert describe(dataclasses.asdict(decoupled)) == {"head": "softmax", "variant": "softmax-dd", "hidden_dim": 8,
                                                       "n_experts": 1}
    assert model_label(ModelConfig(head="mos", hidden_dim=8)) == "mos d=8 K=4"
    for variant in VARIANTS:  # each study variant's settings make a config of that variant
        assert variant_of(ModelConfig(**variant_settings(variant))) == variant
    with pytest.raises(ValueError, match="variant must be one of"):
        variant_settings("softmax-xx")
