"""Heads: exact, normalised log-probabilities; MoS(K=1) = softmax; sigsoftmax by its formula; sampled = full
loss; rank caps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softmax_bottleneck.config import HEADS
from softmax_bottleneck.heads import (MixtureOfLogitsHead, MixtureOfSoftmaxesHead, SigsoftmaxHead, SoftmaxHead,
                                     build_head, log_mix)

N_ITEMS, DIM = 37, 6


def make_head(kind, bias=True, experts=3, seed=0):
    head = build_head(kind, N_ITEMS, DIM, bias, experts if kind == "mos" else 1).double()
    head.reset_parameters(torch.Generator().manual_seed(seed))
    if bias:
        with torch.no_grad():
            head.item_bias.normal_(0, 1, generator=torch.Generator().manual_seed(seed + 1))
    return head


def hidden(n=11, scale=1.0, seed=2):
    return torch.randn(n, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("bias", [True, False])
def test_probabilities_sum_to_one_in_float64(kind, bias):
    log_p = make_head(kind, bias).log_probs(hidden())
    assert log_p.shape == (11, N_ITEMS) and log_p.dtype == torch.float64
    torch.testing.assert_close(log_p.exp().sum(dim=1), torch.ones(11, dtype=torch.float64), rtol=0, atol=1e-12)


def test_mos_with_one_expert_is_softmax_on_the_projected_state():
    mos = make_head("mos", experts=1)
    softmax = SoftmaxHead(N_ITEMS, DIM, True).double()
    softmax.load_state_dict({"item_weight": mos.item_weight, "item_bias": mos.item_bias})
    h = hidden()
    projected = torch.tanh(h @ mos.projection.weight.T)
    torch.testing.assert_close(mos.log_probs(h), softmax.log_probs(projected), rtol=0, atol=1e-12)


def test_mos_mixes_in_log_space_like_the_probability_mixture():
    mos = make_head("mos", experts=4)
    h = hidden()
    prior = torch.softmax(h @ mos.prior.weight.T, dim=-1)  # (n, K)
    states = torch.tanh(h @ mos.projection.weight.T).view(len(h), 4, DIM)
    expert_p = torch.softmax(states @ mos.item_weight.T + mos.bias, dim=-1)  # (n, K, n_items)
    reference = torch.log((prior[..., None] * expert_p).sum(dim=1))
    torch.testing.assert_close(mos.log_probs(h), reference, rtol=1e-10, atol=1e-12)


def test_the_experts_log_space_mix_is_torchs_logsumexp_in_value_and_gradient():
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 30
    x[0, :2, 1] = -torch.inf  # two experts give an item no mass: the others carry it
    x[1, 1, 2] = 800.0  # exp would overflow (float64: past 709.8) without the column maximum
    mine, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    weights = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (log_mix(mine) * weights).sum().backward()
    (torch.logsumexp(theirs, dim=-2) * weights).sum().backward()
    torch.testing.assert_close(log_mix(x), torch.logsumexp(x, dim=-2), rtol=0, atol=1e-12)
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(log_mix, (torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True),))
    column = torch.full((1, 3, 2), -torch.inf, dtype=torch.float64)
    column[0, 0, 1] = 0.0
    assert log_mix(column).tolist() == [[-torch.inf, 0.0]]  # an item no expert can give stays −inf, as in torch


def test_a_second_derivative_of_the_mix_is_refused_by_name():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad((log_mix(x) * weights).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.parametrize("kind", HEADS)
def test_extreme_logits_stay_finite(kind):
    head = make_head(kind).float()
    with torch.no_grad():
        head.item_weight.mul_(1e3)
    h = hidden(scale=10.0).float()  # logits of order ±1e4
    if kind == "softmax":
        assert (h.double() @ head.item_weight.double().T).abs().max() > 1e4
    log_p = head.log_probs(h)
    assert torch.isfinite(log_p).all()
    assert torch.isfinite(head.loss(h, torch.arange(len(h)) % N_ITEMS)).all()


@pytest.mark.parametrize("kind", HEADS)
def test_sampled_loss_with_all_items_as_candidates_is_the_full_cross_entropy(kind):
    head = make_head(kind)
    h = hidden()
    targets = torch.arange(len(h)) * 3 % N_ITEMS
    full = -head.log_probs(h).gather(1, targets[:, None])[:, 0]
    sampled = head.loss(h, targets, candidates=torch.arange(N_ITEMS))
    torch.testing.assert_close(sampled, full, rtol=0, atol=1e-12)
    if kind == "softmax":  # and both equal torch's cross-entropy on the logits
        logits = h @ head.item_weight.T + head.bias
        torch.testing.assert_close(full, F.cross_entropy(logits, targets, reduction="none"), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", HEADS)
def test_the_loss_is_the_candidate_log_prob_at_the_target_with_its_gradient(kind):
    """MoS mixes only the target column in training: the same loss and gradients as the full mixture."""
    head = make_head(kind)
    h = hidden().requires_grad_()
    candidates = torch.tensor([4, 1, 9, 9, 30, 2, 17, 5, 5, 0, 36, 8])
    log_q = torch.linspace(-2.0, 1.0, len(candidates), dtype=torch.float64)
    targets = torch.arange(len(h)) % len(candidates)
    loss = head.loss(h, targets, candidates, log_q)
    reference = -head.candidate_log_probs(h, candidates, log_q).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-12)
    weights = torch.linspace(0.5, 2.0, len(h), dtype=torch.float64)
    mine = torch.autograd.grad((loss * weights).sum(), [h, *head.parameters()], allow_unused=True)
    theirs = torch.autograd.grad((reference * weights).sum(), [h, *head.parameters()], allow_unused=True)
    for a, b in zip(mine, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_logq_correction_shifts_the_candidate_logits():
    head = make_head("softmax")
    h = hidden()
    candidates = torch.tensor([4, 1, 9, 9, 30])
    log_q = torch.log(torch.tensor([5.0, 1.0, 2.0, 2.0, 7.0], dtype=torch.float64))
    logits = h @ head.item_weight[candidates].T + head.bias[candidates] - log_q
    expected = -torch.log_softmax(logits, dim=1)[:, 2]
    got = head.loss(h, torch.full((len(h),), 2), candidates, log_q)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bias, cap", [(False, DIM + 1), (True, DIM + 2)])
def test_softmax_rank_cap_is_reached_and_mos_exceeds_it(bias, cap):
    softmax = make_head("softmax", bias)
    assert softmax.rank_cap == cap
    h = hidden(n=200)
    assert np.linalg.matrix_rank(softmax.log_probs(h).detach().numpy()) == cap
    mos = make_head("mos", bias, experts=4)
    assert mos.rank_cap is None
    assert np.linalg.matrix_rank(mos.log_probs(h).detach().numpy()) > 3 * cap


def test_sigsoftmax_is_its_formula_with_logsigmoid_and_no_floor():
    head = make_head("sigsoftmax")
    h = hidden()
    z = h @ head.item_weight.T + head.bias
    p = torch.exp(z) * torch.sigmoid(z)
    torch.testing.assert_close(head.log_probs(h), torch.log(p / p.sum(dim=1, keepdim=True)), rtol=0, atol=1e-12)
    with torch.no_grad():
        head.item_bias[0] = -800.0  # log(sigmoid(z)) is -inf here in float64; the exact value is about 2z
        origin = torch.zeros(1, DIM, dtype=torch.float64)  # h = 0: z = b
        log_p, score = head.log_probs(origin), head.scores(origin)
    assert torch.isfinite(log_p).all() and float(score[0, 0]) == pytest.approx(-1600.0, rel=1e-9)
    assert float(log_p[0, 0]) == pytest.approx(float(score[0, 0] - torch.logsumexp(score[0], 0)), rel=1e-12)


def test_sigsoftmax_logq_is_subtracted_from_the_score_not_from_the_logit():
    head = make_head("sigsoftmax")
    h = hidden()
    candidates = torch.tensor([4, 1, 9, 30])
    log_q = torch.log(torch.tensor([5.0, 1.0, 2.0, 7.0], dtype=torch.float64))
    z = h @ head.item_weight[candidates].T + head.bias[candidates]
    expected = -torch.log_softmax(z + F.logsigmoid(z) - log_q, dim=1)[:, 2]
    torch.testing.assert_close(head.loss(h, torch.full((len(h),), 2), candidates, log_q), expected, rtol=0, atol=1e-12)


def test_sigsoftmax_has_no_rank_cap_but_ranks_items_as_its_softmax():
    sig = make_head("sigsoftmax")
    softmax = SoftmaxHead(N_ITEMS, DIM, True).double()
    softmax.load_state_dict(sig.state_dict())
    h = hidden(n=200)
    assert sig.rank_cap is None and isinstance(sig, SigsoftmaxHead)
    assert np.linalg.matrix_rank(sig.log_probs(h).detach().numpy()) > 3 * softmax.rank_cap
    assert torch.equal(sig.log_probs(h).argsort(dim=1), softmax.log_probs(h).argsort(dim=1))


def mol_head(context=2, item=2, dim=None, bias=True, seed=0):
    head = MixtureOfLogitsHead(N_ITEMS, DIM, bias, context, item, dim, temperature=0.2).double()
    head.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for parameter in (head.context_gate.bias, *([head.item_bias] if bias else [])):
            parameter.normal_(0, 1, generator=torch.Generator().manual_seed(seed + 1))
    return head


def test_mol_is_its_formula_computed_pair_by_pair():
    head = mol_head(context=2, item=3, dim=4)
    h = hidden(n=5)
    expected = torch.empty(5, N_ITEMS, dtype=torch.float64)
    a = head.context_projection.weight.view(2, 4, DIM)
    b = head.item_projection.weight.view(3, 4, DIM)
    for c in range(5):
        for i in range(N_ITEMS):
            w = head.item_weight[i]
            logits = torch.stack([F.normalize(a[q] @ h[c], dim=0) @ F.normalize(b[x] @ w, dim=0) / 0.2
                                  for q in range(2) for x in range(3)])
            gates = head.context_gate(h[c]) + head.item_gate.weight @ w + head.logit_gate.weight @ logits
            expected[c, i] = (torch.softmax(gates, dim=0) * logits).sum() + head.bias[i]
    torch.testing.assert_close(head.scores(h), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(head.log_probs(h), torch.log_softmax(expected, dim=1), rtol=0, atol=1e-12)


def test_mol_of_one_pair_is_a_softmax_of_its_component_size_and_more_pairs_lift_the_cap():
    one = mol_head(context=1, item=1, dim=3)
    h = hidden(n=200)
    assert np.linalg.matrix_rank(one.log_probs(h).detach().numpy()) == 3 + 2  # one gate, π ≡ 1: ⟨f, g⟩/τ + b
    mixed = mol_head(context=2, item=2, dim=3)
    assert mixed.rank_cap is None
    assert np.linalg.matrix_rank(mixed.log_probs(h).detach().numpy()) > 3 * (DIM + 2)


def test_sparse_gradients_touch_only_candidate_rows():
    head = make_head("softmax").float()
    head.sparse_gradients = True
    candidates = torch.tensor([3, 5, 5, 8])
    head.loss(hidden().float(), torch.zeros(11, dtype=torch.long), candidates).sum().backward()
    assert head.item_weight.grad.is_sparse and head.item_bias.grad.is_sparse
    assert sorted(set(head.item_weight.grad.coalesce().indices()[0].tolist())) == [3, 5, 8]


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("with_inputs", [True, False])
def test_touched_rows_give_the_sparse_embedding_losses_and_gradients(kind, with_inputs):
    """Inside touched_rows, with every touched item scored once and a negative drawn several times merged
    into one column, the loss is the loss over the candidates as drawn, and item_weight and item_bias get
    the gradients F.embedding(sparse=True) gives: the same rows (the bias's: the candidates' only, the
    inputs do not read it) and the same sums, already coalesced."""
    targets = torch.tensor([3, 5, 8, 30, 3])  # a repeated target, and targets that are also drawn
    negatives = torch.tensor([5, 12, 12, 3, 20, 20, 20, 36])
    candidates = torch.cat([targets, negatives])
    inputs = torch.tensor([8, 1, 1, 20, 5, 7, 7, 0, 9, 36, 2])
    columns = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0])  # each row's target among the candidates
    item_log_q = torch.linspace(-2, 1, N_ITEMS, dtype=torch.float64)
    log_q = torch.cat([torch.linspace(-1, 1, len(targets), dtype=torch.float64), 0.5 * item_log_q[negatives]])
    grads, losses = {}, {}
    for gathered in (False, True):
        head = make_head(kind)
        head.sparse_gradients = True
        with head.touched_rows(targets, negatives, inputs if with_inputs else None) if gathered else torch.enable_grad():
            states = hidden() + (head.embed_items(inputs) if with_inputs else 0.0)
            loss = head.loss(states, columns, candidates, log_q)
            loss.sum().backward()
        grads[gathered], losses[gathered] = (head.item_weight.grad, head.item_bias.grad), loss.detach()
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-12, atol=1e-14)
    for plain, touched in zip(grads[False], grads[True]):
        assert touched.is_sparse and touched.is_coalesced()
        plain = plain.coalesce()
        assert touched.indices().tolist() == plain.indices().tolist()
        torch.testing.assert_close(touched.values(), plain.values(), rtol=1e-12, atol=1e-14)
    assert grads[True][1].indices()[0].tolist() == [3, 5, 8, 12, 20, 30, 36]


def test_touched_rows_leave_no_gradient_after_an_error():
    head = make_head("softmax")
    head.sparse_gradients = True
    with pytest.raises(RuntimeError, match="stop"):
        with head.touched_rows(torch.tensor([1, 2]), torch.tensor([2, 4])):
            head.loss(hidden(), torch.zeros(11, dtype=torch.long), torch.tensor([1, 2])).sum().backward()
            raise RuntimeError("stop")
    assert head.item_weight.grad is None and head._touched is None


def test_unknown_head():
    with pytest.raises(ValueError):
        build_head("sparsemax", 3, 2, True)
    assert isinstance(build_head("mos", 3, 2, True, 2), MixtureOfSoftmaxesHead)


@pytest.mark.parametrize("kind", ["softmax", "mos"])
@pytest.mark.parametrize("bias", [True, False])
def test_expert_factors_give_the_log_probs_as_a_mixture(kind, bias):
    head = make_head(kind, bias)
    h = hidden()
    log_prior, states = head.expert_factors(h)
    logits = states @ head.item_factors().T  # (K, batch, n_items)
    mixture = torch.logsumexp(log_prior.T[..., None] + torch.log_softmax(logits, dim=-1), dim=0)
    torch.testing.assert_close(mixture, head.log_probs(h), rtol=0, atol=1e-12)
    assert states.shape[0] == (3 if kind == "mos" else 1) and states.is_contiguous()


@pytest.mark.parametrize("kind", HEADS)
def test_log_probs_and_states_at_once_equal_them_apart(kind):
    head = build_head(kind, 30, 4, True, 3 if kind == "mos" else 1).double()
    head.reset_parameters(torch.Generator().manual_seed(0))
    hidden = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    log_p, states = head.log_probs_and_states(hidden)
    torch.testing.assert_close(log_p, head.log_probs(hidden), rtol=0, atol=0)
    apart = head.mixture_states(hidden)
    assert (states is None) == (apart is None) and (states is None or all(torch.equal(a, b) for a, b in zip(states, apart)))
    assert head.scores_per_row == 30 * (3 if kind == "mos" else 1)
