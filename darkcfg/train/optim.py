"""Darknet's update rule as a torch optimizer (so DDP and checkpoints treat it as any other).

Darknet accumulates `*_updates = -dLoss/dw` over the subdivisions of an iteration, then once per
iteration (update_convolutional_layer, convolutional_layer.c:1599-1617), with B = images per
iteration and lr = rate * the layer's learning_rate=:
    weights: u += -decay*B*w;  w += (lr/B)*u;  u *= momentum
    biases, BN scales: w += (lr/B)*u;  u *= momentum        (no decay)
The momentum buffer `u` is the gradient sum and its decay: weight decay flows into momentum.
With Adam (GPU build only, adam_update_gpu in blas_kernels.cu) the same `u` feeds Adam's moments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["DarknetSGD"]


class DarknetSGD(torch.optim.Optimizer):
    """Darknet's per-iteration update. Each param group carries `lr_scale` (the layer's
    learning_rate=) and `decay` (True for weights, False for biases and BN scales).

    `step(rate=..., batch=...)`: `rate` from the schedule, `batch` = images per iteration (over
    all processes under DDP, whose all-reduce averages the gradients: pass `grad_scale` = the
    number of processes to turn that mean back into Darknet's sum)."""

    def __init__(self, params: Iterable, *, momentum: float, decay: float, adam: bool = False,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6) -> None:
        defaults = dict(lr_scale=1.0, decay=True, momentum=momentum, weight_decay=decay,
                        adam=adam, b1=b1, b2=b2, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None, *, rate: float = 0.0, batch: int = 1,  # type: ignore[override]
             grad_scale: float = 1.0) -> None:
        for group in self.param_groups:
            lr = rate * group["lr_scale"]
            decay = group["weight_decay"] if group["decay"] else 0.0
            for p in group["params"]:
                state = self.state[p]
                u = state.get("update")
                if u is None:
                    u = state["update"] = torch.zeros_like(p)
                if p.grad is not None:
                    u.sub_(p.grad, alpha=grad_scale)
                if group["adam"]:
                    self._adam(p, u, state, group, lr, decay, batch)
                    continue
                if decay:
                    u.add_(p, alpha=-decay * batch)
                p.add_(u, alpha=lr / batch)
                u.mul_(group["momentum"])

    @staticmethod
    def _adam(p: Tensor, u: Tensor, state: dict, group: dict, lr: float, decay: float,
              batch: int) -> None:
        """adam_update_gpu (blas_kernels.cu): decay into the update buffer, the buffer scaled by
        1/batch into Adam's moments, bias-corrected step, then the buffer is cleared."""
        b1, b2, eps = group["b1"], group["b2"], group["eps"]
        t = state["t"] = state.get("t", 0) + 1
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        if decay:
            u.add_(p, alpha=-decay * batch)
        g = u / batch
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        mhat = m / (1 - math.pow(b1, t))
        vhat = v / (1 - math.pow(b2, t))
        p.add_(mhat / (vhat.sqrt() + eps), alpha=lr)
        u.zero_()
