"""Darknet's detector augmentation, image and boxes together, as `load_data_detection` does it.

Sources (AlexeyAB/darknet 59596d78): src/data.c (load_data_detection, OpenCV build, 1041-1355;
fill_truth_detection 371-460; correct_boxes 248-292; randomize_boxes 237-246; blend_truth
860-884; blend_truth_mosaic 886-1036), src/image_opencv.cpp (image_data_augmentation 1205-1338,
blend_images_cv 1341-1346, load_image_mat_cv 101-133), src/utils.c (random_float 959,
rand_uniform_strong 977, rand_precalc_random 987, rand_scale 892, rand_int 819), src/parser.c
(the keys: [net] 1199-1227, [yolo] 503-510) and src/detector.c (train_detector: the head whose
jitter/resize/random are used 107-112, the multi-scale size 196-250).

Darknet trains with its OpenCV build (mosaic needs it), so this follows that path: the image stays
8-bit through crop, resize, flip, HSV, blur and noise (OpenCV Mat arithmetic, saturating), and
becomes ``u8 / 255`` float only at the end; mixup then blends the float images. OpenCV itself is
not used: each OpenCV call is written out in numpy (cv::resize INTER_LINEAR with its 11-bit
weights, cvtColor RGB<->HSV with its 8-bit tables, GaussianBlur with its kernel and
BORDER_REFLECT_101, randn into a uint8 Mat). Where OpenCV's SIMD code rounds differently the
result can differ by one grey level; the geometry (which source pixel lands where, every box) is
Darknet's exactly. The random numbers are numpy's (a Generator per image, so a seed reproduces a
batch), not glibc's rand(), so Darknet's exact draws are not reproduced, only their
distributions.

Boxes are float32 arrays computed with Darknet's float32 operations, in its order: a label row
``class x y w h`` relative to the source image becomes a row relative to the network input.
Output rows are ``[class, x, y, w, h]`` (the Trainer's targets), at most `max=` of the head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import CfgError
from ..graph import Network

__all__ = ["AugmentOptions", "read_augment_options", "StageDraw", "draw_stage", "Geometry",
           "crop_geometry", "Source", "augment_sample", "image_data_augmentation",
           "crop_resize", "resize_linear", "rgb_to_hsv", "hsv_to_rgb", "adjust_hsv",
           "gaussian_blur", "gaussian_kernel", "fill_truth_detection", "correct_boxes",
           "blend_truth_mosaic", "mosaic_shifts", "random_size", "max_size", "to_float_image",
           "rand_scale", "DETECTION_HEADS", "THREADS_PER_GPU"]

_F32 = np.float32
DETECTION_HEADS = ("yolo", "Gaussian_yolo", "region")
# train_detector loads a batch with 6 threads per GPU in the OpenCV build (detector.c:168); each
# thread's load_data_detection call makes its own mixup/mosaic coin (data.c:1055).
THREADS_PER_GPU = 6
# Darknet's net->mixup values (parser.c:1202-1207).
MIXUP, CUTMIX, MOSAIC, MOSAIC_CUTMIX = 1, 2, 3, 4


# --- the cfg's keys ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentOptions:
    """The keys load_data_detection and train_detector read. `jitter`, `resize`, `random`,
    `classes` and `max_boxes` are the head's (the last [yolo]/[Gaussian_yolo]/[region], else the
    last layer: detector.c:107-112); the rest are [net]'s (parser.c:1199-1227)."""

    width: int
    height: int
    channels: int = 3
    classes: int = 80
    max_boxes: int = 200
    jitter: float = 0.2
    resize: float = 1.0
    random: float = 0.0
    resize_step: float = 32.0
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    flip: bool = True
    letter_box: bool = False
    mixup: int = 0  # net->mixup: 1 mixup, 2 cutmix, 3 mosaic, 4 mosaic with cutmix
    mosaic_bound: bool = False
    blur: int = 0
    gaussian_noise: int = 0
    max_batches: int = 0
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def use_mixup(self) -> int:
        """What load_data_detection does with net->mixup (data.c:1047-1051): cutmix is not
        supported for detectors, so 2 becomes 0 (nothing) and 4 becomes 3 (mosaic alone)."""
        return {CUTMIX: 0, MOSAIC_CUTMIX: MOSAIC}.get(self.mixup, self.mixup)

    @property
    def stages(self) -> int:
        """Images combined into one sample when the batch's coin says so: 1, 2 or 4."""
        return {MIXUP: 2, MOSAIC: 4}.get(self.use_mixup, 1)


def read_augment_options(network: Network) -> AugmentOptions:
    """The augmentation keys of `network`'s cfg, with Darknet's defaults. Raises CfgError for
    what the loader does not do (track=1, contrastive=1) and for letter_box with mosaic, which
    Darknet stops on (data.c:1052-1054)."""
    from .config import read_train_options
    from .sections import section_options

    net_opts, layer_opts = section_options(network)
    head = _head(network)
    ho = layer_opts[head.index]
    notes: list[str] = []
    for key in ("track", "contrastive"):
        if net_opts.int(key, 0):
            raise net_opts.error(f"{key}=1 (Darknet's sequential/contrastive loading) is not "
                                 f"supported by darkcfg's data loader", key)
    mixup = net_opts.int("mixup", 0)
    cutmix, mosaic = net_opts.int("cutmix", 0), net_opts.int("mosaic", 0)
    if mosaic and cutmix:
        mixup = MOSAIC_CUTMIX
    elif cutmix:
        mixup = CUTMIX
    elif mosaic:
        mixup = MOSAIC
    if mixup in (CUTMIX, MOSAIC_CUTMIX):
        notes.append("cutmix=1 is not supported for detectors: Darknet ignores it "
                     "(data.c:1047-1051)" + (", mosaic still applies" if mixup == 4 else ""))
    letter_box = bool(net_opts.int("letter_box", 0))
    if letter_box and mixup in (MOSAIC, MOSAIC_CUTMIX):
        raise net_opts.error("letter_box=1 and mosaic=1 cannot be combined (Darknet stops: "
                             "data.c:1052-1054)", "letter_box")
    if net_opts.int("dynamic_minibatch", 0):
        notes.append("dynamic_minibatch=1 is ignored: the batch stays the cfg's batch= at every "
                     "network size")
    channels = network.net.channels or 3
    if channels not in (1, 3):
        raise net_opts.error(f"channels={channels}: Darknet's detector loader reads images with "
                             f"1 or 3 channels", "channels")
    exposure = net_opts.float("exposure", 1.0)
    saturation = net_opts.float("saturation", 1.0)
    train, _ = read_train_options(network)
    return AugmentOptions(
        width=network.net.width, height=network.net.height, channels=channels,
        classes=int(getattr(head.options, "classes", 0) or 0),
        max_boxes=ho.int("max", 200),
        jitter=ho.float("jitter", 0.2) if head.type in _JITTERED else 0.0,
        resize=ho.float("resize", 1.0) if head.type in _JITTERED else 1.0,
        random=ho.float("random", 0.0) if head.type in _JITTERED else 0.0,
        resize_step=net_opts.float("resize_step", 32.0),
        hue=net_opts.float("hue", 0.0),
        # load_thread replaces 0 by 1 (data.c:1570-1571)
        saturation=saturation or 1.0, exposure=exposure or 1.0,
        flip=bool(net_opts.int("flip", 1)), letter_box=letter_box, mixup=mixup,
        mosaic_bound=bool(net_opts.int("mosaic_bound", 0)),
        blur=net_opts.int("blur", 0), gaussian_noise=net_opts.int("gaussian_noise", 0),
        max_batches=train.max_batches, notes=tuple(notes))


_JITTERED = ("yolo", "Gaussian_yolo", "region", "detection")  # parsers that read jitter= etc.


def _head(network: Network):
    """train_detector's `l`: the last [yolo], [Gaussian_yolo] or [region], else the last layer."""
    heads = [s for s in network.layers if s.type in DETECTION_HEADS]
    if heads:
        return heads[-1]
    if not network.layers:
        raise CfgError("the cfg has no layers", network.net.loc)
    return network.layers[-1]


# --- Darknet's random helpers, on a numpy Generator -----------------------------------------------

def _random_float(rng: np.random.Generator) -> float:
    """random_float (utils.c:959): uniform in [0, 1], as a float32."""
    return float(_F32(rng.random()))


def _rand_uniform_strong(rng: np.random.Generator, lo: float, hi: float) -> float:
    """rand_uniform_strong (utils.c:977)."""
    if hi < lo:
        lo, hi = hi, lo
    return float(_F32(_F32(_random_float(rng)) * _F32(hi - lo) + _F32(lo)))


def rand_scale(rng: np.random.Generator, s: float) -> float:
    """rand_scale (utils.c:892): a scale in [1, s], inverted half the time."""
    scale = _rand_uniform_strong(rng, 1.0, s)
    if rng.integers(2):
        return scale
    return float(_F32(1.0 / scale))


def _rand_int(rng: np.random.Generator, lo: int, hi: int) -> int:
    """rand_int (utils.c:819): an integer in [lo, hi]."""
    if hi < lo:
        lo, hi = hi, lo
    return int(rng.integers(lo, hi + 1))


def _precalc(lo: float, hi: float, part: float) -> np.float32:
    """rand_precalc_random (utils.c:987): a float in [lo, hi]."""
    if hi < lo:
        lo, hi = hi, lo
    return _F32(_F32(part) * _F32(hi - lo) + _F32(lo))


def _add(a: int, b: np.float32) -> int:
    """C's `int a += float b`: the sum in float, truncated."""
    return int(_F32(a) + b)


# --- one image's draws ----------------------------------------------------------------------------

@dataclass(frozen=True)
class StageDraw:
    """What load_data_detection draws per image (data.c:1120-1153): the four jitter parts, the
    two resize parts, flip, hue/saturation/exposure, the blur mode and the noise level, and
    (mosaic) whether the image is pushed to its corner (data.c:1206)."""

    r: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.5)
    resize_r: tuple[float, float] = (0.5, 0.5)
    flip: bool = False
    dhue: float = 0.0
    dsat: float = 1.0
    dexp: float = 1.0
    blur: int = 0
    gaussian_noise: int = 0
    corner: bool = False


def draw_stage(rng: np.random.Generator, opts: AugmentOptions, mosaic: bool = False
               ) -> StageDraw:
    """One image's random parameters, drawn as load_data_detection draws them; `mosaic`: the
    batch makes mosaics (then the corner coin is drawn)."""
    resize_r = (_random_float(rng), _random_float(rng))
    r = tuple(_random_float(rng) for _ in range(4))
    flip = bool(rng.integers(2)) if opts.flip else False
    dhue = _rand_uniform_strong(rng, -opts.hue, opts.hue)
    dsat = rand_scale(rng, opts.saturation)
    dexp = rand_scale(rng, opts.exposure)
    blur = 0
    if opts.blur:
        mode = _rand_int(rng, 0, 2)  # 0 none, 1 background only, 2 the whole image
        blur = (0, 1, opts.blur)[mode]
    noise = opts.gaussian_noise if opts.gaussian_noise and _rand_int(rng, 0, 1) == 1 else 0
    corner = mosaic and rng.integers(2) == 0
    return StageDraw(r, resize_r, flip, dhue, dsat, dexp, blur, noise, bool(corner))


@dataclass(frozen=True)
class Geometry:
    """The crop of the source image that is resized to the network input: its left and top edge
    (negative: padding), size, and the right/bottom padding (data.c:1155-1233)."""

    pleft: int
    ptop: int
    pright: int
    pbot: int
    swidth: int
    sheight: int
    ow: int
    oh: int


def crop_geometry(ow: int, oh: int, w: int, h: int, d: StageDraw, opts: AugmentOptions,
                  stage: int = 0) -> Geometry:
    """pleft/pright/ptop/pbot from jitter, resize, letter_box and the mosaic corner
    (data.c:1107-1233), with Darknet's int truncations and its reset of an empty crop."""
    dw, dh = int(ow * _F32(opts.jitter)), int(oh * _F32(opts.jitter))
    resize = _F32(opts.resize)
    down = resize if resize <= 1 else _F32(1) / resize
    up = resize if resize >= 1 else _F32(1) / resize
    min_rdw, min_rdh = (int(_F32(o) * (_F32(1) - _F32(1) / down) / _F32(2)) for o in (ow, oh))
    max_rdw, max_rdh = (int(_F32(o) * (_F32(1) - _F32(1) / up) / _F32(2)) for o in (ow, oh))
    r1, r2, r3, r4 = d.r
    pleft, pright = int(_precalc(-dw, dw, r1)), int(_precalc(-dw, dw, r2))
    ptop, pbot = int(_precalc(-dh, dh, r3)), int(_precalc(-dh, dh, r4))
    hi_w, hi_h = (0, 0) if resize < 1 else (max_rdw, max_rdh)  # resize < 1: downsize only
    pleft = _add(pleft, _precalc(min_rdw, hi_w, d.resize_r[0]))
    pright = _add(pright, _precalc(min_rdw, hi_w, d.resize_r[1]))
    ptop = _add(ptop, _precalc(min_rdh, hi_h, d.resize_r[0]))
    pbot = _add(pbot, _precalc(min_rdh, hi_h, d.resize_r[1]))
    if opts.letter_box:  # data.c:1179-1200: pad the short side to the network's aspect ratio
        img_ar = _F32(ow) / _F32(oh)
        net_ar = _F32(w) / _F32(h)
        if img_ar / net_ar > 1:
            delta = (_F32(ow) / net_ar - _F32(oh)) / _F32(2)
            ptop, pbot = int(_F32(ptop) - delta), int(_F32(pbot) - delta)
        else:
            delta = (_F32(oh) * net_ar - _F32(ow)) / _F32(2)
            pleft, pright = int(_F32(pleft) - delta), int(_F32(pright) - delta)
    if d.corner:  # data.c:1206-1219: move the image to its mosaic corner
        pleft, pright, ptop, pbot = _to_corner(pleft, pright, ptop, pbot, stage, d.flip)
    swidth, sheight = ow - pleft - pright, oh - ptop - pbot
    if swidth <= 0 or sheight <= 0 or ow - pleft <= 0 or oh - ptop <= 0:  # data.c:1224-1230
        swidth, sheight, pleft, ptop = ow, oh, 0, 0
    return Geometry(pleft, ptop, pright, pbot, swidth, sheight, ow, oh)


def _to_corner(pleft: int, pright: int, ptop: int, pbot: int, stage: int, flip: bool
               ) -> tuple[int, int, int, int]:
    """All horizontal (vertical) padding on the side away from the mosaic centre."""
    if (stage in (0, 2)) != flip:  # left pieces (unflipped): all horizontal padding right
        pright, pleft = pright + pleft, 0
    else:
        pleft, pright = pleft + pright, 0
    if stage in (0, 1):
        pbot, ptop = pbot + ptop, 0
    else:
        ptop, pbot = ptop + pbot, 0
    return pleft, pright, ptop, pbot


# --- boxes ----------------------------------------------------------------------------------------

def correct_boxes(boxes: np.ndarray, dx: float, dy: float, sx: float, sy: float, flip: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """correct_boxes (data.c:248-292) on (n, 4) float32 [x, y, w, h]: into the crop, flipped,
    clipped to [0, 1]. Returns the boxes and which rows Darknet marks invalid (999999)."""
    b = boxes.astype(_F32, copy=False)
    x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    half_w, half_h = w / _F32(2), h / _F32(2)
    left, right, top, bottom = x - half_w, x + half_w, y - half_h, y + half_h
    invalid = ((x == 0) & (y == 0)) | (right < 0) | (bottom < 0) | (left > 1) | (top > 1)
    sx, sy, dx, dy = _F32(sx), _F32(sy), _F32(dx), _F32(dy)
    left, right = left * sx - dx, right * sx - dx
    top, bottom = top * sy - dy, bottom * sy - dy
    if flip:
        left, right = _F32(1) - right, _F32(1) - left
    left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
    top, bottom = np.clip(top, 0, 1), np.clip(bottom, 0, 1)
    out = np.stack([(left + right) / _F32(2), (top + bottom) / _F32(2),
                    np.clip(right - left, 0, 1), np.clip(bottom - top, 0, 1)], 1).astype(_F32)
    return out.reshape(-1, 4), invalid


def _randomize_boxes(n: int, rng: np.random.Generator) -> np.ndarray:
    """randomize_boxes (data.c:237-246): swap each row with a random one; the permutation."""
    order = np.arange(n)
    if n:
        picks = rng.integers(0, n, size=n)
        for i, j in enumerate(picks):
            order[i], order[j] = order[j], order[i]
    return order


def fill_truth_detection(ids: np.ndarray, boxes: np.ndarray, g: Geometry, flip: bool,
                         opts: AugmentOptions, net_w: int, net_h: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """fill_truth_detection (data.c:371-460) for a crop `g`: shuffle, correct, keep the first
    max= rows, then drop classes >= classes, boxes under a pixel of the network input
    (w < 1/net_w or h < 1/net_h) and boxes outside; returns (n, 5) [class, x, y, w, h] and
    Darknet's min_w_h (the smallest box side in network pixels, for blur)."""
    sx, sy = _F32(g.swidth) / _F32(g.ow), _F32(g.sheight) / _F32(g.oh)
    dx, dy = (_F32(g.pleft) / _F32(g.ow)) / sx, (_F32(g.ptop) / _F32(g.oh)) / sy
    order = _randomize_boxes(len(ids), rng)
    ids = np.asarray(ids)[order]
    fixed, invalid = correct_boxes(np.asarray(boxes, _F32).reshape(-1, 4)[order], dx, dy,
                                   _F32(1.0 / float(sx)), _F32(1.0 / float(sy)), flip)
    n = min(len(ids), opts.max_boxes)
    ids, fixed, invalid = ids[:n], fixed[:n], invalid[:n]
    x, y, w, h = fixed.T
    lowest_w, lowest_h = _F32(1) / _F32(net_w), _F32(1) / _F32(net_h)
    keep = (ids < opts.classes) & ~((w < lowest_w) | (h < lowest_h)) & ~invalid
    keep &= ~((x <= 0) | (x > 1) | (y <= 0) | (y > 1))
    rows = np.concatenate([ids[keep, None].astype(_F32), fixed[keep]], 1).reshape(-1, 5)
    min_w_h = 0
    for bw, bh in zip(rows[:, 3], rows[:, 4]):  # data.c:455-457, ints compared with floats
        pw, ph = bw * _F32(net_w), bh * _F32(net_h)
        if min_w_h == 0:
            min_w_h = int(pw)
        if min_w_h > pw:
            min_w_h = int(pw)
        if min_w_h > ph:
            min_w_h = int(ph)
    return rows.astype(_F32), min_w_h


def mosaic_shifts(g: Geometry, flip: bool, w: int, h: int, cut_x: int, cut_y: int
                  ) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) shift of a mosaic piece (data.c:1275-1286): how much padding
    at each side of the augmented image is skipped, at most the piece's size."""
    pleft, pright = (g.pright, g.pleft) if flip else (g.pleft, g.pright)
    left = min(cut_x, max(0, (-pleft * w) // g.ow))
    top = min(cut_y, max(0, (-g.ptop * h) // g.oh))
    right = min(w - cut_x, max(0, (-pright * w) // g.ow))
    bot = min(h - cut_y, max(0, (-g.pbot * h) // g.oh))
    return left, right, top, bot


def blend_truth_mosaic(rows: np.ndarray, stage: int, w: int, h: int, cut_x: int, cut_y: int,
                       shifts: tuple[int, int, int, int], bound: bool, room: int) -> np.ndarray:
    """blend_truth_mosaic (data.c:886-1036): a piece's boxes moved into the mosaic, clipped to
    the piece (mosaic_bound=1, to whole pixels) or else to the image, kept only when inside,
    under 1 wide and high and over a pixel. At most `room` rows are considered."""
    left_shift, right_shift, top_shift, bot_shift = shifts
    r = rows[:max(room, 0)]
    xb, yb, wb, hb = (r[:, k].astype(_F32) for k in range(1, 5))
    fw, fh = _F32(w), _F32(h)
    if stage in (0, 2):
        xb = xb - _F32(w - cut_x - right_shift) / fw
    else:
        xb = xb + _F32(cut_x - left_shift) / fw
    if stage in (0, 1):
        yb = yb - _F32(h - cut_y - bot_shift) / fh
    else:
        yb = yb + _F32(cut_y - top_shift) / fh
    half_w, half_h = wb / _F32(2), hb / _F32(2)
    left, right = _trunc((xb - half_w) * fw), _trunc((xb + half_w) * fw)
    top, bot = _trunc((yb - half_h) * fh), _trunc((yb + half_h) * fh)
    if bound:
        lb, rb = (0, cut_x) if stage in (0, 2) else (cut_x, w)
        tb, bb = (0, cut_y) if stage in (0, 1) else (cut_y, h)
        left, right = np.maximum(left, lb), np.minimum(right, rb)
        top, bot = np.maximum(top, tb), np.minimum(bot, bb)
        xb = (_F32(1) * (right + left).astype(_F32) / _F32(2)) / fw
        wb = (right - left).astype(_F32) / fw
        yb = ((bot + top).astype(_F32) / _F32(2)) / fh
        hb = (bot - top).astype(_F32) / fh
    else:
        diff = np.where(left < 0, left.astype(_F32) / fw, _F32(0))
        xb, wb = xb - diff / _F32(2), wb + diff
        diff = np.where(right > w, (right - w).astype(_F32) / fw, _F32(0))
        xb, wb = xb - diff / _F32(2), wb - diff
        diff = np.where(top < 0, top.astype(_F32) / fh, _F32(0))
        yb, hb = yb - diff / _F32(2), hb + diff
        diff = np.where(bot > h, (bot - h).astype(_F32) / fh, _F32(0))
        yb, hb = yb - diff / _F32(2), hb - diff
        half_w, half_h = wb / _F32(2), hb / _F32(2)
        left, right = _trunc((xb - half_w) * fw), _trunc((xb + half_w) * fw)
        top, bot = _trunc((yb - half_h) * fh), _trunc((yb + half_h) * fh)
    lowest_w, lowest_h = _F32(1) / fw, _F32(1) / fh
    keep = ((left >= 0) & (right <= w) & (top >= 0) & (bot <= h) & (wb > 0) & (wb < 1)
            & (hb > 0) & (hb < 1) & (xb > 0) & (xb < 1) & (yb > 0) & (yb < 1)
            & (wb > lowest_w) & (hb > lowest_h))
    out = np.stack([r[:, 0].astype(_F32), xb, yb, wb, hb], 1)[keep]
    return out.reshape(-1, 5).astype(_F32)


def _trunc(a: np.ndarray) -> np.ndarray:
    """C's float-to-int conversion (toward zero)."""
    return np.trunc(a).astype(np.int64)


# --- pixels: OpenCV's operations on 8-bit images, in numpy ----------------------------------------

_COEF_BITS = 11  # cv::resize INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _linear_taps(src: int, dst: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv::resize INTER_LINEAR's source indices and 11-bit weights per output pixel (resize.cpp:
    half-pixel centres, fx = (float)((d + 0.5) * scale - 0.5), weights saturate_cast<short>
    of (1 - fx, fx) * 2048). Columns (`clamp`) reset the weight at the edges to the edge pixel;
    rows keep it and read the edge row twice."""
    scale = 1.0 / (dst / src)  # resize.cpp: scale = 1/inv_scale, in double
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(_F32)
    s = np.floor(f).astype(np.int64)
    frac = (f - s).astype(_F32)
    if clamp:
        low, high = s < 0, s >= src - 1
        s[low], frac[low] = 0, 0
        s[high], frac[high] = src - 1, 0
    a1 = np.rint(frac * _F32(_COEF_SCALE)).astype(np.int64)
    a0 = np.rint((_F32(1) - frac) * _F32(_COEF_SCALE)).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), np.stack([a0, a1])


def crop_resize(img: np.ndarray, g: Geometry, w: int, h: int, cols: np.ndarray | None = None,
                rows: np.ndarray | None = None) -> np.ndarray:
    """image_data_augmentation's crop and resize (image_opencv.cpp:1212-1235): the window `g` of
    `img` (outside the image: its mean colour, rounded) resized to w x h as cv::resize
    INTER_LINEAR does for 8-bit images (11-bit weights; the vertical pass
    ((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2) >> 2, VResizeLinear's 8-bit
    formula). `cols`/`rows`: compute only these output columns/rows (default all)."""
    src = img if img.ndim == 3 else img[:, :, None]
    oh, ow, c = src.shape
    x0, x1, ax = _linear_taps(g.swidth, w, True)
    y0, y1, ay = _linear_taps(g.sheight, h, False)
    if cols is not None:
        x0, x1, ax = x0[cols], x1[cols], ax[:, cols]
    if rows is not None:
        y0, y1, ay = y0[rows], y1[rows], ay[:, rows]
    whole = g.pleft == 0 and g.ptop == 0 and (g.swidth, g.sheight) == (ow, oh)
    used = np.unique(np.concatenate([y0, y1]))
    ys, xs0, xs1 = used + g.ptop, x0 + g.pleft, x1 + g.pleft
    if whole:
        picked = src[ys]
    else:  # outside the image: the mean colour (an extra last column, and whole rows)
        fill = np.rint(_channel_sums(src) / float(oh * ow)).astype(np.uint8)  # cv::mean
        picked = np.empty((len(used), ow + 1, c), np.uint8)
        inside = (ys >= 0) & (ys < oh)
        picked[inside, :ow] = src[ys[inside]]
        picked[~inside] = fill
        picked[:, ow] = fill
        xs0 = np.where((xs0 >= 0) & (xs0 < ow), xs0, ow)
        xs1 = np.where((xs1 >= 0) & (xs1 < ow), xs1, ow)
    # rows flattened to (R, W * c), so every product runs along a contiguous axis
    flat = picked.reshape(len(used), -1)
    lanes = np.arange(c)
    a0, a1 = (np.repeat(a.astype(np.int32), c) for a in ax)
    horiz = np.take(flat, (xs0[:, None] * c + lanes).ravel(), axis=1).astype(np.int32) * a0
    horiz += np.take(flat, (xs1[:, None] * c + lanes).ravel(), axis=1).astype(np.int32) * a1
    horiz >>= 4  # (R, w' * c)
    b0, b1 = ay.astype(np.int32)[:, :, None]
    out = (b0 * horiz[np.searchsorted(used, y0)]) >> 16
    out += (b1 * horiz[np.searchsorted(used, y1)]) >> 16
    out += 2
    out >>= 2
    out = out.reshape(len(y0), len(x0), c)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out if img.ndim == 3 else out[:, :, 0]


def _channel_sums(src: np.ndarray) -> np.ndarray:
    """Per-channel sums of a uint8 (H, W, C) image (summed 32 pixels at a time, which numpy
    does far faster than a strided per-channel reduction)."""
    c = src.shape[2]
    flat = src.reshape(-1)
    n = len(flat) // (32 * c) * (32 * c)
    sums = flat[:n].reshape(-1, 32 * c).sum(0, dtype=np.uint64).reshape(-1, c).sum(0)
    return sums + flat[n:].reshape(-1, c).sum(0, dtype=np.uint64)


def resize_linear(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """cv::resize(img, (w, h), INTER_LINEAR) of a uint8 (H, W[, C]) image."""
    oh, ow = img.shape[:2]
    return crop_resize(img, Geometry(0, 0, 0, 0, ow, oh, ow, oh), w, h)


_HSV_SHIFT = 12
_SDIV = np.zeros(256, np.int32)
_HDIV = np.zeros(256, np.int32)
_SDIV[1:] = np.rint((255 << _HSV_SHIFT) / np.arange(1, 256, dtype=np.float64))
_HDIV[1:] = np.rint((180 << _HSV_SHIFT) / (6.0 * np.arange(1, 256, dtype=np.float64)))


def rgb_to_hsv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cvtColor(COLOR_RGB2HSV) of uint8 RGB (RGB2HSV_b: 12-bit division tables): H in 0..179,
    S and V in 0..255, each an int64 (H, W) array."""
    rgb = img.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + half) >> _HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return h, s, v


_SECTORS = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])
_HSV_BLOCK = 32  # HSV2RGB_b's vector loop: 4 x 8 float lanes (AVX2) per step


def _one_minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - a*b rounded once, as the compiler's fused multiply-add computes it."""
    return (1.0 - a.astype(np.float64) * b.astype(np.float64)).astype(_F32)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray, cols: np.ndarray | None = None,
               width: int | None = None) -> np.ndarray:
    """cvtColor(COLOR_HSV2RGB) of 8-bit H (read modulo 180), S, V: HSV2RGB_b's float32
    arithmetic. Along each row the vector loop (truncating to uint8, sector by truncation)
    covers the first width - width % 32 pixels, the scalar loop (rounding, fmod) the rest;
    `cols`/`width`: the columns given and the full row width (default: the array's own)."""
    n = h.shape[-1]
    width = n if width is None else width
    cols = np.arange(n) if cols is None else np.asarray(cols)
    vector = cols < width - width % _HSV_BLOCK
    sf = s.astype(_F32) * _F32(1.0 / 255.0)
    vf = v.astype(_F32) * _F32(1.0 / 255.0)
    hs = h.astype(_F32) * (_F32(6.0) / _F32(180))
    if vector.all():  # vector loop: pre = trunc(h), sector = pre - trunc(pre / 6) * 6
        pre = np.trunc(hs)
        frac = hs - pre
        sector = (pre - np.trunc(pre * _F32(1.0 / 6.0)) * _F32(6)).astype(np.intp)
    else:
        pre = np.trunc(hs)
        hm = np.fmod(hs, _F32(6))  # scalar loop: h = fmod(h, 6), sector = floor(h)
        low = np.floor(hm)
        frac = np.where(vector, hs - pre, hm - low).astype(_F32)
        sector = np.where(vector, pre - np.trunc(pre * _F32(1.0 / 6.0)) * _F32(6),
                          low).astype(np.intp)
    t0, t1 = vf, vf * (_F32(1) - sf)
    t2, t3 = vf * _one_minus(sf, frac), vf * _one_minus(sf, _F32(1) - frac)
    # sector_data {1,3,0}, {1,0,2}, {3,0,1}, {0,2,1}, {0,1,3}, {2,1,0}: (b, g, r) per sector
    b = np.where(sector < 2, t1, np.where(sector == 2, t3, np.where(sector < 5, t0, t2)))
    g = np.where(sector < 1, t3, np.where(sector < 3, t0, np.where(sector == 3, t2, t1)))
    r = np.where((sector < 1) | (sector > 4), t0,
                 np.where(sector == 1, t2, np.where(sector < 4, t1, t3)))
    out = np.empty(h.shape + (3,), np.uint8)
    every = vector.all()
    grey = None if every else (s == 0) & ~vector
    for k, value in enumerate((r, g, b)):
        value = value * _F32(255)
        if every:
            value = np.trunc(value, out=value)
        else:
            value = np.where(grey, vf * _F32(255), value)
            value = np.where(vector, np.trunc(value), np.rint(value))
        out[..., k] = np.clip(value, 0, 255, out=value)
    return out


def _scale_u8(a: np.ndarray, k: float) -> np.ndarray:
    """An 8-bit Mat times a double (Mat::convertTo with a scale): rounded, saturated."""
    return np.clip(np.rint(a.astype(_F32) * _F32(k)), 0, 255).astype(np.int64)


def adjust_hsv(img: np.ndarray, dhue: float, dsat: float, dexp: float,
               cols: np.ndarray | None = None, width: int | None = None) -> np.ndarray:
    """The HSV step of image_data_augmentation (image_opencv.cpp:1246-1269): in 8-bit HSV,
    S *= dsat and V *= dexp (rounded, saturated at 255), H += round(179 * dhue) saturated to
    0..255 (not wrapped: a hue pushed below 0 stays 0; one above 179 is read modulo 180 by the
    conversion back). One channel: the pixel values times dexp. `cols`/`width` as in
    :func:`hsv_to_rgb`."""
    if img.ndim == 2 or img.shape[2] == 1:
        return _scale_u8(img, dexp).astype(np.uint8).reshape(img.shape)
    h, s, v = rgb_to_hsv(img)
    s = _scale_u8(s, dsat)
    v = _scale_u8(v, dexp)
    h = np.clip(h + int(np.rint(179 * dhue)), 0, 255)
    return hsv_to_rgb(h, s, v, cols, width)


_SMALL_GAUSSIAN = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
                   7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}


def gaussian_kernel(ksize: int) -> np.ndarray:
    """GaussianBlur's 8-bit kernel for sigma 0: getGaussianKernelBitExact (OpenCV's tables up to
    7, else sigma = 0.15 * ksize + 0.35) in 1/256 units, rounded with error diffusion
    (getGaussianKernelFixedPoint_ED): int64 weights summing to 256."""
    if ksize in _SMALL_GAUSSIAN:
        k = _SMALL_GAUSSIAN[ksize]
    else:
        sigma = ksize * 0.15 + 0.35
        scale2 = -0.125 / (sigma * sigma)
        half = [math.exp(x * x * scale2) for x in range(1 - ksize, 0, 2)]
        mul = 1 / (2 * sum(half) + 1)
        k = [t * mul for t in half] + [mul]
    out = np.zeros(ksize, np.int64)
    err, total = 0.0, 0
    for i in range(ksize // 2):
        adj = k[i] * 256 + err
        out[i] = out[ksize - 1 - i] = int(np.rint(adj))
        err = adj - out[i]
        total += int(out[i])
    out[ksize // 2] = 256 - 2 * total
    return out


def gaussian_blur(img: np.ndarray, ksize: int) -> np.ndarray:
    """cv::GaussianBlur(img, (ksize, ksize), 0) of a uint8 image: OpenCV's fixed-point
    separable filter (8-bit kernel, exact sums, rounded once), BORDER_REFLECT_101."""
    k = gaussian_kernel(ksize)
    r = ksize // 2
    a = img.astype(np.int64)
    for axis in (1, 0):
        n = a.shape[axis]
        idx = np.abs(np.arange(-r, n + r))
        idx = np.where(idx >= n, 2 * (n - 1) - idx, idx)
        padded = np.take(a, np.clip(idx, 0, n - 1), axis=axis)  # clip: a side under the kernel
        acc = np.zeros_like(a)
        for j in range(ksize):
            if k[j]:
                sl = [slice(None)] * a.ndim
                sl[axis] = slice(j, j + n)
                acc += k[j] * padded[tuple(sl)]
        a = acc
    return np.clip((a + (1 << 15)) >> 16, 0, 255).astype(np.uint8)


def _blur_step(sized: np.ndarray, blur: int, truth: np.ndarray) -> np.ndarray:
    """image_data_augmentation's blur (image_opencv.cpp:1276-1312): blur=1 blurs with a 17x17
    kernel and puts the boxes back unblurred (the background is blurred); blur>1 blurs the whole
    image with ksize (blur/2)*2+1."""
    ksize = 17 if blur == 1 else (blur // 2) * 2 + 1
    dst = gaussian_blur(sized, ksize)
    if blur == 1:
        rows, cols = sized.shape[:2]
        for _, x, y, bw, bh in truth:
            left = int((float(x) - float(bw) / 2.0) * cols)
            width = int(bw * _F32(cols))
            top = int((float(y) - float(bh) / 2.0) * rows)
            height = int(bh * _F32(rows))
            x0, y0 = max(left, 0), max(top, 0)
            x1, y1 = min(left + width, cols), min(top + height, rows)
            if x1 > x0 and y1 > y0:
                dst[y0:y1, x0:x1] = sized[y0:y1, x0:x1]
    return dst


def _noise_step(sized: np.ndarray, sigma: int, rng: np.random.Generator) -> np.ndarray:
    """image_data_augmentation's noise (image_opencv.cpp:1314-1325): cv::randn into a uint8 Mat,
    so negative samples become 0 and the noise only brightens; added with saturation."""
    sigma = min(max(sigma, 0), 127)
    noise = rng.standard_normal(sized.shape, dtype=np.float32) * _F32(sigma)
    noise = np.clip(np.rint(noise), 0, 255).astype(np.int16)
    return np.clip(sized.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def image_data_augmentation(img: np.ndarray, w: int, h: int, g: Geometry, d: StageDraw,
                            blur: int, truth: np.ndarray, rng: np.random.Generator,
                            region: tuple[slice, slice] | None = None) -> np.ndarray:
    """image_data_augmentation (image_opencv.cpp:1205-1338) on uint8 (H, W, C) pixels: crop and
    resize, flip, HSV, blur, noise; returns uint8 (h, w, C), or only its (rows, cols) `region`
    (a mosaic piece: the same pixels, computed alone unless blur needs the neighbours)."""
    if region is not None and blur:
        return image_data_augmentation(img, w, h, g, d, blur, truth, rng)[region]
    rows = np.arange(h) if region is None else np.arange(h)[region[0]]
    cols = np.arange(w) if region is None else np.arange(w)[region[1]]
    src_cols = w - 1 - cols if d.flip else cols  # the flip, folded into the resize's columns
    sized = crop_resize(img, g, w, h, src_cols, rows)
    if d.dsat != 1 or d.dexp != 1 or d.dhue != 0:
        sized = adjust_hsv(sized, d.dhue, d.dsat, d.dexp, cols, w)
    if sized.ndim == 2:
        sized = sized[:, :, None]
    if blur:
        sized = _blur_step(np.ascontiguousarray(sized), blur, truth)
    if d.gaussian_noise:
        sized = _noise_step(sized, d.gaussian_noise, rng)
    return np.ascontiguousarray(sized)


def to_float_image(pixels: np.ndarray) -> np.ndarray:
    """mat_to_image: uint8 (H, W, C) → float32 (C, H, W), exactly u8 / 255.f."""
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)).astype(_F32) / _F32(255)


# --- one sample -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A decoded image (uint8 (H, W, C), RGB or grey) and its label rows (ids (n,), boxes (n, 4)
    [x, y, w, h] relative to the image)."""

    pixels: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray


def augment_sample(sources: Sequence[Source], opts: AugmentOptions, w: int, h: int,
                   use_mixup: int, rng: np.random.Generator, cut: tuple[int, int] = (0, 0)
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One slot of load_data_detection (data.c:1087-1350): ``sources`` holds the image of each
    stage (1; 2 for mixup; 4 for mosaic, in the order top-left, top-right, bottom-left,
    bottom-right), `use_mixup` what the batch's coin left (0, 1 or 3), `cut` the mosaic centre.
    Returns the float32 (C, h, w) image and the (n, 5) [class, x, y, w, h] targets."""
    stages = {0: 1, MIXUP: 2, MOSAIC: 4}[use_mixup]
    if len(sources) < stages:
        raise ValueError(f"{stages} images are needed, got {len(sources)}")
    cut_x, cut_y = cut
    image: np.ndarray | None = None
    truth = np.zeros((0, 5), _F32)
    for stage in range(stages):
        src = sources[stage]
        oh, ow = src.pixels.shape[:2]
        d = draw_stage(rng, opts, use_mixup == MOSAIC)
        g = crop_geometry(ow, oh, w, h, d, opts, stage)
        rows, min_w_h = fill_truth_detection(src.ids, src.boxes, g, d.flip, opts, w, h, rng)
        blur = d.blur
        if min_w_h // 8 < blur and blur > 1:  # data.c:1244: small objects limit the blur
            blur = min_w_h // 8
        if use_mixup == MOSAIC:
            shifts = mosaic_shifts(g, d.flip, w, h, cut_x, cut_y)
            piece = _piece(stage, w, h, cut_x, cut_y, shifts)
            ai = image_data_augmentation(src.pixels, w, h, g, d, blur, rows, rng, piece)
        else:
            ai = image_data_augmentation(src.pixels, w, h, g, d, blur, rows, rng)
        if use_mixup == 0:
            image, truth = to_float_image(ai), rows
        elif use_mixup == MIXUP:
            new = to_float_image(ai)
            if stage == 0:
                image, truth = new, rows
            else:  # blend_images_cv, blend_truth (data.c:1264-1265)
                image = new * _F32(0.5) + image * _F32(0.5)
                truth = np.concatenate([truth, rows[:max(opts.max_boxes - len(truth), 0)]])
        else:
            if image is None:
                image = np.zeros((h, w, ai.shape[2]), np.uint8)
            image[_quadrant(stage, w, h, cut_x, cut_y)] = ai
            moved = blend_truth_mosaic(rows, stage, w, h, cut_x, cut_y, shifts,
                                       opts.mosaic_bound, opts.max_boxes - len(truth))
            truth = np.concatenate([truth, moved])
    if use_mixup == MOSAIC:
        image = to_float_image(image)
    return image, truth.reshape(-1, 5).astype(_F32)


def _quadrant(stage: int, w: int, h: int, cut_x: int, cut_y: int) -> tuple[slice, slice]:
    """Where piece `stage` goes in the mosaic: (rows, cols) around (cut_x, cut_y)."""
    xs = slice(0, cut_x) if stage in (0, 2) else slice(cut_x, w)
    ys = slice(0, cut_y) if stage in (0, 1) else slice(cut_y, h)
    return ys, xs


def _piece(stage: int, w: int, h: int, cut_x: int, cut_y: int,
           shifts: tuple[int, int, int, int]) -> tuple[slice, slice]:
    """The part of a piece's augmented image the mosaic copies (data.c:1289-1309): the part
    nearest the centre, skipping `shifts` of padding; (rows, cols)."""
    left, right, top, bot = shifts
    ys, xs = _quadrant(stage, w, h, cut_x, cut_y)
    sx0 = w - cut_x - right if stage in (0, 2) else left
    sy0 = h - cut_y - bot if stage in (0, 1) else top
    return slice(sy0, sy0 + ys.stop - ys.start), slice(sx0, sx0 + xs.stop - xs.start)


# --- multi-scale ----------------------------------------------------------------------------------

def _round_half_away(x: float) -> int:
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def _scaled_dim(value: float, init: int, step: float) -> int:
    """`roundl(value * init / resize_step + 1) * resize_step` (detector.c:201), float32 math."""
    q = _F32(_F32(value) * _F32(init)) / _F32(step) + _F32(1)
    return int(_F32(_round_half_away(float(q))) * _F32(step))


def max_size(opts: AugmentOptions) -> tuple[int, int]:
    """The largest multi-scale size (detector.c:206-207), Darknet's first and last size."""
    coef = opts.random if opts.random != 1.0 else 1.4
    return (_scaled_dim(coef, opts.width, opts.resize_step),
            _scaled_dim(coef, opts.height, opts.resize_step))


def random_size(rng: np.random.Generator, opts: AugmentOptions, iteration: int,
                first: bool = False) -> tuple[int, int]:
    """The network size train_detector picks when `random` is set (detector.c:196-217):
    random_val = rand_scale(1.4, or random= when it is not 1); each side
    round(random_val * init / resize_step + 1) * resize_step; a shrinking draw that rounded
    above the cfg's size keeps the cfg's size; the largest size for the first block (`first`)
    and after max_batches - 100; at least resize_step."""
    coef = opts.random if opts.random != 1.0 else 1.4
    value = rand_scale(rng, coef)
    dim_w = _scaled_dim(value, opts.width, opts.resize_step)
    dim_h = _scaled_dim(value, opts.height, opts.resize_step)
    if value < 1 and (dim_w > opts.width or dim_h > opts.height):
        dim_w, dim_h = opts.width, opts.height
    if first or iteration > opts.max_batches - 100:
        dim_w, dim_h = max_size(opts)
    step = int(opts.resize_step)
    return max(dim_w, step), max(dim_h, step)
