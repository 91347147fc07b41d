"""Detection end to end: Darknet's preprocessing, box decoding, NMS and printout.

Against Darknet's own numbers (../shared/official: `detector test` with the official yolov3-tiny
weights on its sample images; ../shared/oracle/micro: `get_network_boxes` + `do_nms_sort` on
every head type), and against literal Python transcriptions of Darknet's C loops for the parts
whose edge cases the reference data does not reach (resize sizes, NMS kinds and ties, the tree).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import darkcfg
from darkcfg.cli import main
from darkcfg.detection import (Detection, RawDetections, _tree_probs, decode, detect, detect_batch,
                            nms, nms_settings, select)
from darkcfg.image import (class_color, draw_detections, image_from_array, letterbox_image,
                           load_image, network_input, resize_image)
from darkcfg.tree import parse_tree
from oracle import SHARED, OracleCase, micro_cases, needs_shared, rel_err

IMAGES = ["dog", "eagle", "giraffe", "horses", "person", "scream"]
F32 = np.float32


# --- helpers -----------------------------------------------------------------------------------

def _official():
    return SHARED / "official"


_MODEL = {}


def _yolov3_tiny() -> darkcfg.DarknetModel:
    if "m" not in _MODEL:
        root = _official()
        _MODEL["m"] = darkcfg.load(root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights")
    return _MODEL["m"]


def _reference(name: str) -> dict:
    return json.loads((_official() / "detections" / name / "detections.json").read_text())


def _stb_pixels(name: str) -> np.ndarray:
    return np.load(_official() / "detections" / name / "image_decoded_u8_hwc.npy")


def _pixel_box(rel: list[float], w: int, h: int) -> tuple[float, float, float, float]:
    x, y, bw, bh = rel
    return (x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h


def _assert_same_detections(found: list[Detection], ref: dict, *, pp: float, px: float) -> None:
    """Same classes in the same order, probabilities within `pp` percentage points, boxes within
    `px` pixels of Darknet's full-precision ones."""
    full = ref["detections_full_precision"]
    assert [d.class_id for d in found] == [f["class_id"] for f in full]
    assert [d.name for d in found] == [f["class"] for f in full]
    for d, f in zip(found, full):
        assert abs(d.prob - f["prob"]) * 100 <= pp, (d, f)
        want = _pixel_box(f["bbox_rel_xywh_center"], ref["image_w"], ref["image_h"])
        got = (d.left, d.top, d.width, d.height)
        assert max(abs(a - b) for a, b in zip(got, want)) <= px, (d, f)


# --- Darknet's preprocessing -------------------------------------------------------------------

def _darknet_resize_literal(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """image.c's resize_image, loop for loop, in float32 (independent of darkcfg.image)."""
    c_, src_h, src_w = im.shape
    if (src_w, src_h) == (w, h):
        return im.copy()
    part = np.zeros((c_, src_h, w), F32)
    out = np.zeros((c_, h, w), F32)
    w_scale = F32(src_w - 1) / F32(w - 1) if w > 1 else F32(0)
    h_scale = F32(src_h - 1) / F32(h - 1) if h > 1 else F32(0)
    for k in range(c_):
        for r in range(src_h):
            for c in range(w):
                if c == w - 1 or src_w == 1:
                    val = im[k, r, src_w - 1]
                else:
                    sx = F32(F32(c) * w_scale)
                    ix = int(sx)
                    dx = F32(sx - F32(ix))
                    nxt = im[k, r, min(ix + 1, src_w - 1)]
                    val = F32(F32(F32(1) - dx) * im[k, r, ix]) + F32(dx * nxt)
                part[k, r, c] = val
    for k in range(c_):
        for r in range(h):
            sy = F32(F32(r) * h_scale)
            iy = int(sy) if src_h > 1 else 0
            dy = F32(sy - F32(iy))
            for c in range(w):
                out[k, r, c] = F32(F32(1) - dy) * part[k, iy, c]
            if r == h - 1 or src_h == 1:
                continue
            for c in range(w):
                out[k, r, c] = F32(out[k, r, c] + F32(dy * part[k, iy + 1, c]))
    return out


@pytest.mark.parametrize("src,dst", [((7, 5), (4, 9)), ((5, 7), (13, 3)), ((1, 6), (3, 2)),
                                     ((6, 1), (2, 4)), ((9, 9), (9, 9)), ((11, 4), (1, 1)),
                                     ((3, 3), (1, 5))])
def test_resize_is_darknets_loop_bit_for_bit(src, dst) -> None:
    rng = np.random.default_rng(sum(src) * 31 + sum(dst))
    im = (rng.integers(0, 256, (3, src[1], src[0])).astype(F32) / F32(255))
    got = resize_image(torch.from_numpy(im), *dst).numpy()
    np.testing.assert_array_equal(got, _darknet_resize_literal(im, *dst))
    batched = resize_image(torch.from_numpy(np.stack([im, im[::-1].copy()])), *dst).numpy()
    np.testing.assert_array_equal(batched[0], got)


def test_letterbox_is_resize_on_a_grey_canvas() -> None:
    rng = np.random.default_rng(3)
    im = torch.from_numpy(rng.random((3, 24, 40), dtype=F32))
    boxed = letterbox_image(im, 20, 20)
    # 40x24 -> 20x12 (12 = 24*20/40), centred: 4 grey rows above and below
    assert boxed.shape == (3, 20, 20)
    assert torch.equal(boxed[:, 4:16], resize_image(im, 20, 12))
    assert bool((boxed[:, :4] == 0.5).all()) and bool((boxed[:, 16:] == 0.5).all())
    tall = letterbox_image(torch.from_numpy(rng.random((1, 30, 10), dtype=F32)), 16, 12)
    # 10x30 into 16x12: height limits, 4x12 (4 = 10*12/30), 6 grey columns on each side
    assert bool((tall[:, :, :6] == 0.5).all()) and bool((tall[:, :, 10:] == 0.5).all())


def test_load_image_is_u8_over_255_planar(tmp_path) -> None:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    im = load_image(tmp_path / "x.png")
    assert im.dtype == torch.float32 and im.shape == (3, 6, 9)
    np.testing.assert_array_equal(im.numpy(), pixels.transpose(2, 0, 1).astype(F32) / F32(255))
    assert torch.equal(load_image(pixels), im) and torch.equal(image_from_array(pixels), im)
    grey = load_image(pixels, channels=1).numpy()[0]
    r, g, b = (pixels[:, :, i].astype(int) for i in range(3))
    np.testing.assert_array_equal(grey, ((r * 77 + g * 150 + b * 29) >> 8).astype(F32) / F32(255))
    with pytest.raises(ValueError, match="channels"):
        load_image(tmp_path / "x.png", channels=2)


@needs_shared
@pytest.mark.parametrize("name", IMAGES)
def test_network_input_is_darknets_bit_for_bit(name) -> None:
    """From the pixels Darknet decoded, the network input is exactly the tensor it computed."""
    ref = np.load(_official() / "detections" / name / "input_sized.npy")
    im = image_from_array(_stb_pixels(name))
    x = network_input(im, 416, 416, letterbox=False)
    np.testing.assert_array_equal(x.numpy(), ref)


@needs_shared
def test_every_layer_on_dog_from_our_own_input() -> None:
    root = _official()
    case = OracleCase("yolov3-tiny_dog416", root / "yolov3-tiny_dog416")
    x = network_input(image_from_array(_stb_pixels("dog")), 416, 416)
    np.testing.assert_array_equal(x.numpy(), case.input())
    model = darkcfg.load(root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights",
                         out_indices=range(24))
    with torch.no_grad():
        outs = model(x[None])
    stored = case.outputs()
    checked = 0
    for i, out in enumerate(outs):
        key = f"layer_{i:03d}"
        if key in stored:
            assert rel_err(out[0].numpy().reshape(-1), stored[key].reshape(-1)) <= 1e-4, i
            checked += 1
    assert checked == 24


# --- end to end against `darknet detector test` ------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name", IMAGES)
def test_detections_equal_darknets(name) -> None:
    """From Darknet's decoded pixels: the very lines Darknet printed, and its full-precision
    probabilities and boxes to float rounding."""
    ref = _reference(name)
    found = detect(_yolov3_tiny(), _stb_pixels(name), names=_official() / "coco.names")
    assert [str(d) for d in found] == ref["darknet_printed"]
    _assert_same_detections(found, ref, pp=1e-3, px=1e-2)
    for d, f in zip(found, ref["detections_full_precision"]):
        assert d.objectness == pytest.approx(f["objectness"], abs=1e-5)
        assert d.pixels == (f["left_x"], f["top_y"], f["width"], f["height"])


@needs_shared
@pytest.mark.parametrize("name", IMAGES)
def test_detections_from_pillows_decode_are_within_a_point_and_a_pixel(name) -> None:
    """Pillow's JPEG decoder differs from stb_image by up to 3 levels per pixel; the detections
    still agree with Darknet's within 1 percentage point and 1 pixel."""
    ref = _reference(name)
    path = _official() / "images" / f"{name}.jpg"
    found = detect(_yolov3_tiny(), path, names=_official() / "coco.names")
    _assert_same_detections(found, ref, pp=1.0, px=1.0)


def _nonzero_entries(raw: RawDetections) -> list[tuple[int, list[float], float, dict]]:
    out = []
    for i in range(len(raw)):
        probs = raw.probs[i]
        nz = {str(j): probs[j].item() for j in torch.nonzero(probs).flatten().tolist()}
        if nz:
            out.append((i, raw.boxes[i].tolist(), raw.objectness[i].item(), nz))
    return out


def _assert_entries(ours, theirs) -> None:
    assert [e[0] for e in ours] == [t["i"] for t in theirs]
    for (i, box, obj, probs), t in zip(ours, theirs):
        d = t["det"]
        assert box == pytest.approx([d["x"], d["y"], d["w"], d["h"]], rel=1e-4, abs=1e-6)
        assert obj == pytest.approx(d["objectness"], rel=1e-4)
        assert probs.keys() == d["probs"].keys()
        for k, v in probs.items():
            assert v == pytest.approx(d["probs"][k], rel=1e-4)


@needs_shared
@pytest.mark.parametrize("name", IMAGES)
def test_boxes_before_and_after_nms_are_darknets(name) -> None:
    ref = _reference(name)
    model = _yolov3_tiny()
    x = network_input(image_from_array(_stb_pixels(name)), 416, 416)[None]
    with torch.no_grad():
        outs = model(x)
    s = ref["settings"]
    raw = decode(model, outs, (ref["image_w"], ref["image_h"]), thresh=s["thresh"],
                 hier_thresh=s["hier_thresh"], letterbox=bool(s["letter_box"]))[0]
    assert len(raw) == ref["n_boxes_above_objectness_thresh"]
    _assert_entries(_nonzero_entries(raw), ref["boxes_before_nms"])
    kept = nms(raw, s["nms"])
    _assert_entries(_nonzero_entries(kept), ref["boxes_after_nms"])


@needs_shared
def test_batch_equals_single_images() -> None:
    model = _yolov3_tiny()
    names = ["dog", "person"]
    ims = [image_from_array(_stb_pixels(n)) for n in names]
    x = torch.stack([network_input(im, 416, 416) for im in ims])
    sizes = [(im.shape[2], im.shape[1]) for im in ims]
    batch = detect_batch(model, x, sizes, names=_official() / "coco.names")
    for n, found in zip(names, batch):
        assert [str(d) for d in found] == _reference(n)["darknet_printed"]


# --- get_network_boxes + do_nms_sort on every head type (oracle micro nets) --------------------

def _box_cases() -> list[tuple[OracleCase, str]]:
    return [(c, f.name) for c in micro_cases()
            for f in sorted(c.folder.glob("boxes_letterbox*.json"))]


def _as_rows(raw: RawDetections) -> list[dict]:
    return [{"x": b[0], "y": b[1], "w": b[2], "h": b[3], "objectness": o, "probs": p, "uc": u}
            for b, o, p, u in zip(raw.boxes.tolist(), raw.objectness.tolist(), raw.probs.tolist(),
                                  raw.uncertainty.tolist())]


def _assert_rows(ours: list[dict], theirs: list[dict], classes: int) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        for k in ("x", "y", "w", "h", "objectness"):
            assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(b[k])), (k, a, b)
        # Darknet's harness lists a [detection] entry's `classes` probs, which it leaves at 0
        assert len(b["probs"]) in (0, classes)
        for p, q in zip(a["probs"], b["probs"]):
            assert (p == 0) == (q == 0) and abs(p - q) <= 1e-4 * max(1.0, abs(q)), (a, b)
        if "uc" in b:
            assert a["uc"] == pytest.approx(b["uc"], abs=1e-4)


BOX_CASES = _box_cases() if SHARED is not None else []


def test_micro_cover_every_head_type() -> None:
    if SHARED is None:
        pytest.skip("../shared is not present")
    names = {c.name for c, _ in BOX_CASES}
    for wanted in ("yolo_basic", "yolo_new_coords", "yolo_new_coords_scale1", "yolo_scale_x_y_2",
                   "yolo_two_heads", "gaussian_yolo", "gaussian_yolo_scale", "region_softmax",
                   "region_nonsquare", "region_coords5", "detection_softmax0", "net_nonsquare"):
        assert wanted in names


@needs_shared
@pytest.mark.parametrize("case,fname", BOX_CASES, ids=[f"{c.name}-{f[6:-5]}" for c, f in BOX_CASES])
def test_micro_boxes_before_and_after_nms_are_darknets(case, fname, tmp_path) -> None:
    ref = json.loads((case.folder / fname).read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        net = darkcfg.parse(case.cfg_path, width=case.meta["input_w"], height=case.meta["input_h"])
    model = darkcfg.build(net)
    model.load_darknet_weights(case.write_weights(tmp_path / "w.weights"))
    s = net.net.input_shape
    with torch.no_grad():
        outs = model(torch.from_numpy(case.input()).reshape(1, s.c, s.h, s.w))
    raw = decode(model, outs, (ref["im_w"], ref["im_h"]), thresh=ref["thresh"],
                 hier_thresh=ref["hier_thresh"], letterbox=bool(ref["letter_box"]))[0]
    assert raw.classes == ref["classes"]
    _assert_rows(_as_rows(raw), ref["before_nms"], ref["classes"])
    settings = nms_settings(net)
    assert settings.kind == "default"
    kept = nms(raw, ref["nms"], kind=settings.kind, beta=settings.beta, classes=settings.classes)
    _assert_rows(_as_rows(kept), ref["after_nms"], ref["classes"])


# --- NMS against a transcription of box.c ------------------------------------------------------

def _box_iou_literal(a, b) -> F32:
    def overlap(x1, w1, x2, w2):
        l1, l2 = F32(x1 - w1 / F32(2)), F32(x2 - w2 / F32(2))
        r1, r2 = F32(x1 + w1 / F32(2)), F32(x2 + w2 / F32(2))
        return F32(min(r1, r2) - max(l1, l2))
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = F32(0) if (w < 0 or h < 0) else F32(w * h)
    union = F32(F32(F32(a[2] * a[3]) + F32(b[2] * b[3])) - inter)
    return F32(0) if inter == 0 or union == 0 else F32(inter / union)


def _box_diou_literal(a, b, beta: float) -> F32:
    iou = _box_iou_literal(a, b)
    top = min(F32(a[1] - a[3] / F32(2)), F32(b[1] - b[3] / F32(2)))
    bot = max(F32(a[1] + a[3] / F32(2)), F32(b[1] + b[3] / F32(2)))
    left = min(F32(a[0] - a[2] / F32(2)), F32(b[0] - b[2] / F32(2)))
    right = max(F32(a[0] + a[2] / F32(2)), F32(b[0] + b[2] / F32(2)))
    w, h = F32(right - left), F32(bot - top)
    c = F32(F32(w * w) + F32(h * h))
    if c == 0:
        return iou
    dx, dy = F32(a[0] - b[0]), F32(a[1] - b[1])
    d = F32(F32(dx * dx) + F32(dy * dy))
    return F32(iou - F32(math.pow(float(F32(d / c)), beta)))


def _nms_literal(boxes, objectness, probs, thresh, kind, beta):
    """do_nms_sort / diounms_sort on lists, with a stable sort standing in for glibc's qsort."""
    dets = [{"box": [F32(v) for v in b], "obj": o, "prob": [F32(p) for p in pr], "id": i}
            for i, (b, o, pr) in enumerate(zip(boxes, objectness, probs))]
    k = len(dets) - 1
    i = 0
    while i <= k:
        if dets[i]["obj"] == 0:
            dets[i], dets[k] = dets[k], dets[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    t = F32(thresh)
    for c in range(len(probs[0])):
        dets[:total] = sorted(dets[:total], key=lambda d: -d["prob"][c])
        for i in range(total):
            if dets[i]["prob"][c] == 0:
                continue
            for j in range(i + 1, total):
                a, b = dets[i]["box"], dets[j]["box"]
                if kind in ("default", "cornersnms"):
                    hit = _box_iou_literal(a, b) > t
                elif kind == "greedynms":
                    hit = _box_diou_literal(a, b, 0.6) > t
                else:
                    hit = _box_diou_literal(a, b, float(F32(beta))) > t
                if hit:
                    dets[j]["prob"][c] = F32(0)
    return [d["id"] for d in dets], [[float(p) for p in d["prob"]] for d in dets]


def _random_dets(seed: int, n: int, classes: int) -> RawDetections:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2), dtype=F32)
    wh = (rng.random((n, 2), dtype=F32) * F32(0.5) + F32(0.05)).astype(F32)
    # few distinct values: ties in the sort and duplicate boxes
    probs = (rng.integers(0, 5, (n, classes)) / F32(5)).astype(F32)
    probs[rng.random((n, classes)) < 0.4] = 0
    obj = rng.integers(0, 3, n).astype(F32) / F32(2)
    boxes = np.concatenate([xy, wh], 1).astype(F32)
    boxes[n // 2] = boxes[0]
    return RawDetections(torch.from_numpy(boxes), torch.from_numpy(obj), torch.from_numpy(probs),
                         torch.zeros(n, dtype=torch.long), torch.zeros(n, 4),
                         torch.zeros(n, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["default", "greedynms", "diounms", "cornersnms"])
@pytest.mark.parametrize("seed", range(6))
def test_nms_is_darknets_loop(kind, seed) -> None:
    dets = _random_dets(seed, 40, 3)
    beta = 0.8
    kept = nms(dets, 0.3, kind=kind, beta=beta)
    order, probs = _nms_literal(dets.boxes.numpy(), dets.objectness.tolist(),
                                dets.probs.numpy(), 0.3, kind, beta)
    want = dets.take(order)
    assert torch.equal(kept.boxes, want.boxes) and torch.equal(kept.objectness, want.objectness)
    assert kept.probs.tolist() == probs


def test_nms_kinds_differ_where_darknet_says() -> None:
    # two boxes of one class, same size, centres 0.25 apart: IoU 0.6, DIoU far lower
    boxes = torch.tensor([[0.4, 0.5, 1.0, 0.5], [0.65, 0.5, 1.0, 0.5]])
    dets = RawDetections(boxes, torch.ones(2), torch.tensor([[0.9], [0.8]]),
                         torch.zeros(2, dtype=torch.long), torch.zeros(2, 4),
                         torch.zeros(2, dtype=torch.bool))
    assert nms(dets, 0.45).probs.tolist() == [[pytest.approx(0.9)], [0.0]]
    assert nms(dets, 0.45, kind="cornersnms").probs[1, 0] == 0
    # DIoU: iou - (d²/c²)**beta; d² = 0.0625, c² = 1.25² + 0.5² = 1.8125 -> ratio 0.0345
    assert nms(dets, 0.45, kind="diounms", beta=0.6).probs[1, 0] == 0  # 0.6 - 0.133 > 0.45
    assert nms(dets, 0.45, kind="diounms", beta=0.3).probs[1, 0] > 0  # 0.6 - 0.364 < 0.45
    assert nms(dets, 0.45, kind="greedynms", beta=0.3).probs[1, 0] == 0  # exponent fixed at 0.6
    assert nms(dets, 0).probs[1, 0] > 0  # nms 0: Darknet skips it
    with pytest.raises(ValueError, match="nms kind"):
        nms(dets, 0.45, kind="soft")


# --- decoding details --------------------------------------------------------------------------

YOLO_CFG = """[net]
width={w}
height={h}
channels=3
letter_box={lb}

[convolutional]
filters=14
size=1
stride={s}
activation=linear

[yolo]
mask=1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
scale_x_y={sxy}
new_coords={nc}
nms_kind={kind}
beta_nms=0.7
"""


def _yolo_net(w=48, h=32, s=8, lb=0, sxy=1.0, nc=0, kind="diounms") -> darkcfg.Network:
    return darkcfg.parse(YOLO_CFG.format(w=w, h=h, s=s, lb=lb, sxy=sxy, nc=nc, kind=kind))


@pytest.mark.parametrize("new_coords", [0, 1])
def test_yolo_box_uses_actual_grid_and_input_size(new_coords) -> None:
    net = _yolo_net(nc=new_coords)
    rng = np.random.default_rng(new_coords)
    # the model ran on a 64x40 input (not the cfg's 48x32): an 8x5 grid
    y = torch.from_numpy(rng.random((1, 14, 5, 8), dtype=F32))
    raw = decode(net, [y], (640, 400), thresh=0.0, input_size=(64, 40))[0]
    assert len(raw) == 5 * 8 * 2
    v = y[0].reshape(2, 7, 5, 8).double()
    k = 0
    for row in range(5):
        for col in range(8):
            for a, (aw, ah) in enumerate([(23, 27), (37, 58)]):
                tx, ty, tw, th = v[a, :4, row, col].tolist()
                want_w = tw * tw * 4 * aw / 64 if new_coords else math.exp(tw) * aw / 64
                want_h = th * th * 4 * ah / 40 if new_coords else math.exp(th) * ah / 40
                want = [(col + tx) / 8, (row + ty) / 5, want_w, want_h]
                assert raw.boxes[k].tolist() == pytest.approx(want, rel=1e-6)
                assert raw.objectness[k].item() == pytest.approx(v[a, 4, row, col].item())
                k += 1


def test_letterbox_correction_maps_boxes_back_to_the_image() -> None:
    net = _yolo_net(w=32, h=32, lb=1)
    # a box filling the letterboxed image region maps to the whole image
    x = torch.zeros(1, 14, 4, 4)
    raw = decode(net, [x], (96, 64), thresh=-1.0)[0]  # 96x64 -> 32x21 placed at rows 5..26
    new_h = 64 * 32 // 96
    # entry 1: cell (0, 0), anchor 37x58; the network sees a box centred at (0, 0)
    x0, y0, w0, h0 = raw.boxes[1].tolist()
    assert x0 == 0.0 and w0 == pytest.approx(37 / 32)
    assert y0 == pytest.approx((0 - (32 - new_h) / 2 / 32) / (new_h / 32), rel=1e-6)
    assert h0 == pytest.approx(58 / 32 * 32 / new_h, rel=1e-6)
    plain = decode(net, [x], (96, 64), thresh=-1.0, letterbox=False)[0]
    assert plain.boxes[1].tolist() == pytest.approx([0, 0, 37 / 32, 58 / 32])


def _tree_literal(cls: np.ndarray, parent: list[int], scale: float, thresh: float,
                  hier: float) -> list[float]:
    pred = [F32(v) for v in cls]
    for j in range(len(pred)):
        if parent[j] >= 0:
            pred[j] = F32(pred[j] * pred[parent[j]])
    found = False
    for j in range(len(pred) - 1, -1, -1):
        if not found and pred[j] > hier:
            found = True
        else:
            pred[j] = F32(0)
    return [float(p) if scale > thresh else 0.0 for p in pred]


def test_region_tree_probabilities_are_darknets_loop() -> None:
    # three levels deep, siblings split across runs of lines
    tree = parse_tree("a -1\nb -1\nc 0\nd 0\ne 3\nf 2\ng 5\nh 1\n")
    rng = np.random.default_rng(11)
    cls = torch.from_numpy(rng.random((3, 6, 8), dtype=F32) * F32(0.5) + F32(0.5))
    scale = torch.from_numpy(rng.random((3, 6), dtype=F32))
    got = _tree_probs(cls, tree, scale, 0.25, 0.5)
    for b in range(3):
        for k in range(6):
            want = _tree_literal(cls[b, k].numpy(), list(tree.parent), scale[b, k].item(),
                                 0.25, 0.5)
            assert got[b, k].tolist() == want


def test_nms_settings_and_options_come_from_the_cfg() -> None:
    net = _yolo_net()
    assert net[1].options.nms_kind == "diounms" and net[1].options.beta_nms == pytest.approx(0.7)
    s = nms_settings(net)
    assert (s.kind, s.classes, s.layer) == ("diounms", 2, 1)
    assert s.beta == pytest.approx(0.7)
    with pytest.warns(darkcfg.CfgWarning, match="nms_kind=cornersnms"):
        assert _yolo_net(kind="cornersnms")[1].options.nms_kind == "default"


def test_select_orders_like_darknets_printout() -> None:
    boxes = torch.tensor([[0.6, 0.5, 0.2, 0.2], [0.3, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    probs = torch.tensor([[0.3, 0.7, 0.0], [0.5, 0.0, 0.6], [0.2, 0.0, 0.0]])
    dets = RawDetections(boxes, torch.ones(3), probs, torch.zeros(3, dtype=torch.long),
                         torch.zeros(3, 4), torch.zeros(3, dtype=torch.bool))
    found = select(dets, (200, 100), names=["a", "b", "dont_show c"])
    # object 1 (left 0.2) first: 'dont_show c' is skipped; object 0: best 'b' then 'a'
    assert [(d.index, d.label, d.prob) for d in found] == [
        (1, "a", pytest.approx(0.5)), (0, "b", pytest.approx(0.7)), (0, "a", pytest.approx(0.3))]
    d = found[1]
    assert d.pixels == (100, 40, 40, 20) and d.xyxy == pytest.approx((100, 40, 140, 60))
    assert str(d) == "b: 70%\t(left_x:  100   top_y:   40   width:   40   height:   20)"
    assert select(dets, (200, 100))[0].label == "2"  # no names: the class number


def test_detection_heads_boxes_become_relative_pixels() -> None:
    dets = RawDetections(torch.tensor([[12.0, 8.0, 6.0, 4.0]]), torch.ones(1),
                         torch.tensor([[0.9]]), torch.zeros(1, dtype=torch.long),
                         torch.zeros(1, 4), torch.ones(1, dtype=torch.bool))
    (d,) = select(dets, (24, 16))
    assert d.bbox == pytest.approx((0.5, 0.5, 0.25, 0.25))
    assert (d.left, d.top, d.width, d.height) == pytest.approx((9, 6, 6, 4))


def test_decode_rejects_outputs_without_heads() -> None:
    net = _yolo_net()
    model = darkcfg.build(net, out_indices=[0])
    with pytest.raises(ValueError, match="detection head"):
        decode(model, model(torch.zeros(1, 3, 32, 48)))


# --- drawing and the command line --------------------------------------------------------------

def test_class_colors_are_darknets() -> None:
    # get_color over 80 classes: offset = id * 123457 % 80, a ramp through 6 colours
    assert class_color(0, 80) == (1.0, 0.0, 1.0)  # person: offset 0, magenta
    assert class_color(16, 80) == (1.0, 1.0, 0.0)  # dog: offset 32, ratio 2.0, yellow
    assert class_color(1, 80) == (1.0, 0.0625, 0.0)  # bicycle: offset 17, ratio 1.0625, red
    assert class_color(2, 80) == (0.875, 1.0, 0.0)  # car: offset 34, ratio 2.125


def test_draw_detections_draws_box_and_label() -> None:
    im = Image.new("RGB", (200, 100), (0, 0, 0))
    d = Detection(1, "b", 0.7, 60, 40, 40, 20, 1.0, (0.4, 0.5, 0.2, 0.2), 0, (200, 100))
    out = np.asarray(draw_detections(im, [d], classes=3))
    color = tuple(int(255 * v) for v in class_color(1, 3))
    assert tuple(out[50, 60]) == color  # the box's left edge (width 1 at this height)
    assert tuple(out[50, 100]) == color
    assert tuple(out[50, 80]) == (0, 0, 0)  # inside the box
    assert out[25:39, 60:80].any()  # the label tab above the box
    assert np.asarray(draw_detections(im, [])).sum() == 0


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@needs_shared
def test_cli_detect_prints_darknets_lines_and_writes_the_picture(capsys, tmp_path) -> None:
    root = _official()
    np_path = tmp_path / "dog.png"  # lossless: the pixels Darknet decoded
    Image.fromarray(_stb_pixels("dog")).save(np_path)
    code, out, err = _cli(capsys, "detect", str(root / "yolov3-tiny.cfg"),
                          str(root / "yolov3-tiny.weights"), str(np_path), "--names",
                          str(root / "coco.names"), "--out", str(tmp_path / "out.jpg"))
    assert code == 0, err
    assert out.splitlines() == _reference("dog")["darknet_printed"]
    with Image.open(tmp_path / "out.jpg") as drawn:
        assert drawn.size == (768, 576)
    code, out, _ = _cli(capsys, "detect", str(root / "yolov3-tiny.cfg"),
                        str(root / "yolov3-tiny.weights"), str(np_path), "--json",
                        "--thresh", "0.5")
    rows = json.loads(out)[0]["objects"]  # Darknet's -out layout (tests/test_detect_cli.py)
    assert [r["name"] for r in rows] == [None, None, None]  # no --names: dog, truck, car by id
    assert [r["class_id"] for r in rows] == [16, 7, 2]  # Darknet's array order, not left to right
    assert rows[0]["confidence"] == pytest.approx(0.80656, abs=1e-4)


def test_cli_detect_errors_are_one_line(capsys, tmp_path) -> None:
    cfg = tmp_path / "y.cfg"
    cfg.write_text(YOLO_CFG.format(w=48, h=32, s=8, lb=0, sxy=1.0, nc=0, kind="default"))
    model = darkcfg.build(cfg)
    model.save_darknet_weights(tmp_path / "y.weights")
    code, out, err = _cli(capsys, "detect", str(cfg), str(tmp_path / "y.weights"),
                          str(tmp_path / "missing.jpg"))
    assert code == 1 and out == ""
    assert err.startswith("darkcfg: error:") and "missing.jpg" in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    code, _, err = _cli(capsys, "detect", str(cfg), str(tmp_path / "y.weights"),
                        str(tmp_path / "bad.jpg"))
    assert code == 1 and "bad.jpg" in err
