"""The builder registry and the small modules several layer types share."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..functional import activation_function
from ..graph import LayerSpec

__all__ = ["Builder", "register_builder", "builder_for", "builds", "Activation", "BatchNorm2d",
           "BatchNorm1d", "window_pads"]

Builder = Callable[[LayerSpec], nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register_builder(type_name: str, builder: Builder, *, replace: bool = False) -> None:
    """Register how to build the torch module of a section type (see `graph.register_section`)."""
    if type_name in _BUILDERS and not replace:
        raise ValueError(f"a builder for {type_name!r} is already registered")
    _BUILDERS[type_name] = builder


def builder_for(type_name: str) -> Builder | None:
    return _BUILDERS.get(type_name)


def builds(type_name: str):
    def deco(fn: Builder) -> Builder:
        register_builder(type_name, fn)
        return fn
    return deco


class Activation(nn.Module):
    """A named Darknet activation (its name shows in `print(model)`)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = activation_function(name)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with Darknet's eps (1e-5 inside the sqrt) and no `num_batches_tracked` key."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-5)
        self.register_buffer("num_batches_tracked", None)


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm for [connected] layers, same conventions as :class:`BatchNorm2d`."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-5)
        self.register_buffer("num_batches_tracked", None)


def window_pads(extent: int, out: int, size: int, stride: int, before: int) -> tuple[int, int]:
    """Padding (before, after) so a plain window op yields exactly `out` positions; after may be <0."""
    return before, (out - 1) * stride + size - extent - before
