"""Adagrad with momentum: the dense rule by hand, and indexed (sparse) updates touching only used rows."""

import torch

from softmax_bottleneck.optim import AdagradMomentum


def test_dense_rule_by_hand():
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdagradMomentum([param], lr=0.1, momentum=0.5, eps=1e-6)
    grads = [torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 2.0])]
    acc, mom, expected = torch.zeros(2), torch.zeros(2), param.detach().clone()
    for g in grads:
        param.grad = g.clone()
        opt.step()
        acc += g * g
        mom = 0.5 * mom - 0.1 * g / torch.sqrt(acc + 1e-6)
        expected += mom
    torch.testing.assert_close(param.detach(), expected)


def test_sparse_update_matches_dense_on_touched_rows_and_leaves_others():
    torch.manual_seed(0)
    start = torch.randn(6, 3)
    dense_p, sparse_p = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    dense_opt = AdagradMomentum([dense_p], lr=0.2, momentum=0.3)
    sparse_opt = AdagradMomentum([sparse_p], lr=0.2, momentum=0.3)
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
