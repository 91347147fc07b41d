"""Darknet's update rule as a torch optimizer (so DDP and checkpoints treat it as any other).

Darknet accumulates `*_updates = -dLoss/dw` over the subdivisions of an iteration, then once per
iteration (update_convolutional_layer, convolutional_layer.c:1599-1617; the GPU's
convolutional_kernels.cu:1343-1356), with B = images per iteration and lr = rate * the layer's
learning_rate=:
    weights: u += -decay*B*w;  w += (lr/B)*u;  u *= momentum
    biases, BN scales: w += (lr/B)*u;  u *= momentum        (no decay)
The buffer `u` is the gradient sum plus decay, so weight decay flows into momentum. Adam (the GPU
build only, adam_update_gpu, blas_kernels.cu:192-222) feeds the same `u` to its moments instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["DarknetSGD"]


class DarknetSGD(torch.optim.Optimizer):
    """Darknet's per-iteration update. Param groups carry `lr_scale` (the layer's learning_rate=),
    `decay` (True for weights), `clip` (weights clamped to +-clip after the update, 0: off) and
    `skip` (this iteration only accumulates, as Darknet's GPU update does for dont_update and
    burnin_update layers: the gradients keep summing, nothing decays).

    `step(rate=, batch=, t=)`: `rate` from the schedule, `batch` = images per iteration, `t` =
    Darknet's batch_num for Adam's bias correction. `grad_scale` multiplies the gradients first
    (DDP averages them over processes; Darknet's buffer is the sum over the iteration's images)."""

    def __init__(self, params: Iterable, *, momentum: float, decay: float, adam: bool = False,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
                 loss_scale: float = 1.0) -> None:
        defaults = dict(lr_scale=1.0, decay=True, clip=0.0, skip=False, momentum=momentum,
                        weight_decay=decay, adam=adam, b1=b1, b2=b2, eps=eps,
                        loss_scale=loss_scale)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None, *, rate: float = 0.0, batch: int = 1, t: int = 1,  # type: ignore[override]
             grad_scale: float = 1.0) -> None:
        for group in self.param_groups:
            ls = group["loss_scale"]
            lr = rate * group["lr_scale"] / ls
            for p in group["params"]:
                u = self._buffer(p)
                if p.grad is not None:
                    u.sub_(p.grad, alpha=grad_scale)
                if group["skip"]:
                    continue
                if group["adam"]:
                    self._adam(p, u, group, lr, group["weight_decay"] * ls, batch, t)
                else:
                    if group["decay"]:
                        u.add_(p, alpha=-group["weight_decay"] * batch * ls)
                    p.add_(u, alpha=lr / batch)
                    u.mul_(group["momentum"])
                if group["clip"] and group["decay"]:
                    p.clamp_(-group["clip"], group["clip"])

    def _buffer(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "update" not in state:
            state["update"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["update"]

    def _adam(self, p: Tensor, u: Tensor, group: dict, lr: float, decay: float, batch: int,
              t: int) -> None:
        """adam_update_gpu: decay (on weights, biases and scales alike) into the summed update,
        Adam's moments of that sum, a bias-corrected step of lr (not lr/B), then the buffer is
        cleared: no momentum besides Adam's own."""
        b1, b2, eps = group["b1"], group["b2"], group["eps"]
        state = self.state[p]
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        u.add_(p, alpha=-decay * batch)
        m.mul_(b1).add_(u, alpha=1 - b1)
        v.mul_(b2).addcmul_(u, u, value=1 - b2)
        mhat = m / (1 - math.pow(b1, t))
        vhat = v / (1 - math.pow(b2, t))
        p.add_(mhat / (vhat.sqrt() + eps), alpha=lr)
        u.zero_()
