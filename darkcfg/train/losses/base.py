"""The loss registry: one loss per head or cost section type, computing Darknet's `l.delta`.

Darknet's heads do not differentiate a loss: their forward writes `l.delta` (the direction the
output should move, `truth - prediction` scaled) and `l.cost`, and their backward adds `l.delta`
into the previous layer's delta unchanged. A darkcfg loss reproduces exactly that: given the
layer's train-mode output (and input) and the mini-batch's targets it returns Darknet's delta,
laid out like the layer's torch output, and Darknet's cost. The trainer's backward engine passes
`backward_scale * delta` to the input, as Darknet's backward does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, Union

from torch import Tensor

from ...graph import LayerSpec, Network
from ...options import Options

__all__ = ["LossContext", "LossOutput", "Loss", "LossFactory", "Targets", "register_loss",
           "loss_factory", "registered_losses", "losses"]

# Detectors: one (n_i, 5) float tensor per image, rows [class, x, y, w, h] normalised (YOLO label
# order). Classifiers: a (mini_batch, classes) float tensor, Darknet's truth vector.
Targets = Union[Sequence[Tensor], Tensor]


@dataclass(frozen=True)
class LossContext:
    """What a loss may know about the iteration, as Darknet's `network_state` tells a layer."""

    net_w: int  # network input width and height (Darknet's net.w, net.h)
    net_h: int
    seen: int  # Darknet's *net.seen during this forward: it already counts this mini-batch
    iteration: int  # updates finished before this one (Darknet's cur_iteration)
    max_batches: int
    darknet: str = "gpu"  # "cpu" or "gpu": which build's semantics (see darkcfg.train.semantics)


@dataclass
class LossOutput:
    """Darknet's `l.delta` (shaped like the layer's torch output) and `l.cost[0]`."""

    delta: Tensor
    cost: Tensor  # 0-d


class Loss(Protocol):
    """A loss for one layer, made once per trainer by its :data:`LossFactory`.

    `backward_scale`: what Darknet's backward multiplies the delta by before adding it to the
    previous layer's delta (1 for the heads and softmax, `scale=` for [cost])."""

    backward_scale: float

    def __call__(self, output: Tensor, input: Tensor, targets: Targets,
                 ctx: LossContext) -> LossOutput: ...


# (spec, the section's options as written, the network) -> Loss. The factory reads the section's
# training options (iou_loss=, ignore_thresh=, ...) from `opts`, which inference parsing skipped.
LossFactory = Callable[[LayerSpec, Options, Network], Loss]

_LOSSES: dict[str, LossFactory] = {}


def register_loss(type_name: str, factory: LossFactory, *, replace: bool = False) -> None:
    """Register the loss of a section type (by its canonical name, as `register_builder`)."""
    if type_name in _LOSSES and not replace:
        raise ValueError(f"a loss for {type_name!r} is already registered")
    _LOSSES[type_name] = factory


def loss_factory(type_name: str) -> LossFactory | None:
    return _LOSSES.get(type_name)


def registered_losses() -> tuple[str, ...]:
    return tuple(_LOSSES)


def losses(type_name: str):
    """Decorator form of :func:`register_loss`."""
    def deco(factory: LossFactory) -> LossFactory:
        register_loss(type_name, factory)
        return factory
    return deco
