"""Adagrad with momentum: the dense rule by hand, and indexed (sparse) updates touching only used rows."""

import pytest
import torch

from softmax_bottleneck.optim import AdagradMomentum


@pytest.mark.parametrize("momentum", [0.5, 0.0])
def test_dense_rule_by_hand(momentum):
    """Two dense parameters of different shapes (updated together) follow the rule, with and without
    momentum, to the bit in this order of operations: g / sqrt(acc + eps) · (−lr), then m·μ + that."""
    params = [torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([[0.3], [0.7], [-0.1]]))]
    opt = AdagradMomentum(params, lr=0.1, momentum=momentum, eps=1e-6)
    rng = torch.Generator().manual_seed(0)
    grads = [[torch.randn(p.shape, generator=rng) for p in params] for _ in range(3)]
    accs = [torch.zeros(p.shape) for p in params]
    moms = [torch.zeros(p.shape) for p in params]
    expected = [p.detach().clone() for p in params]
    for step in grads:
        opt.zero_grad()
        assert all(p.grad is None for p in params)
        for p, g in zip(params, step):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(step):
            accs[i] += g * g
            moms[i] = moms[i] * momentum + g / torch.sqrt(accs[i] + 1e-6) * -0.1
            expected[i] += moms[i]
    for p, e in zip(params, expected):  # bit for bit: full-softmax and quick-study models stay reproducible
        assert torch.equal(p.detach(), e)


@pytest.mark.parametrize("momentum", [0.3, 0.0])
def test_sparse_update_matches_dense_on_touched_rows_and_leaves_others(momentum):
    torch.manual_seed(0)
    start = torch.randn(6, 3)
    dense_p, sparse_p = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    dense_opt = AdagradMomentum([dense_p], lr=0.2, momentum=momentum)
    sparse_opt = AdagradMomentum([sparse_p], lr=0.2, momentum=momentum)
    rows = torch.tensor([1, 4, 1])  # a repeated row: gradients must be summed first
    for _ in range(3):
        for p, sparse in ((dense_p, False), (sparse_p, True)):
            p.grad = None
            torch.nn.functional.embedding(rows, p, sparse=sparse).pow(2).sum().backward()
        dense_opt.step()
        sparse_opt.step()
    touched = [1, 4]
    torch.testing.assert_close(sparse_p.detach()[touched], dense_p.detach()[touched])
    untouched = [0, 2, 3, 5]
    torch.testing.assert_close(sparse_p.detach()[untouched], start[untouched])
