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


@pytest.mark.parametrize("into", ["a new optimizer", "the same optimizer after a stray step"])
@pytest.mark.parametrize("momentum", [0.5, 0.0])
def test_dense_rule_survives_a_resume_skipped_gradients_and_mixed_dtypes(momentum, into):
    """The dense parameters' state lives in one flat buffer per dtype: a parameter without a gradient in
    some step, two dtypes in one group and a state dict saved, loaded (weights_only) and continued, into
    new parameters and optimizer or into the same ones after a step that the load must undo, all give
    the rule by hand, to the bit."""
    import io

    def make():
        return [torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([[0.3], [0.7]])),
                torch.nn.Parameter(torch.tensor([0.5, 0.25, -1.0], dtype=torch.float64))]
    params = make()
    opt = AdagradMomentum(params, lr=0.1, momentum=momentum, eps=1e-6)
    rng = torch.Generator().manual_seed(1)
    steps = [[torch.randn(p.shape, generator=rng, dtype=p.dtype) for p in params] for _ in range(6)]
    steps[1][1] = None  # the second parameter sits out step 2
    accs = [torch.zeros_like(p) for p in params]
    moms = [torch.zeros_like(p) for p in params]
    expected = [p.detach().clone() for p in params]
    for number, step in enumerate(steps):
        if number == 3:  # a resume: the state through a checkpoint's bytes
            buffer = io.BytesIO()
            torch.save({"params": [p.detach() for p in params], "optimizer": opt.state_dict()}, buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            if into == "a new optimizer":
                params = make()
                opt = AdagradMomentum(params, lr=0.1, momentum=momentum, eps=1e-6)
            else:
                for p in params:
                    p.grad = torch.ones_like(p)
                opt.step()  # not in `expected`: the load below must undo it
            with torch.no_grad():
                for p, value in zip(params, saved["params"]):
                    p.copy_(value)
            opt.load_state_dict(saved["optimizer"])
        for p, g in zip(params, step):
            p.grad = None if g is None else g.clone()
        opt.step()
        for i, g in enumerate(step):
            if g is None:
                continue
            accs[i].addcmul_(g, g)  # as the optimizer adds g² (in float64 a fused multiply-add: g * g would round twice)
            moms[i] = moms[i] * momentum + g / torch.sqrt(accs[i] + 1e-6) * -0.1
            expected[i] += moms[i]
    for p, e in zip(params, expected):
        assert p.dtype == e.dtype and torch.equal(p.detach(), e)
    for p, acc in zip(params, accs):  # the state the optimizer reports is the state it uses
        assert torch.equal(opt.state[p]["acc"], acc)
