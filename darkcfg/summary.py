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


def _stride(o: object) -> str | None:
    sx = getattr(o, "stride_x", getattr(o, "stride", None))
    sy = getattr(o, "stride_y", sx)
    if sx is None:
        return None
    return str(sx) if sx == sy else f"{sx},{sy}"


def _window(spec: LayerSpec) -> str:
    """`size x size/stride(dilation)` for windowed layers, read from whatever options they have."""
    o = spec.options
    if spec.type == "upsample":
        return f"{abs(o.stride)}x" if o.stride > 0 else f"/{-o.stride}"
    size, stride = getattr(o, "size", None), _stride(o)
    if isinstance(size, int) and stride is not None:
        dilation = getattr(o, "dilation", 1)
        return f"{size} x {size}/{stride}" + (f"({dilation})" if dilation > 1 else "")
    if stride is not None and stride != "1":
        return f"/{stride}"
    return ""


def _filters(spec: LayerSpec) -> str:
    o = spec.options
    filters = getattr(o, "filters", None)
    if isinstance(filters, int):
        groups = getattr(o, "groups", 1)
        return str(filters) if groups == 1 else f"{filters}/{groups}"
    outputs = getattr(o, "outputs", None)
    return str(outputs) if isinstance(outputs, int) else ""


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
    head = (f"{'layer':>5}  {'type':<14} {'filters':>7}  {'size/strd(dil)':<15} {'from':<15} "
            f"{'input':>17} -> {'output':<17} {'BFLOPs':>8} {'weights':>11}")
    lines = [head]
    for r in rows(network):
        lines.append(f"{r.index:>5}  {r.type:<14} {r.filters:>7}  {r.window:<15} {r.inputs:<15} "
                     f"{r.input:>17} -> {r.output:<17} {r.bflops:>8.3f} {r.params:>11,}")
    net = network.net
    lines.append(f"input {net.width} x {net.height} x {net.channels}, {len(network.layers)} layers, "
                 f"{network.weight_count:,} weights ({network.weight_count * 4 / 1e6:.1f} MB as "
                 f".weights), outputs: {', '.join(map(str, network.output_layers))}")
    lines.append(f"Total BFLOPS {network.total_bflops:5.3f}")
    return "\n".join(lines)
