"""Layer-by-layer differences between two cfgs, with weight and BFLOPs deltas. No torch here.

The two layer lists are aligned first (difflib over per-layer signatures: the canonical type plus
the typed options, without the options that hold layer indices), so an inserted or deleted layer
shows as one and the layers after it stay paired. Paired layers are then compared on their typed
options (so `filters = 64` equals `filters=64`, `[conv]` equals `[convolutional]`, `.5` equals
`0.5`), on their inputs mapped through the alignment (a route that still reads the same layer is
unchanged although an insertion renumbered it), and on shapes, weights and BFLOPs.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from .errors import printable
from .graph import NETWORK_INPUT, LayerSpec, Network
from .summary import rows

__all__ = ["Change", "LayerDiff", "NetworkDiff", "diff", "format_diff", "to_dict"]

# Option fields holding the same absolute indices as LayerSpec.inputs: compared as inputs.
_INPUT_FIELDS = {"route": ("layers",), "shortcut": ("sources",), "scale_channels": ("source",),
                 "sam": ("source",)}
# Other option fields holding absolute layer indices: compared mapped through the alignment.
_INDEX_FIELDS = {"convolutional": ("share_index",), "contrastive": ("yolo_layer",)}

# [net] options compared; `inputs` only where it is not width*height*channels.
_NET_FIELDS = ("width", "height", "channels", "inputs", "batch", "letter_box")


@dataclass(frozen=True)
class Change:
    """One value that differs: an option (darkcfg's typed field name; nested ones dotted, e.g.
    `conv.size` of [crnn]) or `inputs`. `a` and `b` are each cfg's own values (layer indices in
    each cfg's own numbering)."""

    name: str
    a: Any
    b: Any
    b_in_a: tuple[int | None, ...] | None = None  # layer indices: b's in a's numbering (None: new)


@dataclass(frozen=True)
class LayerDiff:
    """A layer only in a (`deleted`), only in b (`inserted`), or paired and different
    (`changed`)."""

    kind: str
    a: LayerSpec | None
    b: LayerSpec | None
    options: tuple[Change, ...] = ()  # options and inputs that differ (changed layers)

    @property
    def a_index(self) -> int | None:
        return self.a.index if self.a is not None else None

    @property
    def b_index(self) -> int | None:
        return self.b.index if self.b is not None else None

    @property
    def type(self) -> str:
        return (self.b or self.a).type

    @property
    def weights_delta(self) -> int:
        return _weights(self.b) - _weights(self.a)

    @property
    def bflops_delta(self) -> float:
        return _bflops(self.b) - _bflops(self.a)


@dataclass(frozen=True)
class NetworkDiff:
    """Everything that differs between networks a and b. False when nothing does.

    `pairs` are all aligned (a index, b index) pairs, changed or not; `layers` lists the changed,
    deleted and inserted layers in cfg order."""

    a: Network
    b: Network
    net: tuple[Change, ...]
    layers: tuple[LayerDiff, ...]
    pairs: tuple[tuple[int, int], ...]

    def __bool__(self) -> bool:
        return bool(self.net or self.layers)

    def count(self, kind: str) -> int:
        return sum(1 for d in self.layers if d.kind == kind)

    @property
    def weights_delta(self) -> int:
        return self.b.weight_count - self.a.weight_count

    @property
    def bflops_delta(self) -> float:
        return self.b.total_bflops - self.a.total_bflops


def _weights(spec: LayerSpec | None) -> int:
    return spec.weight_count if spec is not None else 0


def _bflops(spec: LayerSpec | None) -> float:
    return spec.bflops if spec is not None else 0.0


# --- options as flat, comparable values --------------------------------------------------------

def _flat(options: Any, prefix: str = "") -> dict[str, Any]:
    """Typed options as {field: value}, nested dataclasses as dotted names. Options of a type
    that is not a dataclass (a user's own section) are one value, compared with ==."""
    if not is_dataclass(options) or isinstance(options, type):
        return {prefix.rstrip(".") or "options": options}
    out: dict[str, Any] = {}
    for f in fields(options):
        value = getattr(options, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            out.update(_flat(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def _key(value: Any) -> Any:
    """A hashable stand-in for a value, equal exactly when the values are (NaN equals NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, (tuple, list)):
        return tuple(_key(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


def _plain_options(spec: LayerSpec) -> dict[str, Any]:
    """The options without the ones holding layer indices (those are compared mapped)."""
    skip = set(_INPUT_FIELDS.get(spec.type, ())) | set(_INDEX_FIELDS.get(spec.type, ()))
    return {k: v for k, v in _flat(spec.options).items() if k not in skip}


def _signature(spec: LayerSpec) -> tuple:
    return (spec.type, tuple((k, _key(v)) for k, v in _plain_options(spec).items()))


# --- alignment ---------------------------------------------------------------------------------

def _align(a: Network, b: Network) -> list[tuple[str, list[int], list[int]]]:
    """Blocks of ("equal", a indices, b indices) paired one to one, ("delete", a, []) and
    ("insert", [], b), in cfg order. Unequal blocks are aligned again by type alone, so a layer
    with changed options pairs with its counterpart and a layer of another type does not."""
    sa = [_signature(l) for l in a.layers]
    sb = [_signature(l) for l in b.layers]
    blocks: list[tuple[str, list[int], list[int]]] = []
    matcher = difflib.SequenceMatcher(None, sa, sb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "replace":
            blocks.append((tag, list(range(i1, i2)), list(range(j1, j2))))
            continue
        ta = [sa[i][0] for i in range(i1, i2)]
        tb = [sb[j][0] for j in range(j1, j2)]
        sub = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
        for tag2, k1, k2, m1, m2 in sub.get_opcodes():
            if tag2 == "equal":
                blocks.append(("equal", list(range(i1 + k1, i1 + k2)),
                               list(range(j1 + m1, j1 + m2))))
            else:
                if k2 > k1:
                    blocks.append(("delete", list(range(i1 + k1, i1 + k2)), []))
                if m2 > m1:
                    blocks.append(("insert", [], list(range(j1 + m1, j1 + m2))))
    return blocks


# --- comparison --------------------------------------------------------------------------------

def _same(x: Any, y: Any) -> bool:
    return _key(x) == _key(y)


def _sequential(spec: LayerSpec) -> bool:
    return spec.inputs == (spec.index - 1,)


def _layer_changes(a: LayerSpec, b: LayerSpec, mapping: dict[int, int]) -> tuple[Change, ...]:
    """Options and inputs of a paired layer that differ; layer indices compared mapped."""
    changes: list[Change] = []
    oa, ob = _plain_options(a), _plain_options(b)
    for name in list(oa) + [n for n in ob if n not in oa]:
        va, vb = oa.get(name), ob.get(name)
        if (name not in oa or name not in ob or not _same(va, vb)) and not _moot(name, oa, ob):
            changes.append(Change(name, va, vb))
    for name in _INDEX_FIELDS.get(a.type, ()):
        va, vb = getattr(a.options, name, None), getattr(b.options, name, None)
        mapped = mapping.get(va) if isinstance(va, int) else va
        if mapped != vb:
            changes.append(Change(name, va, vb, _back((vb,), mapping) if vb is not None else None))
    # Both following their previous layer is the same wiring, whatever was inserted before.
    if not (_sequential(a) and _sequential(b)):
        mapped_inputs = tuple(mapping.get(j) for j in a.inputs)
        if mapped_inputs != b.inputs:
            changes.append(Change("inputs", a.inputs, b.inputs, _back(b.inputs, mapping)))
    return _merge_xy(changes)


def _back(b_indices: tuple[int, ...], mapping: dict[int, int]) -> tuple[int | None, ...]:
    """b's layer indices in a's numbering (None for a layer only b has)."""
    reverse = {j: i for i, j in mapping.items()}
    return tuple(reverse.get(j) for j in b_indices)


# Fields that mean nothing while another one is off on both sides: the antialiasing blur's
# strides (they hold the cfg's stride, already shown as `stride`) without antialiasing.
_ONLY_WITH = {"aa_stride_x": "antialiasing", "aa_stride_y": "antialiasing"}


def _moot(name: str, oa: dict[str, Any], ob: dict[str, Any]) -> bool:
    flag = _ONLY_WITH.get(name)
    return flag is not None and not oa.get(flag) and not ob.get(flag)


def _merge_xy(changes: list[Change]) -> tuple[Change, ...]:
    """`stride_x` and `stride_y` changing alike read as one `stride` change, as the cfg says it."""
    by_name = {c.name: c for c in changes}
    out: list[Change] = []
    for c in changes:
        base = c.name[:-2] if c.name.endswith(("_x", "_y")) else None
        x, y = by_name.get(f"{base}_x"), by_name.get(f"{base}_y")
        alike = base is not None and x is not None and y is not None and base not in by_name \
            and _same(x.a, y.a) and _same(x.b, y.b)
        if not alike:
            out.append(c)
        elif c is x:
            out.append(Change(base, c.a, c.b, c.b_in_a))
    return tuple(out)


def _reads_previous(a: LayerSpec, b: LayerSpec) -> bool:
    """`in_shape` is the previous layer's output: the input only of layers that read it (not of
    a route elsewhere)."""
    return a.index - 1 in a.inputs or b.index - 1 in b.inputs


def _differs(a: LayerSpec, b: LayerSpec, changes: tuple[Change, ...]) -> bool:
    return bool(changes) or (_reads_previous(a, b) and a.in_shape != b.in_shape) \
        or a.out_shape != b.out_shape or a.weight_count != b.weight_count or a.bflops != b.bflops


def _net_changes(a: Network, b: Network) -> tuple[Change, ...]:
    changes = []
    for name in _NET_FIELDS:
        va, vb = getattr(a.net, name), getattr(b.net, name)
        if name == "inputs" and all(n.inputs == n.width * n.height * n.channels
                                    for n in (a.net, b.net)):
            continue  # follows width/height/channels, already shown
        if va != vb:
            changes.append(Change(name, va, vb))
    return tuple(changes)


def diff(a: Network, b: Network) -> NetworkDiff:
    """What differs from network `a` to network `b`: [net] options, and per layer the changed,
    deleted and inserted layers (see the module docstring for how layers are paired)."""
    blocks = _align(a, b)
    pairs = [(i, j) for tag, ia, jb in blocks if tag == "equal" for i, j in zip(ia, jb, strict=True)]
    mapping = {NETWORK_INPUT: NETWORK_INPUT, **dict(pairs)}
    layers: list[LayerDiff] = []
    for tag, ia, jb in blocks:
        if tag == "delete":
            layers += [LayerDiff("deleted", a.layers[i], None) for i in ia]
        elif tag == "insert":
            layers += [LayerDiff("inserted", None, b.layers[j]) for j in jb]
        else:
            for i, j in zip(ia, jb, strict=True):
                la, lb = a.layers[i], b.layers[j]
                changes = _layer_changes(la, lb, mapping)
                if _differs(la, lb, changes):
                    layers.append(LayerDiff("changed", la, lb, changes))
    return NetworkDiff(a, b, _net_changes(a, b), tuple(layers), tuple(pairs))


# --- text --------------------------------------------------------------------------------------

def _show(value: Any, limit: int = 60) -> str:
    """A value as a cfg would write it (1/0 for flags, comma lists, `none`), cut when long and
    with control characters escaped (a cfg's strings come from anywhere)."""
    text = printable(_text(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        if not value:
            return "(empty)"
        if all(isinstance(v, (tuple, list)) for v in value):  # anchors: pairs
            return ", ".join(",".join(_text(x) for x in v) for v in value)
        return ",".join(_text(v) for v in value)
    return str(value)


def _whc(shape) -> str:
    return f"{shape.w} x {shape.h} x {shape.c}"


def _signed(value: float, fmt: str) -> str:
    return "0" if value == 0 else format(value, "+" + fmt)


def _describe(spec: LayerSpec, row) -> str:
    """An inserted or deleted layer as the layer table shows it."""
    what = " ".join(p for p in (row.filters, row.window) if p)
    src = f" from {row.inputs}" if row.inputs else ""
    return (f"{what + ', ' if what else ''}{_whc(spec.in_shape)} -> {_whc(spec.out_shape)}{src}, "
            f"weights {spec.weight_count:,}, BFLOPs {_bf(spec.bflops)}")


_SHORT = {"convolutional": "conv", "maxpool": "max", "avgpool": "avg"}


def _name(spec: LayerSpec) -> str:
    return _SHORT.get(spec.type, spec.type)


def _bf(value: float, signed: bool = False) -> str:
    """BFLOPs with Darknet's 3 decimals; values too small for them with 2 significant digits."""
    if value == 0:
        return "0" if signed else "0.000"
    fmt = ".3f" if abs(value) >= 0.0005 else ".1e"
    return format(value, ("+" if signed else "") + fmt)


def _details(ld: LayerDiff, width: int = 76) -> list[str]:
    """Lines for a changed layer: options and inputs (several to a line), shapes, weights and
    BFLOPs."""
    la, lb = ld.a, ld.b
    lines: list[str] = []
    for c in ld.options:
        part = f"{c.name}: {_show(c.a)} -> {_show(c.b)}"
        if c.b_in_a is not None:
            part += f" (a's {','.join('new' if i is None else str(i) for i in c.b_in_a)})"
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            lines.append(part)
    shapes, cost = [], []
    if _reads_previous(la, lb) and la.in_shape != lb.in_shape:
        shapes.append(f"input: {_whc(la.in_shape)} -> {_whc(lb.in_shape)}")
    if la.out_shape != lb.out_shape:
        shapes.append(f"output: {_whc(la.out_shape)} -> {_whc(lb.out_shape)}")
    if la.weight_count != lb.weight_count:
        cost.append(f"weights: {la.weight_count:,} -> {lb.weight_count:,} "
                    f"({_signed(ld.weights_delta, ',')})")
    if la.bflops != lb.bflops:
        cost.append(f"BFLOPs: {_bf(la.bflops)} -> {_bf(lb.bflops)} ({_bf(ld.bflops_delta, True)})")
    return lines + [", ".join(group) for group in (shapes, cost) if group]


def format_diff(d: NetworkDiff, a_name: str | None = None, b_name: str | None = None) -> str:
    """Text for people: `~` changed, `-` only in a, `+` only in b, each with a's and b's index,
    then the totals. "no differences" when there are none."""
    a_name = a_name or d.a.path or "a"
    b_name = b_name or d.b.path or "b"
    lines = [f"--- a: {printable(a_name)}", f"+++ b: {printable(b_name)}"]
    for c in d.net:
        lines.append(f"[net] {c.name}: {_show(c.a)} -> {_show(c.b)}")
    if any(c.name in ("width", "height", "channels") for c in d.net):
        lines.append("(every shape follows the input size: `darkcfg diff --width W --height H` "
                     "compares both at one size)")
    if d.layers:
        lines.append(f"{'':2}{'a':>5} {'b':>5}  layer")
    rows_a, rows_b = rows(d.a), rows(d.b)
    pad = " " * 25  # under the name column
    for ld in d.layers:
        ia = "." if ld.a is None else str(ld.a.index)
        ib = "." if ld.b is None else str(ld.b.index)
        head = f"{ {'changed': '~', 'deleted': '-', 'inserted': '+'}[ld.kind] } {ia:>5} {ib:>5}  "
        if ld.kind == "deleted":
            lines.append(f"{head}{_name(ld.a):<9} {_describe(ld.a, rows_a[ld.a.index])}")
            continue
        if ld.kind == "inserted":
            lines.append(f"{head}{_name(ld.b):<9} {_describe(ld.b, rows_b[ld.b.index])}")
            continue
        lines.append(f"{head}{_name(ld.b):<9} " + f"\n{pad}".join(_details(ld)))
    if not d:
        lines.append("no differences")
    a, b = d.a, d.b
    lines.append(f"layers: {len(a)} -> {len(b)} ({_signed(len(b) - len(a), 'd')}): "
                 f"{d.count('changed')} changed, {d.count('deleted')} deleted, "
                 f"{d.count('inserted')} inserted")
    lines.append(f"weights: {a.weight_count:,} -> {b.weight_count:,} "
                 f"({_signed(d.weights_delta, ',')})")
    lines.append(f"Total BFLOPS: {a.total_bflops:.3f} -> {b.total_bflops:.3f} "
                 f"({_bf(d.bflops_delta, True)})")
    return "\n".join(lines)


# --- JSON --------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _shape_json(shape) -> list[int]:
    return [shape.w, shape.h, shape.c]


def _change_json(c: Change) -> dict[str, Any]:
    out = {"name": c.name, "a": _jsonable(c.a), "b": _jsonable(c.b)}
    if c.b_in_a is not None:
        out["b_in_a"] = list(c.b_in_a)
    return out


def _layer_json(ld: LayerDiff) -> dict[str, Any]:
    def side(spec: LayerSpec | None) -> dict[str, Any] | None:
        if spec is None:
            return None
        return {"index": spec.index, "line": spec.loc.line, "type": spec.type,
                "inputs": list(spec.inputs), "in_shape": _shape_json(spec.in_shape),
                "out_shape": _shape_json(spec.out_shape), "weights": spec.weight_count,
                "bflops": spec.bflops}

    return {"change": ld.kind, "type": ld.type, "a": side(ld.a), "b": side(ld.b),
            "options": [_change_json(c) for c in ld.options],
            "weights_delta": ld.weights_delta, "bflops_delta": ld.bflops_delta}


def to_dict(d: NetworkDiff) -> dict[str, Any]:
    """The diff as JSON-ready data: [net] changes, layer entries (each side's index, line, inputs,
    shapes as [w, h, c], weights, BFLOPs), and totals."""

    def total(n: Network) -> dict[str, Any]:
        return {"path": n.path, "layers": len(n), "weights": n.weight_count,
                "total_bflops": n.total_bflops}

    return {
        "same": not d,
        "a": total(d.a), "b": total(d.b),
        "net": [{"name": c.name, "a": c.a, "b": c.b} for c in d.net],
        "layers": [_layer_json(ld) for ld in d.layers],
        "counts": {k: d.count(k) for k in ("changed", "deleted", "inserted")},
        "weights_delta": d.weights_delta, "bflops_delta": d.bflops_delta,
    }
