"""The builder registry and the small modules several layer types share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import INPLACE_ACTIVATIONS, activation_function
from ..graph import LayerSpec, cdiv
from ..tree import Tree

__all__ = ["Builder", "register_builder", "builder_for", "builds", "Activation", "BatchNorm2d",
           "BatchNorm1d", "window_pads", "pad_or_crop", "PoolWindow", "deferred_init", "conv2d", "linear", "softmax_tree", "tree_group_sizes"]

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


_DEFER_INIT: ContextVar[bool] = ContextVar("darkcfg_defer_init", default=False)


@contextmanager
def deferred_init() -> Iterator[None]:
    """Build conv/linear weights without torch's random initialisation, which is most of a
    build's time (yolov4: ~1 s): the caller is about to load them or initialise them itself."""
    token = _DEFER_INIT.set(True)
    try:
        yield
    finally:
        _DEFER_INIT.reset(token)


def conv2d(*args, **kwargs) -> nn.Conv2d:
    """nn.Conv2d, left uninitialised inside :func:`deferred_init`."""
    if _DEFER_INIT.get():
        return nn.Conv2d(*args, device="meta", **kwargs).to_empty(device="cpu")
    return nn.Conv2d(*args, **kwargs)


def linear(*args, **kwargs) -> nn.Linear:
    """nn.Linear, left uninitialised inside :func:`deferred_init`."""
    if _DEFER_INIT.get():
        return nn.Linear(*args, device="meta", **kwargs).to_empty(device="cpu")
    return nn.Linear(*args, **kwargs)


class Activation(nn.Module):
    """A named Darknet activation (its name shows in `print(model)`).

    `fresh_input=True`: the caller hands over a tensor nobody else holds (a conv's output), so
    without autograd the activation may overwrite it instead of allocating another."""

    def __init__(self, name: str, *, fresh_input: bool = False) -> None:
        super().__init__()
        self.name = name
        self.fn = activation_function(name)
        self.fn_ = INPLACE_ACTIVATIONS.get(name) if fresh_input else None

    def forward(self, x: Tensor) -> Tensor:
        if self.fn_ is not None and not (torch.is_grad_enabled() and x.requires_grad):
            return self.fn_(x)
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


# The training package's batch norm (Darknet's statistics, rolling factors and backward), used by
# every BatchNorm module in train mode while a trainer runs a pass; None: torch's own.
TRAIN_BATCHNORM: ContextVar[Callable[[nn.Module, Tensor], Tensor] | None] = ContextVar(
    "darkcfg_train_batchnorm", default=None)


class _NoBatchCount:
    """Darknet keeps no batch counter: no `num_batches_tracked` buffer or state_dict key.

    torch's BatchNorm adds that key to any state dict without version metadata (a plain dict, a
    remapped state_dict, safetensors' load_file) and then reports it as unexpected; a stray one
    from another tool is dropped instead."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, {**local_metadata, "version": 2}, *args)

    def forward(self, x: Tensor) -> Tensor:
        train_bn = TRAIN_BATCHNORM.get() if self.training else None
        return super().forward(x) if train_bn is None else train_bn(self, x)


class BatchNorm2d(_NoBatchCount, nn.BatchNorm2d):
    """BatchNorm with Darknet's eps (1e-5 inside the sqrt) and no `num_batches_tracked` key."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-5)
        self.register_buffer("num_batches_tracked", None)


class BatchNorm1d(_NoBatchCount, nn.BatchNorm1d):
    """BatchNorm for [connected] layers, same conventions as :class:`BatchNorm2d`."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-5)
        self.register_buffer("num_batches_tracked", None)


def pad_or_crop(x: Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> Tensor:
    """F.pad with (left, right, top, bottom) amounts that may be negative (a crop), applied as
    one: F.pad crops first, so it refuses a crop larger than the map even when the padding on
    the other side makes up for it."""
    left, right, top, bottom = pads
    if min(pads) >= 0:
        return F.pad(x, pads, value=value)
    x = F.pad(x, (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)), value=value)
    h, w = x.shape[-2:]
    return x[..., max(-top, 0):h - max(-bottom, 0), max(-left, 0):w - max(-right, 0)]


def window_pads(extent: int, out: int, size: int, stride: int, before: int) -> tuple[int, int]:
    """Padding (before, after) so a plain window op yields exactly `out` positions; after may be <0."""
    return before, (out - 1) * stride + size - extent - before


class PoolWindow(nn.Module):
    """Where Darknet's [maxpool] and [local_avgpool] put their windows: starting at -padding//2
    (padding is the total), `(extent + padding - size) / stride + 1` of them per axis.

    A base class: `symmetric` says when torch's own pooling padding places them the same way,
    `pads(h, w)` gives the F.pad amounts that do otherwise."""

    def __init__(self, size: int, stride_y: int, stride_x: int, padding: int) -> None:
        super().__init__()
        self.size = size
        self.stride = (stride_y, stride_x)
        self.padding = padding
        half = padding // 2
        self.symmetric = padding == 2 * half and half <= size // 2  # within torch's limit

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom); right/bottom may be negative (a crop)."""
        sy, sx = self.stride
        out_h = cdiv(h + self.padding - self.size, sy) + 1
        out_w = cdiv(w + self.padding - self.size, sx) + 1
        top, bottom = window_pads(h, out_h, self.size, sy, self.padding // 2)
        left, right = window_pads(w, out_w, self.size, sx, self.padding // 2)
        return left, right, top, bottom

    def padding_is_wasteful(self, h: int, w: int) -> bool:
        """Windows far larger than the map (`size=20000` on 16x16): padding the map to hold them
        would take gigabytes, so the windows are clipped to the map instead (:meth:`spans`)."""
        left, right, top, bottom = self.pads(h, w)
        return (h + top + bottom) * (w + left + right) > 4 * h * w + 65536

    def spans(self, extent: int, axis: int) -> list[tuple[int, int]]:
        """Each window's part inside the map along one axis (0: height, 1: width), as
        [start, stop) index pairs; empty when a window covers only padding."""
        stride = self.stride[axis]
        out = cdiv(extent + self.padding - self.size, stride) + 1
        before = self.padding // 2
        return [(max(0, k * stride - before), min(extent, k * stride - before + self.size))
                for k in range(out)]

    def extra_repr(self) -> str:
        return f"size={self.size}, stride={self.stride}, padding={self.padding}"


def tree_group_sizes(tree: Tree) -> Tensor:
    """Sizes of the tree's non-empty softmax groups in order (they tile the nodes); pass it to
    :func:`softmax_tree` instead of the tree to save rebuilding it on every call."""
    return torch.tensor([s for s in tree.group_size if s], dtype=torch.long)


def softmax_tree(x: Tensor, tree: Tree | Tensor, dim: int = 1) -> Tensor:
    """Darknet's softmax_tree: a separate softmax over each group of sibling nodes along `dim`.

    `x.shape[dim]` must equal the tree's node count; `tree` is a :class:`Tree` or the result of
    :func:`tree_group_sizes`. Groups are contiguous runs of nodes: a segmented softmax."""
    sizes = tree_group_sizes(tree) if isinstance(tree, Tree) else tree
    n = int(sizes.sum())
    dim = dim % x.dim()
    if x.shape[dim] != n:
        raise ValueError(f"softmax_tree: dimension {dim} has {x.shape[dim]} values, the tree "
                         f"has {n} nodes")
    if x.numel() == 0:
        return x.clone()
    v = x.reshape(math.prod(x.shape[:dim]), n, -1)
    sizes = sizes.to(x.device)
    lengths = sizes.expand(v.shape[0], -1)
    node_group = torch.repeat_interleave(torch.arange(len(sizes), device=x.device), sizes)
    # Subtracting each group's max (softmax is invariant to it) keeps exp() finite, as Darknet does.
    with torch.no_grad():
        top = torch.segment_reduce(v, "max", lengths=lengths, axis=1)
    e = torch.exp(v - top.index_select(1, node_group))
    total = torch.segment_reduce(e, "sum", lengths=lengths, axis=1)
    return (e / total.index_select(1, node_group)).reshape(x.shape)
