"""Weights saved with one cfg, into a model of another (the usual case: another class count).

The file is read with its own cfg (so every value lands where that cfg puts it), then layer i of
that model gives its tensors to layer i of the new one wherever the two layers have the same type
and the same tensor names and shapes. Every other layer with weights keeps Darknet's
initialisation. Nothing is matched by position in the file, so a changed layer cannot shift the
values of the layers after it.
"""

from __future__ import annotations

from collections.abc import Container

import torch
from torch import Tensor

__all__ = ["transfer"]


def _own_tensors(model, index: int) -> dict[str, Tensor] | None:
    """Layer `index`'s parameters and buffers by name; None when it has none or uses another
    layer's (share_index: its owner's transfer covers them)."""
    spec = model.network.layers[index]
    if spec.params:
        return None
    module = model.layers[index]
    found = dict(module.named_buffers(remove_duplicate=False))
    found.update(module.named_parameters(remove_duplicate=False))
    return found or None


def transfer(source, target, filled: Container[int]) -> tuple[int, ...]:
    """Copy layer i of `source` into layer i of `target` (both DarknetModels) where the types and
    every tensor's name and shape match, for the source layers in `filled` (those that hold values
    from the file). Returns the target layers with tensors of their own that got nothing, in
    order, for the caller to initialise."""
    left: list[int] = []
    n = len(source.network.layers)
    with torch.no_grad():
        for spec in target.network.layers:
            mine = _own_tensors(target, spec.index)
            if mine is None:
                continue
            i = spec.index
            theirs = _own_tensors(source, i) if i < n and i in filled else None
            if (theirs is None or source.network.layers[i].type != spec.type
                    or {k: t.shape for k, t in mine.items()}
                    != {k: t.shape for k, t in theirs.items()}):
                left.append(i)
                continue
            for key, tensor in mine.items():
                tensor.copy_(theirs[key])
    return tuple(left)
