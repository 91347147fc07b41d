"""`[softmax]` and `[cost]` with a truth vector: the classifier losses.

softmax_layer.c:57-75: delta = t - p, cost = sum of -log p over the entries whose truth is
non-zero (blas.c softmax_x_ent_cpu). cost_layer.c:74-94: delta = t - x and cost = sum of the
per-entry errors, with sse (l2_cpu) or smooth (smooth_l1_cpu); its backward adds `scale * delta`.
Both backwards add their delta to the previous layer's unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import CfgError
from ...graph import LayerSpec, Network
from ...options import Options
from .base import LossContext, LossOutput, Targets, losses

__all__ = ["SoftmaxLoss", "CostLoss"]

SECRET_NUM = -1234.0


def truth_matrix(targets: Targets, output: Tensor, spec: LayerSpec) -> Tensor:
    """The classifiers' truth vectors as an (N, entries) tensor on the output's device."""
    if not isinstance(targets, Tensor):
        raise CfgError(f"[{spec.header}] trains on a truth vector per image: targets must be "
                       f"a (batch, classes) tensor, not {type(targets).__name__}", spec.loc)
    n, entries = output.shape[0], output[0].numel()
    t = targets.reshape(targets.shape[0], -1) if targets.dim() > 1 else targets[:, None]
    if t.shape != (n, entries):
        raise CfgError(f"targets of shape {tuple(targets.shape)} do not fit [{spec.header}]: "
                       f"it needs ({n}, {entries})", spec.loc)
    if not torch.isfinite(t).all():
        image = int((~torch.isfinite(t)).any(1).nonzero()[0])
        raise CfgError(f"the truth vector of image {image} has a non-finite value", spec.loc)
    return t.to(device=output.device, dtype=output.dtype)


@dataclass
class SoftmaxLoss:
    spec: LayerSpec
    backward_scale: float = 1.0

    def __call__(self, output: Tensor, input: Tensor, targets: Targets,
                 ctx: LossContext) -> LossOutput:
        p = output.reshape(output.shape[0], -1)
        t = truth_matrix(targets, output, self.spec)
        cost = torch.where(t != 0, -torch.log(p), torch.zeros_like(p)).sum()
        return LossOutput((t - p).reshape(output.shape), cost)


@dataclass
class CostLoss:
    spec: LayerSpec
    kind: str  # sse, masked or smooth
    backward_scale: float

    def __call__(self, output: Tensor, input: Tensor, targets: Targets,
                 ctx: LossContext) -> LossOutput:
        x = input.reshape(input.shape[0], -1)
        t = truth_matrix(targets, input, self.spec)
        diff = t - x
        if self.kind == "masked":  # cost_layer.c: a truth of SECRET_NUM (-1234) masks the entry
            diff = torch.where(t == SECRET_NUM, torch.zeros_like(diff), diff)
        if self.kind == "smooth":
            # smooth_l1_cpu: outside |diff| < 1 Darknet's delta is +1 for diff < 0 and -1
            # otherwise, the sign opposite to the error's slope; kept as Darknet computes it.
            small = diff.abs() < 1
            error = torch.where(small, diff * diff, 2 * diff.abs() - 1)
            delta = torch.where(small, diff, torch.where(diff < 0, 1.0, -1.0).to(diff.dtype))
        else:
            error, delta = diff * diff, diff
        return LossOutput(delta.reshape(input.shape), error.sum())


@losses("softmax")
def softmax_loss(spec: LayerSpec, opts: Options, network: Network) -> SoftmaxLoss:
    if spec.options.tree is not None:
        raise CfgError("training a [softmax] with tree= (Darknet's hierarchical softmax) is not "
                       "supported", opts.key_loc("tree"))
    return SoftmaxLoss(spec)


@losses("cost")
def cost_loss(spec: LayerSpec, opts: Options, network: Network) -> CostLoss:
    o = spec.options
    return CostLoss(spec, o.cost_type, backward_scale=o.scale)
