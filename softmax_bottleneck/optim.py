"""Adagrad with momentum, updating only the rows a sparse gradient touches (GRU4Rec's optimizer).

For each parameter: ``acc += g²``, ``m = μ·m − lr·g / sqrt(acc + eps)``, ``p += m``. With a sparse
gradient (item rows gathered with ``sparse=True``) the accumulator, the momentum and the parameter
change only on the touched rows, as in the official implementation; other rows keep their
momentum untouched until they are next in a batch.
"""

from __future__ import annotations

import torch


class AdagradMomentum(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    def _state(self, param: torch.Tensor, momentum: float) -> dict:
        state = self.state[param]
        if not state:
            state["acc"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if momentum > 0:
                state["mom"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self._state(param, momentum)
                grad = param.grad
                if grad.is_sparse:
                    grad = grad.coalesce()  # repeated rows must be summed before the non-linear update
                    rows, values = grad.indices()[0], grad.values()
                    # rows are unique after coalesce: index_add_/index_select/index_copy_ give the same numbers
                    # as advanced indexing (acc[rows] += v²), at a fraction of its cost on CPU
                    acc = state["acc"].index_add_(0, rows, values.square()).index_select(0, rows)
                    update = values / acc.add_(eps).sqrt_() * -lr
                    if momentum > 0:
                        update = state["mom"].index_select(0, rows).mul_(momentum).add_(update)
                        state["mom"].index_copy_(0, rows, update)
                    param.index_add_(0, rows, update)
                else:
                    acc = state["acc"].addcmul_(grad, grad)
                    update = grad / (acc + eps).sqrt_() * -lr
                    if momentum > 0:
                        update = state["mom"].mul_(momentum).add_(update)
                    param.add_(update)
        return loss
