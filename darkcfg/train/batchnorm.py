"""Batch norm in training, as each Darknet build computes it (see Semantics.batchnorm).

Installed into every darkcfg BatchNorm module for the duration of a training pass (the
`TRAIN_BATCHNORM` hook of darkcfg.layers), so the inference modules stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers._common import BatchNorm1d

__all__ = ["DarknetBatchNormFunction", "train_batchnorm", "roll_now", "Roll"]

EPS = 1e-5


def _channel_view(t: Tensor, x: Tensor) -> Tensor:
    return t.view(1, -1, *([1] * (x.dim() - 2)))


class DarknetBatchNormFunction(torch.autograd.Function):
    """forward_batchnorm_layer / backward_batchnorm_layer (batchnorm_layer.c:185-221).

    Forward: mini-batch mean and the unbiased variance (1/(N-1), blas.c:269-283), normalised with
    eps inside the sqrt. Backward is Darknet's, which is not the gradient of that forward: the main
    term divides by sqrt(var) + eps (eps outside the sqrt, blas.c normalize_delta_cpu) and the
    mean/variance terms use 1/N. `bias_learns=False` reproduces the CPU build, whose BN backward
    computes no bias gradient (so the biases of BN convs never learn)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, bias: Tensor, bias_learns: bool
                ) -> tuple[Tensor, Tensor, Tensor]:
        dims = [0, *range(2, x.dim())]
        n = x.numel() // x.shape[1]
        mean = x.mean(dims)
        centred = x - _channel_view(mean, x)
        var = centred.square().sum(dims) / max(n - 1, 1)
        x_norm = centred / _channel_view(torch.sqrt(var + EPS), x)
        y = x_norm * _channel_view(scale, x) + _channel_view(bias, x)
        ctx.save_for_backward(x_norm, centred, var, scale)
        ctx.bias_learns = bias_learns
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, g: Tensor, _mean: Tensor, _var: Tensor):
        x_norm, centred, var, scale = ctx.saved_tensors
        dims = [0, *range(2, g.dim())]
        n = g.numel() // g.shape[1]
        g_scale = (g * x_norm).sum(dims)
        g_bias = g.sum(dims) if ctx.bias_learns else None
        gn = g * _channel_view(scale, g)
        mean_term = gn.sum(dims) * (-1.0 / torch.sqrt(var + EPS))
        var_term = (gn * centred).sum(dims) * (-0.5 * torch.pow(var + EPS, -1.5))
        gx = (gn / _channel_view(torch.sqrt(var) + EPS, g)
              + _channel_view(var_term * 2.0 / n, g) * centred
              + _channel_view(mean_term / n, g))
        return gx, g_scale, g_bias, None


# (bn module, batch mean, unbiased batch variance, keep): the rolling update of one pass,
# r = keep * r + (1 - keep) * stat. Applied at once, or collected (data parallel training).
Roll = Callable[[nn.Module, Tensor, Tensor, float], None]


def roll_now(bn: nn.Module, mean: Tensor, var: Tensor, keep: float) -> None:
    with torch.no_grad():
        bn.running_mean.mul_(keep).add_(mean, alpha=1 - keep)
        bn.running_var.mul_(keep).add_(var, alpha=1 - keep)


def _darknet(bn: nn.Module, x: Tensor, roll: Roll) -> Tensor:
    y, mean, var = DarknetBatchNormFunction.apply(x, bn.weight, bn.bias, False)
    roll(bn, mean, var, 0.95 if isinstance(bn, BatchNorm1d) else 0.9)  # connected_layer.c:191-194
    return y


def _cudnn(bn: nn.Module, x: Tensor, roll: Roll) -> Tensor:
    """cuDNN's training batch norm: biased variance, exact gradient, rolling factor .01 with the
    unbiased variance (cudnnBatchNormalizationForwardTraining, batchnorm_layer.c GPU path)."""
    if roll is roll_now:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            training=True, momentum=0.01, eps=EPS)
    with torch.no_grad():
        dims = [0, *range(2, x.dim())]
        roll(bn, x.mean(dims), x.var(dims, correction=1), 0.99)
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=EPS)


def train_batchnorm(kind: str, roll: Roll = roll_now) -> Callable[[nn.Module, Tensor], Tensor]:
    """The BN function of `Semantics.batchnorm`: "darknet" (the CPU build, no bias gradient) or
    "cudnn"; `roll` applies (or collects) each pass's rolling-statistics update."""
    if kind == "darknet":
        return lambda bn, x: _darknet(bn, x, roll)
    if kind == "cudnn":
        return lambda bn, x: _cudnn(bn, x, roll)
    raise ValueError(f"unknown batch norm kind {kind!r}")
