"""Darknet-style layer table of a network (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass

from .graph import LayerSpec, Network

__all__ = ["Row", "rows", "format_table"]

_SHORT = {"convolutional": "conv", "maxpool": "max", "avgpool": "avg", "connected": "connected",
          "upsample": "upsample", "shortcut": "shortcut", "route": "route"}


@dataclass(frozen=True)
class Row:
    index: int
    type: str
    filters: str
    window: str
    inputs: str
    input: str
    output: str
    bflops: float
    params: int


def _whc(shape) -> str:
    return f"{shape.w} x {shape.h} x {shape.c}"


def _window(spec: LayerSpec) -> str:
    o = spec.options
    if spec.type == "convolutional":
        stride = str(o.stride_x) if o.stride_x == o.stride_y else f"{o.stride_x},{o.stride_y}"
        dil = f"({o.dilation})" if o.dilation > 1 else ""
        return f"{o.size} x {o.size}/{stride}{dil}"
    if spec.type == "maxpool":
        stride = str(o.stride_x) if o.stride_x == o.stride_y else f"{o.stride_x},{o.stride_y}"
        return f"{o.size} x {o.size}/{stride}"
    if spec.type == "upsample":
        return f"{abs(o.stride)}x" if o.stride > 0 else f"/{-o.stride}"
    return ""


def _filters(spec: LayerSpec) -> str:
    o = spec.options
    if spec.type == "convolutional":
        return str(o.filters) if o.groups == 1 else f"{o.filters}/{o.groups}"
    if spec.type == "connected":
        return str(o.outputs)
    return ""


def _inputs(spec: LayerSpec) -> str:
    if spec.inputs == (spec.index - 1,) and spec.type not in ("route", "shortcut"):
        return ""
    return ",".join(str(i) for i in spec.inputs)


def rows(network: Network) -> list[Row]:
    return [Row(l.index, _SHORT.get(l.type, l.type), _filters(l), _window(l), _inputs(l),
                _whc(l.in_shape), _whc(l.out_shape), l.bflops, l.weight_count)
            for l in network.layers]


def format_table(network: Network) -> str:
    """The layer table plus Darknet's `Total BFLOPS` line (same float32 sum, same 3 decimals)."""
    head = (f"{'layer':>5}  {'type':<12} {'filters':>7}  {'size/strd(dil)':<15} {'from':<15} "
            f"{'input':>17} -> {'output':<17} {'BFLOPs':>8} {'weights':>11}")
    lines = [head]
    for r in rows(network):
        lines.append(f"{r.index:>5}  {r.type:<12} {r.filters:>7}  {r.window:<15} {r.inputs:<15} "
                     f"{r.input:>17} -> {r.output:<17} {r.bflops:>8.3f} {r.params:>11,}")
    net = network.net
    lines.append(f"input {net.width} x {net.height} x {net.channels}, {len(network.layers)} layers, "
                 f"{network.weight_count:,} weights ({network.weight_count * 4 / 1e6:.1f} MB as "
                 f".weights), outputs: {', '.join(map(str, network.output_layers))}")
    lines.append(f"Total BFLOPS {network.total_bflops:5.3f}")
    return "\n".join(lines)
