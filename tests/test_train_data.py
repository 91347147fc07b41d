"""The training data: Darknet's detector augmentation (darkcfg.train.augment), the seeded
DataLoader (darkcfg.train.data), multi-scale sizes and Trainer.resize, bad input, make_shapes.

Boxes following the image: each source image is a plain background with one shape of one colour
whose exact box is its label. A sample is augmented twice with the same seed, once with all
shapes and once with shape j removed from its image; the pixels that differ are where shape j
landed, and its label must sit on them within a pixel or two (or cover them, where Darknet's
mosaic without mosaic_bound keeps boxes running into the neighbouring piece).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import darkcfg
from darkcfg import CfgError, CfgWarning
from darkcfg.train import Trainer
from darkcfg.train import augment as A
from darkcfg.train.data import DetectionData

REPO = Path(__file__).resolve().parents[1]
W, H = 128, 96  # network size of the box tests: not square, so x/y mix-ups show

try:
    import cv2  # optional: the numpy ports are checked against the real OpenCV when present
except ImportError:  # pragma: no cover - depends on the machine
    cv2 = None
needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (cv2) is not installed; the numpy "
                               "ports of its operations are checked against it when it is")


def _tool():
    spec = importlib.util.spec_from_file_location("make_shapes", REPO / "tools" / "make_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


make_shapes = _tool()


# --- boxes follow the image -----------------------------------------------------------------------

SHAPE_COLOUR = np.array([200, 60, 30], np.uint8)


def _scene(rng: np.random.Generator, cls: int, kind: int):
    """(background only, background with the shape, ids, boxes): a plain grey image of random
    size with one shape (kind: rectangle, ellipse, triangle...) and its exact box."""
    ow, oh = int(rng.integers(60, 170)), int(rng.integers(60, 170))
    grey = int(rng.integers(60, 140))
    plain = np.full((oh, ow, 3), grey, np.uint8)
    sw = int(rng.integers(max(4, ow // 12), ow // 4 + 1))
    sh = int(rng.integers(max(4, oh // 12), oh // 4 + 1))
    x0, y0 = int(rng.integers(0, ow - sw + 1)), int(rng.integers(0, oh - sh + 1))
    im = Image.new("1", (ow, oh), 0)
    make_shapes.draw_shape(ImageDraw.Draw(im), kind, (x0, y0, x0 + sw, y0 + sh), 1)
    mask = np.asarray(im)
    bx0, by0, bx1, by1 = make_shapes.shape_pixels_box(mask)
    shaped = plain.copy()
    shaped[mask] = SHAPE_COLOUR
    box = np.array([[(bx0 + bx1) / 2 / ow, (by0 + by1) / 2 / oh, (bx1 - bx0) / ow,
                     (by1 - by0) / oh]], np.float32)
    return plain, shaped, np.array([cls]), box


def _check_boxes_follow(opts: A.AugmentOptions, use_mixup: int, seed: int,
                        tol: float = 1.5, kinds: tuple[int, ...] = (0,)) -> None:
    """Rectangles (kind 0) fill their box, so their label must match their pixels; other kinds
    (`kinds`) leave the corners of their box empty, so their label must cover their pixels."""
    stages = {0: 1, 1: 2, 3: 4}[use_mixup]
    rng = np.random.default_rng(seed)
    scenes = [_scene(rng, j, int(rng.choice(kinds))) for j in range(stages)]
    tight = kinds == (0,)
    cut = (int(rng.integers(int(W * .2), int(W * .8) + 1)),
           int(rng.integers(int(H * .2), int(H * .8) + 1)))
    full_sources = [A.Source(s[1], s[2], s[3]) for s in scenes]
    full, truth = A.augment_sample(full_sources, opts, W, H, use_mixup,
                                   np.random.default_rng(seed), cut)
    assert full.shape == (3, H, W) and full.dtype == np.float32
    assert truth.dtype == np.float32 and truth.shape[1] == 5
    _check_rows(truth, opts)
    loose = use_mixup == 3 and not opts.mosaic_bound
    for j in range(stages):
        sources = list(full_sources)
        sources[j] = A.Source(scenes[j][0], scenes[j][2], scenes[j][3])
        minus, truth2 = A.augment_sample(sources, opts, W, H, use_mixup,
                                         np.random.default_rng(seed), cut)
        np.testing.assert_array_equal(truth, truth2)  # boxes do not depend on the pixels
        diff = np.abs(full - minus).sum(0)
        rows = truth[truth[:, 0] == j]
        assert len(rows) <= 1
        # well above the shift of the mean colour Darknet pads crops with (mixup halves both)
        if diff.max() < (0.125 if use_mixup == 1 else 0.25):
            if tight and not loose:  # out of sight, no label (mosaic_bound=0 keeps some, and
                # the box of an ellipse can reach into the piece where the ellipse does not)
                assert not len(rows), f"stage {j}: a label for a shape that is not visible"
            continue
        ys, xs = np.nonzero(diff >= diff.max() * 0.5)
        fx0, fx1, fy0, fy1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        if not len(rows):
            # Darknet drops boxes under a pixel, mosaic boxes as wide or high as the image and,
            # without mosaic_bound, some boxes cut by the image's edge (blend_truth_mosaic moves
            # the edge in whole pixels, then checks the float box: data.c:990-1031)
            edge = fx0 == 0 or fy0 == 0 or fx1 == W or fy1 == H
            assert min(fx1 - fx0, fy1 - fy0) <= 3 or fx1 - fx0 >= W - 1 or \
                fy1 - fy0 >= H - 1 or (loose and edge), \
                f"stage {j}: the shape at x {fx0}..{fx1}, y {fy0}..{fy1} lost its label"
            continue
        _, x, y, bw, bh = (float(v) for v in rows[0])
        left, right = (x - bw / 2) * W, (x + bw / 2) * W
        top, bottom = (y - bh / 2) * H, (y + bh / 2) * H
        where = (f"stage {j}: label x {left:.1f}..{right:.1f} y {top:.1f}..{bottom:.1f}, shape "
                 f"x {fx0}..{fx1} y {fy0}..{fy1}")
        assert left <= fx0 + tol and right >= fx1 - tol, where
        assert top <= fy0 + tol and bottom >= fy1 - tol, where
        if tight and not loose:
            assert abs(left - fx0) <= tol and abs(right - fx1) <= tol, where
            assert abs(top - fy0) <= tol and abs(bottom - fy1) <= tol, where


def _check_rows(truth: np.ndarray, opts: A.AugmentOptions) -> None:
    """Every target row is one Darknet trains on: a class of the head, inside the image, at
    least a pixel of the network input, at most max= rows."""
    assert len(truth) <= opts.max_boxes
    if not len(truth):
        return
    cls, x, y, w, h = truth.T
    assert ((cls >= 0) & (cls < opts.classes)).all()
    assert ((x > 0) & (x <= 1) & (y > 0) & (y <= 1)).all()
    assert ((w >= 1 / W) & (h >= 1 / H) & (w <= 1) & (h <= 1)).all()
    # under a pixel past the edge: Darknet's mosaic checks whole (truncated) pixels
    assert (x - w / 2 > -1 / W).all() and (x + w / 2 < 1 + 1 / W).all()
    assert (y - h / 2 > -1 / H).all() and (y + h / 2 < 1 + 1 / H).all()


def _opts(**keys) -> A.AugmentOptions:
    base = dict(width=W, height=H, classes=4, jitter=0.0, flip=False)
    base.update(keys)
    return A.AugmentOptions(**base)


ALONE = {
    "jitter": (_opts(jitter=0.3), 0, 1.5),
    "resize": (_opts(resize=1.5), 0, 1.5),
    "resize_down": (_opts(resize=0.5), 0, 1.5),
    "flip": (_opts(flip=True), 0, 1.5),
    "hsv": (_opts(hue=0.1, saturation=1.5, exposure=1.5), 0, 1.5),
    "letter_box": (_opts(letter_box=True), 0, 1.5),
    "blur_background": (_opts(blur=1), 0, 3.0),
    "blur": (_opts(blur=5), 0, 3.0),
    "gaussian_noise": (_opts(gaussian_noise=30), 0, 1.5),
    "mixup": (_opts(mixup=1), 1, 1.5),
    "mosaic": (_opts(mixup=3), 3, 1.5),
    "mosaic_bound": (_opts(mixup=3, mosaic_bound=True), 3, 2.0),
}
# Blur is left out of mosaic without mosaic_bound: there Darknet keeps the labels of shapes
# outside their piece, and their blurred fringe, though visible, is not under the label.
ALL = {
    "all_mosaic": (_opts(jitter=0.3, resize=1.5, flip=True, hue=0.1, saturation=1.5,
                         exposure=1.5, mixup=3, gaussian_noise=20), 3, 1.5),
    "all_mosaic_bound": (_opts(jitter=0.3, resize=1.5, flip=True, hue=0.1, saturation=1.5,
                               exposure=1.5, mixup=3, mosaic_bound=True, blur=1,
                               gaussian_noise=20), 3, 3.0),
    "all_mixup_letter_box": (_opts(jitter=0.3, resize=0.7, flip=True, hue=0.1, saturation=1.5,
                                   exposure=1.5, mixup=1, letter_box=True, blur=5,
                                   gaussian_noise=20), 1, 3.0),
}


@pytest.mark.parametrize("name", list(ALONE))
def test_boxes_follow_each_transform(name):
    opts, use_mixup, tol = ALONE[name]
    for seed in range(12):
        _check_boxes_follow(opts, use_mixup, seed, tol)


@pytest.mark.parametrize("name", list(ALL))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_boxes_follow_all_transforms(name, seed):
    opts, use_mixup, tol = ALL[name]
    _check_boxes_follow(opts, use_mixup, seed, tol)


@pytest.mark.parametrize("name", ["jitter", "flip", "mosaic_bound"])
def test_boxes_cover_other_shapes(name):
    """Ellipses, triangles and diamonds: the label covers the shape's pixels."""
    opts, use_mixup, tol = ALONE[name]
    for seed in range(8):
        _check_boxes_follow(opts, use_mixup, seed, tol, kinds=(1, 2, 3))


@pytest.mark.parametrize("dx", [-2.5 / W, 2.5 / W])
def test_the_box_check_catches_a_wrong_box(monkeypatch, dx):
    """The check above fails when the boxes miss the image by 2.5 pixels."""
    real = A.fill_truth_detection

    def shifted(*args, **kwargs):
        rows, min_w_h = real(*args, **kwargs)
        rows[:, 1] = np.clip(rows[:, 1] + np.float32(dx), 0.01, 0.99)
        return rows, min_w_h

    monkeypatch.setattr(A, "fill_truth_detection", shifted)
    with pytest.raises(AssertionError, match="label x"):
        for seed in range(6):
            _check_boxes_follow(_opts(), 0, seed)


# --- Darknet's crop and box rules -----------------------------------------------------------------

def test_crop_geometry_by_hand():
    """data.c:1107-1233 worked by hand for a 100x80 image, jitter=.3, resize=1.5: dw = 30,
    dh = 24; min_rdw = int(100 * (1 - 1.5) / 2) = -25, max_rdw = int(100 * (1 - 1/1.5) / 2)
    = 16 (-20, 13 for the height); `int p += float` adds before truncating (pright: 30 - 14.75
    -> 15, not 16)."""
    opts = A.AugmentOptions(width=128, height=96, jitter=0.3, resize=1.5)
    d = A.StageDraw(r=(0.0, 1.0, 0.5, 0.25), resize_r=(0.5, 0.25))
    assert A.crop_geometry(100, 80, 128, 96, d, opts) == A.Geometry(-34, -3, 15, -23, 119, 106,
                                                                     100, 80)
    # mosaic corners (data.c:1206-1219): all padding moved away from the mosaic's centre
    corner = A.StageDraw(r=d.r, resize_r=d.resize_r, corner=True)
    got = [A.crop_geometry(100, 80, 128, 96, corner, opts, s) for s in range(4)]
    assert [(g.pleft, g.ptop, g.pright, g.pbot) for g in got] == [
        (0, 0, -19, -26), (-19, 0, 0, -26), (0, -26, -19, 0), (-19, -26, 0, 0)]
    flipped = A.StageDraw(r=d.r, resize_r=d.resize_r, corner=True, flip=True)
    assert A.crop_geometry(100, 80, 128, 96, flipped, opts, 0).pleft == -19
    # letter_box (data.c:1179-1200): pad the short side to the network's aspect ratio
    box = A.AugmentOptions(width=128, height=96, jitter=0.0, letter_box=True)
    assert A.crop_geometry(200, 100, 128, 96, A.StageDraw(), box) == A.Geometry(
        0, -25, 0, -25, 200, 150, 200, 100)
    assert A.crop_geometry(100, 200, 128, 96, A.StageDraw(), box) == A.Geometry(
        -83, 0, -83, 0, 266, 200, 100, 200)
    # an empty crop is reset to the whole image (data.c:1224-1230)
    huge = A.AugmentOptions(width=128, height=96, jitter=0.9)
    g = A.crop_geometry(50, 50, 128, 96, A.StageDraw(r=(1.0, 1.0, 0.5, 0.5)), huge)
    assert (g.pleft, g.ptop, g.swidth, g.sheight) == (0, 0, 50, 50)


def test_fill_truth_detection_rules():
    """Crop mapping, flip, clipping, the pixel minimum, class >= classes and max=
    (data.c:248-460)."""
    opts = _opts(classes=3, max_boxes=10)
    ids = np.array([0, 1, 2, 5, 1])
    boxes = np.array([[0.5, 0.5, 0.2, 0.4],     # inside
                      [0.05, 0.5, 0.2, 0.2],    # cut by the left edge of the crop
                      [0.5, 0.5, 0.001, 0.3],   # under a pixel wide at 128: dropped
                      [0.5, 0.5, 0.1, 0.1],     # class 5 >= classes: dropped
                      [0.03, 0.9, 0.02, 0.02]],  # left of the crop: clipped to nothing
                     np.float32)
    g = A.Geometry(pleft=10, ptop=0, pright=0, pbot=0, swidth=90, sheight=100, ow=100, oh=100)
    rows, min_w_h = A.fill_truth_detection(ids, boxes, g, True, opts, W, H,
                                           np.random.default_rng(0))
    rows = rows[np.argsort(rows[:, 0])]
    np.testing.assert_array_equal(rows[:, 0], [0, 1])
    # class 0: x 40..60 of the image -> 30..50 of the 90-wide crop, then flipped
    left, right = 1 - 50 / 90, 1 - 30 / 90
    np.testing.assert_allclose(rows[0, 1:], [(left + right) / 2, 0.5, right - left, 0.4],
                               atol=1e-6)
    # class 1: x -5..15 -> clipped to 10..15 -> 0..5 of the crop -> flipped: 85..90
    np.testing.assert_allclose(rows[1, 1:], [1 - 2.5 / 90, 0.5, 5 / 90, 0.2], atol=1e-6)
    assert min_w_h == int(np.float32(5 / 90) * W)
    capped, _ = A.fill_truth_detection(np.zeros(30, np.int64),
                                       np.tile([[0.5, 0.5, 0.5, 0.5]], (30, 1)).astype(np.float32),
                                       A.Geometry(0, 0, 0, 0, 10, 10, 10, 10), False, opts, W, H,
                                       np.random.default_rng(0))
    assert len(capped) == 10


def test_fill_truth_shuffles_before_the_cap():
    """randomize_boxes runs before max= cuts (data.c:383-385): which rows survive varies."""
    opts = _opts(max_boxes=3)
    ids = np.arange(8) % 4
    boxes = np.array([[0.1 + 0.1 * i, 0.5, 0.05, 0.05] for i in range(8)], np.float32)
    g = A.Geometry(0, 0, 0, 0, 100, 100, 100, 100)
    kept = {tuple(A.fill_truth_detection(ids, boxes, g, False, opts, W, H,
                                         np.random.default_rng(s))[0][:, 1].round(3))
            for s in range(20)}
    assert len(kept) > 5 and all(len(k) == 3 for k in kept)


def test_mosaic_bound_clips_to_the_piece():
    rows = np.array([[1, 0.9, 0.7, 0.4, 0.2]], np.float32)  # runs past cut_x=64 once moved
    shifts = (0, 0, 0, 0)
    free = A.blend_truth_mosaic(rows, 0, W, H, 64, 48, shifts, False, 10)
    bound = A.blend_truth_mosaic(rows, 0, W, H, 64, 48, shifts, True, 10)
    # piece 0 shows the bottom-right of its image: x - (128 - 64) / 128, y - (96 - 48) / 96
    np.testing.assert_allclose(free[0], [1, 0.4, 0.2, 0.4, 0.2], atol=1e-6)
    left, right = int((0.4 - 0.2) * W), 64  # whole pixels, cut at the piece's edge
    top, bottom = int(0.1 * H), int(0.3 * H)
    np.testing.assert_allclose(bound[0], [1, (left + right) / 2 / W, (top + bottom) / 2 / H,
                                          (right - left) / W, (bottom - top) / H], atol=1e-6)
    assert len(A.blend_truth_mosaic(rows, 0, W, H, 64, 48, shifts, False, 0)) == 0  # no room


# --- OpenCV in numpy: the real one's bytes ---------------------------------------------------------
# Bit-exact with the cv2 4.14 wheel on this AVX2 host; OpenCV dispatches other SIMD kernels on
# other CPUs (AVX-512) and versions, which may round a value one grey level the other way, so the
# comparison allows one level (a wrong formula is off by many).

def _opencv_bytes(mine: np.ndarray, ref: np.ndarray, hue_channel: int | None = None) -> None:
    assert mine.shape == ref.shape
    diff = np.abs(mine.astype(np.int32) - ref.astype(np.int32))
    if hue_channel is not None:  # OpenCV's hue is circular over 0..179
        diff[..., hue_channel] = np.minimum(diff[..., hue_channel], 180 - diff[..., hue_channel])
    assert int(diff.max()) <= 1, f"{int((diff > 1).sum())} values differ by more than one level"


@needs_cv2
@settings(max_examples=30, deadline=None)
@given(ow=st.integers(1, 150), oh=st.integers(1, 150), w=st.integers(1, 150),
       h=st.integers(1, 150), c=st.sampled_from([1, 3]), seed=st.integers(0, 99))
def test_resize_is_cv2_inter_linear(ow, oh, w, h, c, seed):
    img = np.random.default_rng(seed).integers(0, 256, (oh, ow, c), dtype=np.uint8)
    ref = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, c)
    _opencv_bytes(A.resize_linear(img, w, h), ref)


@needs_cv2
def test_hsv_round_trip_is_cv2():
    """RGB2HSV on every colour of a cube sample, and HSV2RGB on all 2^24 HSV triples in rows
    whose length exercises both OpenCV loops (the vector one and the scalar tail)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 301, 3), dtype=np.uint8)
    ref = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    _opencv_bytes(np.stack(A.rgb_to_hsv(rgb), -1), ref, hue_channel=0)
    h, s, v = np.meshgrid(np.arange(256), np.arange(256), np.arange(256), indexing="ij")
    hsv = np.stack([h, s, v], -1).reshape(-1, 3).astype(np.uint8)
    hsv = hsv[: len(hsv) // 4099 * 4099].reshape(-1, 4099, 3)  # 4099 = 128 * 32 + 3
    ref = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    mine = A.hsv_to_rgb(*(hsv[..., k].astype(np.int32) for k in range(3)))
    _opencv_bytes(mine, ref)


@needs_cv2
@pytest.mark.parametrize("ksize", [3, 5, 7, 9, 17, 25])
def test_gaussian_blur_is_cv2(ksize):
    img = np.random.default_rng(ksize).integers(0, 256, (61, 87, 3), dtype=np.uint8)
    _opencv_bytes(A.gaussian_blur(img, ksize), cv2.GaussianBlur(img, (ksize, ksize), 0))


@needs_cv2
@pytest.mark.parametrize("seed", range(8))
def test_image_data_augmentation_is_darknets_opencv_code(seed):
    """Crop with the mean colour, resize, flip and the HSV step, written with cv2 as
    image_data_augmentation does (image_opencv.cpp:1212-1269): the same bytes."""
    rng = np.random.default_rng(seed)
    oh, ow = (int(v) for v in rng.integers(20, 200, 2))
    img = rng.integers(0, 256, (oh, ow, 3), dtype=np.uint8)
    opts = _opts(jitter=0.3, resize=1.5, flip=True, hue=0.1, saturation=1.5, exposure=1.5)
    d = A.draw_stage(rng, opts)
    g = A.crop_geometry(ow, oh, W, H, d, opts)
    if g.pleft == 0 and g.ptop == 0 and (g.swidth, g.sheight) == (ow, oh):
        sized = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    else:
        cropped = np.empty((g.sheight, g.swidth, 3), np.uint8)
        cropped[:] = np.rint(cv2.mean(img)[:3]).astype(np.uint8)
        x0, y0 = max(g.pleft, 0), max(g.ptop, 0)
        x1, y1 = min(g.pleft + g.swidth, ow), min(g.ptop + g.sheight, oh)
        if x1 > x0 and y1 > y0:
            cropped[y0 - g.ptop:y1 - g.ptop, x0 - g.pleft:x1 - g.pleft] = img[y0:y1, x0:x1]
        sized = cv2.resize(cropped, (W, H), interpolation=cv2.INTER_LINEAR)
    if d.flip:
        sized = cv2.flip(sized, 1)
    hue, sat, val = cv2.split(cv2.cvtColor(sized, cv2.COLOR_RGB2HSV))
    sat = cv2.convertScaleAbs(sat, alpha=d.dsat)
    val = cv2.convertScaleAbs(val, alpha=d.dexp)
    hue = cv2.add(hue, 179 * d.dhue).reshape(H, W)
    ref = cv2.cvtColor(cv2.merge([hue, sat, val]), cv2.COLOR_HSV2RGB)
    mine = A.image_data_augmentation(img, W, H, g, d, 0, np.zeros((0, 5), np.float32), rng)
    _opencv_bytes(mine, ref)


def test_noise_only_brightens():
    """cv::randn into a uint8 Mat drops the negative half (image_opencv.cpp:1318-1321)."""
    img = np.full((40, 40, 3), 100, np.uint8)
    d = A.StageDraw(gaussian_noise=20)
    out = A.image_data_augmentation(img, 40, 40, A.Geometry(0, 0, 0, 0, 40, 40, 40, 40), d, 0,
                                    np.zeros((0, 5), np.float32), np.random.default_rng(0))
    assert out.min() == 100 and out.max() > 130
    assert 0.4 < (out == 100).mean() < 0.6


def test_hue_saturates_instead_of_wrapping():
    """hsv[0] += 179 * dhue on a uint8 Mat saturates at 0 (image_opencv.cpp:1259)."""
    red = np.zeros((1, 40, 3), np.uint8)
    red[..., 0] = 200  # hue 0
    out = A.adjust_hsv(red, -0.1, 1.0, 1.0)
    np.testing.assert_array_equal(out, red)  # stays red: the hue cannot go below 0


# --- multi-scale ----------------------------------------------------------------------------------

def test_random_sizes_are_darknets():
    """detector.c:196-217 for a 416x416 cfg with random=1: multiples of 32 from 320 to 608, the
    largest for the first 10 iterations and the last 100, a shrinking draw that rounds above
    416 stays 416; one draw for both sides."""
    opts = A.AugmentOptions(width=416, height=416, random=1.0, max_batches=2000)
    sizes = [A.random_size(np.random.default_rng(b), opts, b * 10, b == 0) for b in range(200)]
    assert sizes[0] == (608, 608) and A.max_size(opts) == (608, 608)
    assert len(sizes[191:]) == 9 and all(s == (608, 608) for s in sizes[191:])
    seen = {s[0] for s in sizes[1:191]}
    assert seen <= set(range(320, 609, 32)) and len(seen) >= 8
    assert min(seen) <= 352 and all(w == h for w, h in sizes)
    for b in range(1, 191):  # a draw under 1 never gives more than the cfg's 416
        value = A.rand_scale(np.random.default_rng(b), 1.4)
        assert value >= 1 or sizes[b][0] <= 416


def test_random_sizes_other_coefficient_step_and_aspect():
    opts = A.AugmentOptions(width=512, height=256, random=1.2, resize_step=64, max_batches=10**6)
    for b in range(1, 200):
        rng = np.random.default_rng(b)
        w, h = A.random_size(rng, opts, b * 10)
        rng = np.random.default_rng(b)
        value = A.rand_scale(rng, 1.2)
        assert w % 64 == 0 and h % 64 == 0
        assert w == round(value * 512 / 64 + 1) * 64 or (value < 1 and w == 512)
        assert w in range(448, 832, 64) and h in range(256, 448, 64)


def _tiny_cfg(tmp_path: Path, **net) -> Path:
    keys = dict(batch=4, subdivisions=2, width=96, height=64, channels=3, learning_rate=0.001,
                max_batches=300, momentum=0.9, decay=0.0005)
    keys.update(net)
    convs = "".join("[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=2\npad=1\n"
                    "activation=leaky\n\n" for _ in range(5))
    text = ("[net]\n" + "".join(f"{k}={v}\n" for k, v in keys.items()) + "\n" + convs +
            "[convolutional]\nsize=1\nstride=1\npad=1\nfilters=24\nactivation=linear\n\n"
            "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=3\nnum=3\njitter=.3\n"
            "random=1\n")
    path = tmp_path / "tiny.cfg"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    return make_shapes.make_shapes(out / "set", train=12, valid=3, seed=3, min_size=64,
                                   max_size=160)


def test_multi_scale_batches_and_trainer_resize(tmp_path, shapes):
    """Every 10 iterations a new size (multiples of 32, Darknet's range for 96x64); the batch
    comes at that size and the Trainer trains there with the same parameters."""
    network = darkcfg.parse(_tiny_cfg(tmp_path))
    data = DetectionData.from_data(shapes, network, seed=5)
    sizes = [data.size(k) for k in range(0, 300, 10)]
    # first block and the last 100 iterations: the largest, round(1.4 * 96 / 32 + 1) * 32 by
    # round(1.4 * 64 / 32 + 1) * 32
    assert sizes[0] == (160, 128) and sizes[21:] == [(160, 128)] * 9
    assert all(w % 32 == 0 and h % 32 == 0 and 96 <= w <= 160 and 64 <= h <= 128
               for w, h in sizes)
    assert len(set(sizes)) >= 3
    assert all(data.size(k) == data.size(k - k % 10) for k in range(300))
    model = darkcfg.build(network)
    trainer = Trainer(model)
    params = list(model.parameters())
    for k in (0, 10):
        batch = data.batch_at(k)
        assert (batch.width, batch.height) == data.size(k)
        assert batch.images.shape == (4, 3, batch.height, batch.width)
        trainer.resize(batch.width, batch.height)
        assert math.isfinite(trainer.step(batch.images, batch.targets))
        assert all(a is b for a, b in zip(model.parameters(), params))  # the same tensors
    trainer.resize(96, 64)
    assert model.network.net.width == 96 and trainer.iteration == 2
    with pytest.raises(CfgError, match=r"images must be a \(4, 3, 64, 96\) tensor"):
        trainer.step(torch.zeros(4, 3, 96, 160), batch.targets)


def test_trainer_resize_refuses_a_size_bound_layer():
    cfg = ("[net]\nbatch=2\nsubdivisions=1\nwidth=8\nheight=8\nchannels=1\n\n"
           "[connected]\noutput=4\nactivation=linear\n\n[softmax]\n\n[cost]\n")
    trainer = Trainer(darkcfg.build(cfg))
    with pytest.raises(CfgError, match=r"^cannot train at 16x16: layer 0 \[connected\] has 260 "
                                       r"weights at 8x8 and 1028 there"):
        trainer.resize(16, 16)


# --- the data set: determinism, workers, resume ------------------------------------------------

@pytest.fixture(scope="module")
def mosaic_net(tmp_path_factory) -> darkcfg.Network:
    tmp = tmp_path_factory.mktemp("cfg")
    return darkcfg.parse(_tiny_cfg(tmp, mosaic=1, hue=0.1, saturation=1.5, exposure=1.5))


def _same(a, b) -> bool:
    return (a.iteration, a.width, a.height) == (b.iteration, b.width, b.height) and \
        torch.equal(a.images, b.images) and len(a.targets) == len(b.targets) and \
        all(torch.equal(x, y) for x, y in zip(a.targets, b.targets)) and a.paths == b.paths


def test_same_seed_same_batches(shapes, mosaic_net):
    a = DetectionData.from_data(shapes, mosaic_net, seed=1)
    b = DetectionData.from_data(shapes, mosaic_net, seed=1)
    c = DetectionData.from_data(shapes, mosaic_net, seed=2)
    for k in (0, 1, 17):
        assert _same(a.batch_at(k), b.batch_at(k))
        assert not torch.equal(a.batch_at(k).images, c.batch_at(k).images)
    assert a.plan(3) == b.plan(3) and a.plan(3) != a.plan(4)


def test_workers_and_resume_give_the_same_batches(shapes, mosaic_net):
    """2 worker processes, no worker, and a loader started at iteration 2 (a resume) yield the
    same batches; state() says where the data stands and check_state() accepts it."""
    data = DetectionData.from_data(shapes, mosaic_net, seed=7)
    plain = list(data.loader(0, 4))
    with_workers = list(data.loader(0, 4, workers=2))
    resumed = list(data.loader(2, 4))
    assert [b.iteration for b in plain] == [0, 1, 2, 3]
    assert all(_same(x, y) for x, y in zip(plain, with_workers))
    assert all(_same(x, y) for x, y in zip(plain[2:], resumed))
    state = data.state(2)
    assert state["iteration"] == 2 and state["images"] == 12 and state["position"] == 8 % 12
    again = DetectionData.from_data(shapes, mosaic_net, seed=7)
    assert again.check_state(state) == 2
    other = DetectionData.from_data(shapes, mosaic_net, seed=8)
    with pytest.raises(CfgError, match=r"^the data state was saved with other data, so the "
                                       r"resumed run would not continue it: seed 7 \(now 8\)$"):
        other.check_state(state)


def test_plan_mixes_like_darknet(shapes, mosaic_net):
    """The batch splits into 6 pieces, each with its own mosaic coin (data.c:1055, 1672); a
    mosaic slot combines 4 images, a plain one 1; cut points in 20%..80% of the size."""
    data = DetectionData.from_data(shapes, mosaic_net, seed=0)
    coins = []
    for k in range(40):
        plan = data.plan(k)
        assert len(plan.slots) == 4
        for s in plan.slots:
            assert len(s.images) == (4 if s.use_mixup == 3 else 1)
            assert int(plan.width * np.float32(.2)) <= s.cut[0] <= int(plan.width * np.float32(.8))
        # 4 images in 6 pieces: pieces 1, 2, 4 and 5 hold one each (load_threads' split)
        assert [s.use_mixup for s in plan.slots] == [3 * int(c) for c in (
            _coins(data, k)[[1, 2, 4, 5]])]
        coins += [s.use_mixup for s in plan.slots]
    assert 0.3 < np.mean(np.array(coins) == 3) < 0.7


def _coins(data: DetectionData, k: int) -> np.ndarray:
    """The six pieces' coins of iteration k, drawn as plan() draws them."""
    from darkcfg.train import data as D
    return D._rng(data.seed, D._PLAN, k).integers(0, 2, size=data.threads)


def test_epoch_order_uses_each_image_once_per_epoch(shapes, mosaic_net):
    data = DetectionData.from_data(shapes, mosaic_net, seed=4, order="epoch")
    firsts = [s.images[0] for k in range(6) for s in data.plan(k).slots]  # 24 = 2 epochs
    assert sorted(firsts[:12]) == list(range(12)) and sorted(firsts[12:]) == list(range(12))
    assert firsts[:12] != firsts[12:]


def test_ranks_share_the_global_batch(shapes, mosaic_net):
    ranks = [DetectionData.from_data(shapes, mosaic_net, seed=9, rank=r, world_size=2)
             for r in range(2)]
    for k in (0, 5):
        slots = [s for r in ranks for s in r.plan(k).slots]
        assert [s.slot for s in slots] == list(range(8))
    assert ranks[0].global_batch == 8


# --- bad input ------------------------------------------------------------------------------------

def _dataset(tmp_path: Path, n: int = 4) -> list[str]:
    data = make_shapes.make_shapes(tmp_path / "d", train=n, valid=0, seed=1, min_size=40,
                                   max_size=60)
    return (data.parent / "train.txt").read_text().splitlines()


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, CfgWarning)]


def test_bad_files_are_skipped_with_a_warning_each(tmp_path, mosaic_net, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = _dataset(Path("."), 6)
    Path(paths[1]).unlink()
    Path(paths[2]).with_suffix(".txt").unlink()
    Path(paths[3]).with_suffix(".txt").write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.2 0.2\n")
    Path(paths[4]).with_suffix(".txt").write_text("1 nan 0.5 0.2 0.2\n")
    Path(paths[5]).with_suffix(".txt").write_text("1 0.5 0.5 0.2 1.5\n")
    with pytest.warns(CfgWarning) as record:
        data = DetectionData(paths + [""], mosaic_net, list_name="train.txt")
    assert _messages(record) == [
        f"image {paths[1]} does not exist; the image is skipped",
        f"no label file {paths[2][:-4]}.txt for image {paths[2]}; the image is skipped",
        f"{paths[3][:-4]}.txt line 2: class 3 is not in 0..2; the image is skipped",
        f"{paths[4][:-4]}.txt line 1: x=nan outside (0, 1]; the image is skipped",
        f"{paths[5][:-4]}.txt line 1: h=1.5 outside (0, 1]; the image is skipped",
        "5 of 6 images of the image list train.txt are skipped (DetectionData.skipped lists "
        "them, as Darknet's bad.list)"]
    assert data.paths == [paths[0]] and [s.path for s in data.skipped] == paths[1:]
    assert data.batch_at(0).images.shape[0] == 4


def test_empty_and_unusable_lists_are_errors(tmp_path, mosaic_net, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CfgError, match=r"^the image list list.txt is empty$"):
        DetectionData([], mosaic_net, list_name="list.txt")
    with pytest.raises(CfgError, match=r"^no usable image in the image list: it has only empty "
                                       r"lines$"):
        DetectionData(["", ""], mosaic_net)
    with pytest.warns(CfgWarning), \
            pytest.raises(CfgError, match=r"^no usable image in the image list: all 2 were "
                                          r"skipped \(the first: image a.png does not exist\)$"):
        DetectionData(["a.png", "b.png"], mosaic_net)
    (tmp_path / "obj.data").write_text("train = nothing.txt\n")
    with pytest.raises(CfgError, match=r"^cannot read image list nothing.txt: no such file "
                                       r"\(train= of obj.data\)$"):
        DetectionData.from_data("obj.data", mosaic_net)


def test_an_unreadable_image_is_replaced_and_reported_once(tmp_path, mosaic_net, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = _dataset(Path("."), 3)
    Path(paths[0]).write_bytes(b"not a png")
    data = DetectionData(paths, mosaic_net, seed=2)
    with pytest.warns(CfgWarning) as record:
        batches = list(data.loader(0, 6))
    messages = _messages(record)
    assert messages == [f"cannot read image {paths[0]}: not an image file Pillow can decode; "
                        f"replaced by another image of the list"]
    assert all(paths[0] not in p for b in batches for p in b.paths)
    assert sum(len(b.skipped) for b in batches) >= 1


# --- the cfg's keys -------------------------------------------------------------------------------

def test_options_from_the_cfg(tmp_path):
    net = darkcfg.parse(_tiny_cfg(tmp_path, mosaic=1, cutmix=1, hue=0.05, exposure=0, flip=0,
                                  blur=3, gaussian_noise=7, mosaic_bound=1, resize_step=64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o = A.read_augment_options(net)
    assert (o.width, o.height, o.classes, o.max_boxes) == (96, 64, 3, 200)
    assert (o.jitter, o.random, o.resize, o.resize_step) == (pytest.approx(0.3), 1.0, 1.0, 64)
    assert (o.mixup, o.use_mixup, o.stages) == (4, 3, 4)
    assert o.exposure == 1.0 and o.saturation == 1.0 and not o.flip and o.mosaic_bound
    assert (o.blur, o.gaussian_noise, o.max_batches) == (3, 7, 300)
    assert o.notes == ("cutmix=1 is not supported for detectors: Darknet ignores it "
                       "(data.c:1047-1051), mosaic still applies",)


def test_letter_box_with_mosaic_and_track_are_refused(tmp_path):
    net = darkcfg.parse(_tiny_cfg(tmp_path, mosaic=1, letter_box=1))
    with pytest.raises(CfgError, match=r"^letter_box=1 and mosaic=1 cannot be combined \(Darknet "
                                       r"stops: data.c:1052-1054\)"):
        A.read_augment_options(net)
    net = darkcfg.parse(_tiny_cfg(tmp_path, track=1))
    with pytest.raises(CfgError, match=r"^track=1 \(Darknet's sequential/contrastive loading\) "
                                       r"is not supported by darkcfg's data loader"):
        A.read_augment_options(net)


# --- make_shapes ----------------------------------------------------------------------------------

def test_make_shapes_is_deterministic_and_labels_the_drawn_pixels(tmp_path):
    a = make_shapes.make_shapes(tmp_path / "a", train=5, valid=2, seed=11, min_size=50,
                                max_size=90)
    b = make_shapes.make_shapes(tmp_path / "b", train=5, valid=2, seed=11, min_size=50,
                                max_size=90)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*")
                   if p.suffix in (".png", ".txt") and p.parent.name == "obj")
    assert len(files) == 14
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert a.read_text().startswith("classes = 3\ntrain = ")
    assert len((tmp_path / "a" / "valid.txt").read_text().splitlines()) == 2
    from darkcfg.datafile import read_labels
    for image in sorted((tmp_path / "a" / "obj").glob("*.png")):
        pixels = np.asarray(Image.open(image))
        labels = read_labels(image.with_suffix(".txt"), 3)
        assert len(labels) >= 1 and not labels.notes
        for x, y, w, h in labels.boxes:
            ih, iw = pixels.shape[:2]
            x0, x1 = round((x - w / 2) * iw), round((x + w / 2) * iw)
            y0, y1 = round((y - h / 2) * ih), round((y + h / 2) * ih)
            inside = pixels[y0:y1, x0:x1].reshape(-1, 3)
            colours, counts = np.unique(inside, axis=0, return_counts=True)
            colour = colours[counts.argmax()]  # the shape's colour fills most of its box
            box = pixels[y0:y1, x0:x1]
            edge = (box == colour).all(-1)
            assert edge[0].any() and edge[-1].any() and edge[:, 0].any() and edge[:, -1].any()
    with pytest.raises(ValueError, match="classes must be 1..5, not 9"):
        make_shapes.make_shapes(tmp_path / "c", classes=9)
