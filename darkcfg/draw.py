"""A picture of the layer graph: Graphviz DOT built with the `graphviz` package, drawn by `dot`.

No torch here. One node per layer (index, type, filters, window, output shape W x H x C) plus the
network input; an edge from each of a layer's inputs (`LayerSpec.inputs`). Edges from the
previous layer are plain; the others (routes, shortcuts, `from=` of [sam]/[scale_channels]) are
coloured by the layer that reads them, so skip connections stand out; a dotted edge marks a layer
that uses another's weights (`share_index`). Output layers have a double red border.

Rendering runs a Graphviz `dot` command: Graphviz's own `dot` where it is on PATH, otherwise
`graphviz-pure` (a pure-Rust port installed by ``pip install "darkcfg[graph]"``), which writes
svg, png, jpg and json but not pdf. `.dot`/`.gv` files are the DOT source itself and need no
renderer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .graph import NETWORK_INPUT, LayerSpec, Network
from .summary import rows

__all__ = ["to_dot", "render", "find_renderer", "RenderError", "FORMATS", "SOURCE_FORMATS"]

INSTALL_HINT = 'pip install "darkcfg[graph]" (or install Graphviz, whose `dot` is used first)'

# Formats written as DOT source, without a renderer.
SOURCE_FORMATS = frozenset({"dot", "gv"})
# Formats Graphviz's own `dot` writes that darkcfg offers.
FORMATS = frozenset({"svg", "png", "jpg", "jpeg", "pdf", "ps", "eps", "gif", "json"}) \
    | SOURCE_FORMATS
# What graphviz-pure 0.2 writes of those (its -T list: svg, png, jpg/jpeg/jpe, json, dot, xdot...).
PURE_FORMATS = frozenset({"svg", "png", "jpg", "jpeg", "json"})

# Fill colours by layer type (others are grey); edge colours by the type of the layer reading.
_FILL = {
    "convolutional": "#dbe8f6", "connected": "#dbe8f6", "local": "#dbe8f6",
    "maxpool": "#dcefd9", "avgpool": "#dcefd9", "local_avgpool": "#dcefd9",
    "route": "#fdf1c7", "shortcut": "#fbdcc4", "upsample": "#e6dcf2",
    "sam": "#fbdcc4", "scale_channels": "#fbdcc4",
    "yolo": "#f8d3da", "Gaussian_yolo": "#f8d3da", "region": "#f8d3da", "detection": "#f8d3da",
}
_SKIP_EDGE = {"route": "#2f6db3", "shortcut": "#d0661c", "sam": "#8a5a9e",
              "scale_channels": "#8a5a9e"}
_OUTPUT_BORDER = "#c0202a"


class RenderError(OSError):
    """A Graphviz tool is missing, refuses the format or fails. An OSError, like a missing
    program, so `darkcfg graph` reports it as one line."""


def _shape(shape) -> str:
    return f"{shape.w}x{shape.h}x{shape.c}"


def _label(spec: LayerSpec, filters: str, window: str, short: str) -> str:
    """`index type filters window` over the output shape; routes say which group they take."""
    parts = [str(spec.index), short, filters, window.replace(" x ", "x")]
    o = spec.options
    if spec.type == "route" and getattr(o, "groups", 1) > 1:
        parts.append(f"group {o.group_id + 1}/{o.groups}")
    return " ".join(p for p in parts if p) + "\\n" + _shape(spec.out_shape)


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise RenderError(f"drawing the graph needs the graphviz Python package: {INSTALL_HINT}") \
            from None
    return graphviz


def to_dot(network: Network, *, title: str | None = None, rankdir: str = "TB") -> str:
    """The layer graph as Graphviz DOT source (a digraph; nodes `input`, `L0`, `L1`, ...).

    `title` defaults to the cfg's file name with the layer, weight and BFLOPs totals."""
    graphviz = _graphviz()
    if title is None:
        name = os.path.basename(network.path) if network.path else "cfg"
        title = (f"{name}: {len(network)} layers, {network.weight_count:,} weights, "
                 f"{network.total_bflops:.3f} BFLOPs")
    g = graphviz.Digraph(
        "darknet",
        graph_attr={"rankdir": rankdir, "nodesep": "0.2", "ranksep": "0.22",
                    "label": graphviz.escape(title),
                    "labelloc": "t", "fontname": "Helvetica", "fontsize": "12"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                   "fontsize": "9", "height": "0.3", "margin": "0.08,0.03", "fillcolor": "#eeeeee",
                   "color": "#555555"},
        edge_attr={"arrowsize": "0.5", "color": "#444444"},
    )
    g.node("input", f"input\\n{_shape(network.net.input_shape)}", shape="oval",
           fillcolor="#ffffff")
    outputs = set(network.output_layers)
    for spec, row in zip(network.layers, rows(network), strict=True):
        attrs = {"fillcolor": _FILL.get(spec.type, "#eeeeee")}
        if spec.index in outputs:
            attrs.update(color=_OUTPUT_BORDER, penwidth="1.5", peripheries="2")
        g.node(_node(spec.index), _label(spec, row.filters, row.window, row.type), **attrs)
    for spec in network.layers:
        for j in spec.inputs:
            if j == spec.index - 1:
                g.edge(_node(j), _node(spec.index))
            else:
                color = _SKIP_EDGE.get(spec.type, "#777777")
                g.edge(_node(j), _node(spec.index), color=color, style="dashed", penwidth="1.2")
        for j in spec.params:
            g.edge(_node(j), _node(spec.index), style="dotted", constraint="false",
                   label="weights", fontsize="8", fontname="Helvetica")
    return g.source


def _node(index: int) -> str:
    return "input" if index == NETWORK_INPUT else f"L{index}"


def find_renderer() -> str | None:
    """Graphviz's `dot` if on PATH, else graphviz-pure's command, else None."""
    return shutil.which("dot") or shutil.which("graphviz-pure")


def _format(path: Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = path.suffix[1:]
        if not fmt:
            raise ValueError(f"cannot tell the picture format of {str(path)!r} without a suffix: "
                             f"use one of {_listed(FORMATS)}")
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"unknown picture format {fmt!r} (of {str(path)!r}): use one of "
                         f"{_listed(FORMATS)}")
    return fmt


def _listed(formats) -> str:
    return ", ".join(f".{f}" for f in sorted(formats))


def render(network: Network, path: str | os.PathLike, fmt: str | None = None, *,
           title: str | None = None, timeout: float = 300.0) -> Path:
    """Draw `network` into `path`; the format comes from its suffix unless `fmt` is given.

    `.dot`/`.gv` write the DOT source. Other formats run Graphviz (`dot`, else `graphviz-pure`)
    with `timeout` seconds; the file is written only when it succeeds."""
    path = Path(path)
    fmt = _format(path, fmt)
    source = to_dot(network, title=title)
    if fmt in SOURCE_FORMATS:
        path.write_text(source, encoding="utf-8")
        return path
    exe = find_renderer()
    if exe is None:
        raise RenderError(f"drawing a .{fmt} needs a Graphviz `dot` command and none is on PATH: "
                          f"{INSTALL_HINT}; or write the DOT source with a .dot suffix")
    if Path(exe).name.startswith("graphviz-pure") and fmt not in PURE_FORMATS:
        raise RenderError(f"graphviz-pure (the `dot` found) cannot write .{fmt}: use one of "
                          f"{_listed(PURE_FORMATS | SOURCE_FORMATS)}, or install Graphviz for "
                          f".{fmt}")
    path.write_bytes(_run(exe, fmt, source, timeout))
    return path


def _run(exe: str, fmt: str, source: str, timeout: float) -> bytes:
    """Run `exe -T fmt` on the DOT source, return what it wrote to stdout."""
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=source.encode("utf-8"),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{exe} did not finish drawing the graph within {timeout:g} s") from None
    except OSError as exc:
        raise RenderError(f"cannot run {exe}: {exc.strerror or exc}") from None
    if done.returncode != 0 or not done.stdout:
        message = " ".join(done.stderr.decode("utf-8", "replace").split())[:500]
        raise RenderError(f"{exe} -T{fmt} failed (exit code {done.returncode}): "
                          f"{message or 'no output'}")
    return done.stdout
