"""Parsers for detection heads and loss-only layers: [region], [detection], [Gaussian_yolo], [cost],
[contrastive].

Heads keep every option box decoding needs (anchors, coords, side, sqrt, tree, ...) although the
layers themselves only apply Darknet's inference activations. Defaults follow AlexeyAB/darknet's
parser.c (parse_region, parse_detection, parse_gaussian_yolo, parse_cost, parse_contrastive).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import warn_at
from ..graph import Context, Parsed, Shape
from ..options import Options
from ..tree import Tree, tree_option
from ._common import anchor_pairs, mask_and_anchors, non_negative, positive, register
from .core import YOLO_NMS_KINDS, nms_kind_option

__all__ = ["RegionOptions", "DetectionOptions", "GaussianYoloOptions", "CostOptions",
           "ContrastiveOptions", "REGION_OBJECTNESS", "REGION_CLASSES", "GAUSSIAN_BOX_ENTRIES"]

# forward_region_layer hard-codes these entry offsets, whatever `coords` says.
REGION_OBJECTNESS = 4
REGION_CLASSES = 5
# [Gaussian_yolo]: x, x_sigma, y, y_sigma, w, w_sigma, h, h_sigma before objectness and classes.
GAUSSIAN_BOX_ENTRIES = 8


# --- [region] (yolov2, yolo9000) ---------------------------------------------------------------

@dataclass(frozen=True)
class RegionOptions:
    classes: int
    coords: int
    num: int
    anchors: tuple[tuple[float, float], ...]  # num (w, h) pairs in grid cells; Darknet's default .5
    softmax: bool
    tree: Tree | None  # softmax tree (yolo9000), applied instead of the plain softmax
    bias_match: bool
    sqrt: bool
    rescore: bool
    absolute: bool
    map_file: str | None  # class map for decoding, as written (`map=`); not read here
    classfix: int = 0  # -1: decoding zeroes objectness below 0.5 (get_region_boxes)

    @property
    def entries(self) -> int:
        """Values per anchor: coords, objectness, classes."""
        return self.coords + 1 + self.classes

    @property
    def softmax_count(self) -> int:
        """How many entries from REGION_CLASSES on get the (tree) softmax; 0 when none."""
        if self.tree is not None:
            return self.tree.n
        return self.classes if self.softmax else 0


@register("region", is_output=True)
def parse_region(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a region layer")
    coords = non_negative(opts, "coords", opts.int("coords", 4))
    classes = non_negative(opts, "classes", opts.int("classes", 20))
    num = positive(opts, "num", opts.int("num", 1))
    if coords < REGION_OBJECTNESS:
        raise opts.error(f"coords={coords} is not supported: Darknet's [region] hard-codes "
                         f"objectness at entry 4 and classes from entry 5 of each anchor, so it "
                         f"would read into the next anchor", "coords")
    entries = coords + 1 + classes
    if shape.c != num * entries:
        raise opts.error(f"[region] with num={num}, coords={coords} and classes={classes} needs "
                         f"{num * entries} input channels, the previous layer gives {shape.c}")
    softmax = bool(opts.int("softmax", 0))
    tree = tree_option(opts, "tree")
    o = RegionOptions(classes, coords, num, anchor_pairs(opts, num, 0.5, extra="ignore"),
                      softmax, tree, bool(opts.int("bias_match", 0)), bool(opts.int("sqrt", 0)),
                      bool(opts.int("rescore", 0)), bool(opts.int("absolute", 0)),
                      opts.str("map", None), opts.int("classfix", 0))
    if tree is not None:
        if REGION_CLASSES + tree.n > entries:
            raise opts.error(f"the tree has {tree.n} nodes but each anchor has only "
                             f"{entries - REGION_CLASSES} entries from entry 5 on (classes="
                             f"{classes}); Darknet's tree softmax would run into the next anchor",
                             "tree")
        if tree.n != classes:
            warn_at(f"the tree has {tree.n} nodes but classes={classes}: Darknet applies the tree "
                    f"softmax to the first {tree.n} entries from entry 5", opts.key_loc("tree"))
    if coords != 4:
        what = " and the class softmax from entry 5 on" if o.softmax_count else ""
        warn_at(f"coords={coords}: Darknet's [region] still applies the objectness logistic to "
                f"entry 4 of each anchor (the 5th coordinate here){what}, although objectness "
                f"is entry {coords}", opts.key_loc("coords"))
    return Parsed(o, shape)


# --- [detection] (yolov1) ----------------------------------------------------------------------

@dataclass(frozen=True)
class DetectionOptions:
    classes: int
    coords: int
    num: int
    side: int
    softmax: bool
    sqrt: bool
    rescore: bool
    forced: bool


@register("detection", is_output=True)
def parse_detection(opts: Options, ctx: Context) -> Parsed:
    inputs = ctx.require_image("a detection layer").size
    coords = non_negative(opts, "coords", opts.int("coords", 1))
    classes = non_negative(opts, "classes", opts.int("classes", 1))
    rescore = bool(opts.int("rescore", 0))
    num = positive(opts, "num", opts.int("num", 1))
    side = positive(opts, "side", opts.int("side", 7))
    expected = side * side * ((1 + coords) * num + classes)
    if expected != inputs:
        raise opts.error(f"[detection] with side={side}, num={num}, coords={coords} and "
                         f"classes={classes} needs {expected} inputs, the previous layer gives "
                         f"{inputs}")
    o = DetectionOptions(classes, coords, num, side, bool(opts.int("softmax", 0)),
                         bool(opts.int("sqrt", 0)), rescore, bool(opts.int("forced", 0)))
    # Darknet leaves the out dims at 0; the layer is flat with as many outputs as inputs.
    return Parsed(o, Shape(inputs, 1, 1))


# --- [Gaussian_yolo] ---------------------------------------------------------------------------

_YOLO_POINTS = ("center", "left_top", "right_bottom")
# parse_gaussian_yolo also knows cornersnms.
GAUSSIAN_NMS_KINDS = YOLO_NMS_KINDS + ("cornersnms",)


@dataclass(frozen=True)
class GaussianYoloOptions:
    classes: int
    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]  # all `num` anchors (w, h) in network pixels
    scale_x_y: float
    yolo_point: str  # center / left_top / right_bottom: what (x, y) means in decoding
    map_file: str | None
    nms_kind: str = "default"  # as [yolo], plus cornersnms (plain IoU through diounms_sort)
    beta_nms: float = 0.6

    @property
    def entries(self) -> int:
        return GAUSSIAN_BOX_ENTRIES + 1 + self.classes


@register("Gaussian_yolo", is_output=True)
def parse_gaussian_yolo(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a Gaussian_yolo layer")
    classes = non_negative(opts, "classes", opts.int("classes", 20))
    total = positive(opts, "num", opts.int("num", 1))
    mask, anchors = mask_and_anchors(opts, total)
    expected = len(mask) * (GAUSSIAN_BOX_ENTRIES + 1 + classes)
    if shape.c != expected:
        raise opts.error(f"[Gaussian_yolo] with {len(mask)} anchors and classes={classes} needs "
                         f"{expected} input channels, the previous layer gives {shape.c}")
    point = opts.str("yolo_point", "center")
    if point not in _YOLO_POINTS:
        warn_at(f"yolo_point={point} is not one of {', '.join(_YOLO_POINTS)}; Darknet uses center",
                opts.key_loc("yolo_point"))
        point = "center"
    o = GaussianYoloOptions(classes, mask, anchors, opts.float("scale_x_y", 1.0), point,
                            opts.str("map", None), nms_kind_option(opts, GAUSSIAN_NMS_KINDS),
                            opts.float("beta_nms", 0.6))
    return Parsed(o, shape)


# --- [cost] ------------------------------------------------------------------------------------

_COST_TYPES = ("sse", "masked", "smooth")


@dataclass(frozen=True)
class CostOptions:
    cost_type: str
    scale: float
    ratio: float


@register("cost")
def parse_cost(opts: Options, ctx: Context) -> Parsed:
    cost_type = opts.str("type", "sse")
    if cost_type not in _COST_TYPES:
        warn_at(f"cost type={cost_type} is unknown; Darknet uses sse", opts.key_loc("type"))
        cost_type = "sse"
    o = CostOptions(cost_type, opts.float("scale", 1.0), opts.float("ratio", 0.0))
    # Training only: in inference l.output stays 0 (and the network's output skips this layer).
    return Parsed(o, ctx.in_shape)


# --- [contrastive] -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ContrastiveOptions:
    yolo_layer: int  # absolute index of the [yolo] layer whose anchors/classes it uses
    classes: int  # taken from that [yolo] layer, as Darknet does
    embedding_size: int
    temperature: float


@register("contrastive", index_keys=("yolo_layer",))
def parse_contrastive(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.in_shape
    opts.int("classes", 1000)  # overridden by the [yolo] layer's classes
    value = opts.int("yolo_layer", 0)
    if value == 0:
        raise opts.error("[contrastive] needs yolo_layer= pointing to a [yolo] layer (Darknet "
                         "crashes without one)", "yolo_layer" if opts.has("yolo_layer") else None)
    j = ctx.resolve(value, "yolo_layer", "yolo_layer index")
    yolo = ctx.layers[j]
    if yolo.type != "yolo":
        raise opts.error(f"yolo_layer={value} points to layer {j}, a [{yolo.header}], not a "
                         f"[yolo] layer", "yolo_layer")
    anchors = len(yolo.options.mask)
    cells = anchors * shape.h * shape.w
    if shape.size % cells:
        warn_at(f"the {shape.size} inputs are not divisible by {anchors} anchors x "
                f"{shape.h}x{shape.w} cells", opts.loc())
    o = ContrastiveOptions(j, yolo.options.classes, shape.size // cells,
                           opts.float("temperature", 1.0))
    # CPU inference returns before touching l.output, which stays 0 (inputs floats, out dims 0).
    return Parsed(o, shape)
