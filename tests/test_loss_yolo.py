"""[yolo] loss: Darknet's l.delta and l.cost, checked against the training oracle (Darknet's own
numbers, every case with a [yolo] head) and against a plain loop port of process_batch for what
the oracle's first iteration does not reach (truth_thresh positives, several truths in one cell,
show_details=0), plus the cfg and target errors and invariances of the truth list."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import darkcfg
from darkcfg import CfgError
from darkcfg.train.losses import LossContext, loss_factory
from darkcfg.train.losses.boxes import box_giou, box_iou, box_iou_kind, dx_box_iou
from darkcfg.train.sections import section_options
from oracle import SHARED, SKIP_REASON

TOL = 1e-5  # of max|delta|


def oracle_cases() -> list[str]:
    if SHARED is None:
        return []
    root = SHARED / "oracle" / "train"
    return sorted(p.parent.name for p in root.glob("*/case.cfg")
                  if re.search(r"^\[yolo\]", p.read_text(), re.M))


def make_loss(net: darkcfg.Network, k: int):
    _, opts = section_options(net)
    spec = net.layers[k]
    return loss_factory(spec.type)(spec, opts[k], net)


def ctx(size: int = 64, seen: int = 4) -> LossContext:
    return LossContext(size, size, seen, 0, 1000, "cpu")


# -- the oracle ---------------------------------------------------------------------------------

def _printed(meta: dict, k: int) -> dict[str, float]:
    """Darknet's line for head k in the last subdivision of iteration 0."""
    lines = [ln for ln in meta["darknet_printed"] if ln.startswith("v3") and f"Region {k} " in ln]
    line = lines[meta["subdivisions"] - 1]
    pairs = re.findall(r"(class_loss|iou_loss|total_loss) = ([-\d.]+)", line)
    got: dict[str, float] = {key: float(v) for key, v in pairs}
    got["count"] = int(re.search(r"count: (\d+)", line).group(1))
    got["avg_iou"] = float(re.search(r"IOU: ([-\d.]+)", line).group(1))
    return got


@pytest.mark.skipif(SHARED is None, reason=SKIP_REASON)
@pytest.mark.parametrize("case", oracle_cases() or ["yolo_base"])
def test_oracle_delta_cost_and_printed_stats(case: str) -> None:
    folder = SHARED / "oracle" / "train" / case
    meta = json.loads((folder / "meta.json").read_text())
    model = darkcfg.build(folder / "case.cfg")
    net = model.network
    mb, batch = meta["mini_batch"], meta["batch"]
    first = np.load(folder / "first_iter.npz")
    truths = np.load(folder / "inputs.npz")["truths"][0][batch - mb:batch]  # last subdivision
    targets = [torch.from_numpy(t) for t in truths]  # padding rows (class -1) included
    heads = [s.index for s in net.layers if s.type == "yolo"]
    costs = []
    for k in heads:
        if f"delta_{k:03d}" not in first.files or f"output_{k - 1:03d}" not in first.files:
            pytest.skip(f"{case}: layer {k}'s first-iteration tensors are not stored (over the "
                        f"oracle's size limit for this net)")
        s = net.layers[k].in_shape
        x = torch.from_numpy(first[f"output_{k - 1:03d}"]).reshape(mb, s.c, s.h, s.w)
        out = model.layers[k](x)
        ref_out = first[f"output_{k:03d}"]
        assert np.abs(out.reshape(mb, -1).numpy() - ref_out).max() <= TOL * np.abs(ref_out).max()
        loss = make_loss(net, k)
        r = loss.compute(out, targets, ctx(meta["input_w"], batch))
        ref = first[f"delta_{k:03d}"]
        assert r.delta.shape == out.shape
        err = np.abs(r.delta.reshape(mb, -1).numpy() - ref).max() / np.abs(ref).max()
        assert err <= TOL, f"{case} layer {k}: delta error {err:.2e} of max|delta|"
        # the loss's call form returns the same delta and cost
        called = loss(out, x, targets, ctx(meta["input_w"], batch))
        assert torch.equal(called.delta, r.delta) and float(called.cost) == float(r.cost)

        printed = _printed(meta, k)
        assert r.count == printed["count"]
        assert r.iou_sum.item() / max(r.count, 1) == pytest.approx(printed["avg_iou"], abs=2e-6)
        assert r.class_loss.item() / mb == pytest.approx(printed["class_loss"], rel=1e-6)
        total = float((ref.astype(np.float64) ** 2).sum())
        assert total / mb == pytest.approx(printed["total_loss"], rel=1e-6)
        o = loss.o
        if o.iou_loss == "mse":
            assert r.cost.item() == pytest.approx(total, rel=1e-6)
        elif o.iou_loss == "giou":  # its GIoU mean is not printed: only its range can be checked
            assert 0 <= r.cost.item() - r.class_loss.item() <= 2 * o.iou_normalizer
        else:  # iou, diou, ciou: the cost uses plain IoU, whose mean Darknet prints
            expect = o.iou_normalizer * (1 - printed["avg_iou"]) + printed["class_loss"] * mb
            assert r.cost.item() == pytest.approx(expect, abs=1e-5 * max(1.0, expect))
        costs.append(r.cost.item())
    if meta["subdivisions"] == 1:  # the reported loss is then this subdivision's alone
        reported = sum(costs) / len(costs) / batch
        assert reported == pytest.approx(meta["losses"][0], rel=1e-5)


# -- a plain loop port of process_batch (yolo_layer.c:388-656) ----------------------------------

def _ov(x1: float, w1: float, x2: float, w2: float) -> float:
    return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)


def _iou(a, b) -> float:
    w, h = _ov(a[0], a[2], b[0], b[2]), _ov(a[1], a[3], b[1], b[3])
    inter = 0.0 if w < 0 or h < 0 else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return 0.0 if inter == 0 or union == 0 else inter / union


def _t(v) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def reference(out: np.ndarray, truths: list[np.ndarray], o, net_w: int, net_h: int
              ) -> tuple[np.ndarray, float, int]:
    """Darknet's [yolo] training forward written as its loops, cell by cell and truth by truth."""
    n_img, _, lh, lw = out.shape
    na, ne = len(o.mask), o.classes + 5
    x = out.reshape(n_img, na, ne, lh, lw).astype(np.float64)
    d = np.zeros_like(x)
    bias = o.anchors
    mult = o.classes_multipliers or [1.0] * o.classes
    eps = np.float32(o.label_smooth_eps)  # y - p in float, as Darknet: a zero must stay zero
    y1 = np.float32(np.float32(1 - eps) + .5 * np.float64(eps)) if eps else np.float32(1)
    y0 = np.float32(.5 * np.float64(eps))
    f32 = np.float32
    stats = {"count": 0, "iou": 0.0, "giou_loss": 0.0, "iou_loss": 0.0}

    def get_box(b, a, n, j, i):
        tx, ty, tw, th = x[b, a, :4, j, i]
        if o.new_coords:
            return ((i + tx) / lw, (j + ty) / lh, tw * tw * 4 * bias[n][0] / net_w,
                    th * th * 4 * bias[n][1] / net_h)
        return (i + tx) / lw, (j + ty) / lh, math.exp(tw) * bias[n][0] / net_w, \
            math.exp(th) * bias[n][1] / net_h

    def class_delta(b, a, j, i, c):
        if d[b, a, 5 + c, j, i]:
            m = mult[c] if o.classes_multipliers else 1
            d[b, a, 5 + c, j, i] = (y1 - f32(x[b, a, 5 + c, j, i])) * m
            return
        if o.focal_loss:
            pt = x[b, a, 5 + c, j, i] + 1e-15
            grad = -(1 - pt) * (2 * pt * math.log(pt) + pt - 1)
            for k in range(o.classes):
                d[b, a, 5 + k, j, i] = ((k == c) - x[b, a, 5 + k, j, i]) * .5 * grad
            return
        for k in range(o.classes):
            d[b, a, 5 + k, j, i] = (y1 if k == c else y0) - f32(x[b, a, 5 + k, j, i])
            if o.classes_multipliers and k == c:
                d[b, a, 5 + k, j, i] *= mult[c] * o.cls_normalizer

    def box_delta(truth, b, a, n, j, i, norm):
        pred = get_box(b, a, n, j, i)
        iou = _iou(pred, truth)
        giou = float(box_giou(_t(pred), _t(truth)))
        pred = (pred[0], pred[1], pred[2] or 1.0, pred[3] or 1.0)
        scale = 2 - truth[2] * truth[3]
        if o.iou_loss == "mse":
            if o.new_coords:
                tw, th = (math.sqrt(truth[2] * net_w / (4 * bias[n][0])),
                          math.sqrt(truth[3] * net_h / (4 * bias[n][1])))
            else:
                tw, th = (math.log(truth[2] * net_w / bias[n][0]),
                          math.log(truth[3] * net_h / bias[n][1]))
            target = (truth[0] * lw - i, truth[1] * lh - j, tw, th)
            for k in range(4):
                d[b, a, k, j, i] += scale * (target[k] - x[b, a, k, j, i]) * norm
        else:
            g = [float(v) for v in dx_box_iou(_t(pred), _t(truth), o.iou_loss)]
            if not o.new_coords:
                g[2] *= math.exp(x[b, a, 2, j, i])
                g[3] *= math.exp(x[b, a, 3, j, i])
            for k in range(4):
                v = g[k] * norm
                v = 0.0 if not math.isfinite(v) else v
                d[b, a, k, j, i] += max(-o.max_delta, min(o.max_delta, v))
        return iou, giou

    def assign(b, row, a, n, j, i):
        c = int(row[0])
        iou, giou = box_delta(tuple(row[1:]), b, a, n, j, i, o.iou_normalizer * mult[c])
        stats["count"] += 1
        stats["iou"] += iou
        stats["iou_loss"] += 1 - iou
        stats["giou_loss"] += 1 - giou
        v = mult[c] * o.obj_normalizer * (1 - x[b, a, 4, j, i])
        if not o.objectness_smooth or d[b, a, 4, j, i] == 0:
            d[b, a, 4, j, i] = v
        class_delta(b, a, j, i, c)

    for b in range(n_img):
        rows = truths[b]
        for j in range(lh):
            for i in range(lw):
                for a in range(na):
                    pred = get_box(b, a, o.mask[a], j, i)
                    best_match, best, best_t = 0.0, 0.0, 0
                    match = any(x[b, a, 5 + k, j, i] > .25 for k in range(o.classes))
                    for t, row in enumerate(rows):
                        iou = _iou(pred, row[1:])
                        if iou > best_match and match:
                            best_match = iou
                        if iou > best:
                            best, best_t = iou, t
                    obj = x[b, a, 4, j, i]
                    d[b, a, 4, j, i] = o.obj_normalizer * (0 - obj)
                    if best_match > o.ignore_thresh:
                        if o.objectness_smooth:
                            smooth = o.obj_normalizer * (best_match - obj)
                            d[b, a, 4, j, i] = max(d[b, a, 4, j, i], smooth)
                        else:
                            d[b, a, 4, j, i] = 0
                    if best > o.truth_thresh:
                        target = best * best if o.objectness_smooth else 1
                        d[b, a, 4, j, i] = o.obj_normalizer * (target - obj)
                        c = int(rows[best_t][0])
                        class_delta(b, a, j, i, c)
                        if o.objectness_smooth:
                            d[b, a, 5 + c, j, i] = mult[c] * (best * best - x[b, a, 5 + c, j, i])
                        box_delta(tuple(rows[best_t][1:]), b, a, o.mask[a], j, i,
                                  o.iou_normalizer * mult[c])
        for row in rows:
            i, j = int(row[1] * lw), int(row[2] * lh)
            shape = (0, 0, row[3], row[4])
            ious = [_iou((0, 0, bias[n][0] / net_w, bias[n][1] / net_h), shape)
                    for n in range(o.total)]
            best_n = max(range(o.total), key=lambda n: (ious[n], -n))
            pos = {m: k for k, m in reversed(list(enumerate(o.mask)))}
            if best_n in pos:
                assign(b, row, pos[best_n], best_n, j, i)
            for n in range(o.total):
                if n in pos and n != best_n and o.iou_thresh < 1:
                    anchor = _t((0, 0, bias[n][0] / net_w, bias[n][1] / net_h))
                    if float(box_iou_kind(anchor, _t(shape), o.iou_thresh_kind)) > o.iou_thresh:
                        assign(b, row, pos[n], n, j, i)
        if o.iou_thresh < 1:
            for j in range(lh):
                for i in range(lw):
                    for a in range(na):
                        if d[b, a, 4, j, i] != 0:
                            k = sum(d[b, a, 5 + c, j, i] > 0 for c in range(o.classes))
                            if k:
                                d[b, a, :4, j, i] /= k
    total = float((d ** 2).sum())
    if o.show_details == 0 or o.iou_loss == "mse":
        cost = total
    else:
        no_box = d.copy()
        no_box[:, :, :4] = 0
        lost = stats["giou_loss"] if o.iou_loss == "giou" else stats["iou_loss"]
        cost = o.iou_normalizer * lost / max(stats["count"], 1) \
            + o.obj_normalizer * float((no_box ** 2).sum())
    return d.reshape(out.shape), cost, stats["count"]


ANCHORS = "6,8, 12,10, 10,20, 24,18, 30,40, 60,50"


def yolo_net(extra: str = "", classes: int = 3, mask: str = "0,1,2", size: int = 80,
             new_coords: int = 0) -> darkcfg.Network:
    filters = len(mask.split(",")) * (classes + 5)
    act = "logistic" if new_coords else "linear"
    return darkcfg.parse(f"""[net]
batch=2
width={size}
height={size}
channels=3

[convolutional]
filters={filters}
size=1
stride=16
activation={act}

[yolo]
mask={mask}
anchors={ANCHORS}
classes={classes}
num=6
new_coords={new_coords}
{extra}
""")


def scene(net: darkcfg.Network, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The head's output for 2 images with truths, some predicted almost exactly (IoU near 1,
    so truth_thresh positives exist), and pairs of truths sharing one cell and anchor."""
    rng = np.random.default_rng(seed)
    spec = net.layers[1]
    o = spec.options
    s = spec.in_shape
    a, e = len(o.mask), o.classes + 5
    raw = rng.normal(0, 1.5, (2, a, e, s.h, s.w)).astype(np.float32)
    if o.new_coords:  # the conv before a new_coords head is logistic
        raw = 1 / (1 + np.exp(-raw))
    targets = []
    for b in range(2):
        rows = []
        for _ in range(int(rng.integers(2, 6))):
            rows.append([rng.integers(0, o.classes), *rng.uniform(.05, .95, 2),
                         *rng.uniform(.05, .7, 2)])
        dup = list(rows[0])
        dup[0] = (dup[0] + b) % o.classes  # same cell and shape: the same class, then another
        dup[1] += 1e-3
        dup[3] *= .93  # no IoU ties with the first: float32 and float64 would break them apart
        rows.append(dup)
        rows.append(list(rows[-1]))  # an exact repeat
        for row in rows[:3]:  # make the predictions of these truths' cells almost exact
            cx, cy = row[1] * s.w, row[2] * s.h
            i, j = int(cx), int(cy)
            for k in range(a):
                aw, ah = o.anchors[o.mask[k]]
                fx, fy = min(cx - i + .01, .98), max(cy - j - .01, .02)
                if o.new_coords:
                    raw[b, k, :4, j, i] = (fx, fy, math.sqrt(row[3] * 80 / (4 * aw)),
                                           math.sqrt(row[4] * 80 / (4 * ah)))
                else:
                    raw[b, k, 0, j, i] = math.log(fx / (1 - fx))
                    raw[b, k, 1, j, i] = math.log(fy / (1 - fy))
                    raw[b, k, 2, j, i] = math.log(row[3] * 80 / aw) + .02
                    raw[b, k, 3, j, i] = math.log(row[4] * 80 / ah) - .02
                raw[b, k, 5 + int(row[0]), j, i] = .95 if o.new_coords else 3.0
        targets.append(torch.tensor(rows, dtype=torch.float32))
    head = darkcfg.build(net).layers[1]
    out = head(torch.from_numpy(raw).reshape(2, a * e, s.h, s.w))
    return out, targets


OPTION_SETS = [
    "iou_loss=mse\ntruth_thresh=.6\nignore_thresh=.3",
    "iou_loss=giou\niou_normalizer=.5\ntruth_thresh=.6\nmax_delta=.05",
    "iou_loss=diou\ntruth_thresh=.7\niou_thresh=.2\niou_thresh_kind=giou",
    "iou_loss=ciou\niou_thresh=.25\ntruth_thresh=.6\nobjectness_smooth=1\nignore_thresh=.2",
    "iou_loss=iou\nfocal_loss=1\ntruth_thresh=.65\niou_thresh=.3\niou_thresh_kind=ciou",
    "label_smooth_eps=.1\ntruth_thresh=.6\nobj_normalizer=.7\niou_thresh=.2\niou_thresh_kind=diou",
    "counters_per_class=50,200,0\ncls_normalizer=1.5\nmax_delta=3\ntruth_thresh=.6\niou_thresh=.3",
    "iou_loss=ciou\nshow_details=0\ntruth_thresh=.6\nobjectness_smooth=1\niou_thresh=.2",
]


@pytest.mark.parametrize("new_coords", [0, 1])
@pytest.mark.parametrize("extra", OPTION_SETS, ids=[s.split("\n")[0] + f"-{i}"
                                                    for i, s in enumerate(OPTION_SETS)])
def test_matches_the_loop_port(extra: str, new_coords: int) -> None:
    net = yolo_net(extra, new_coords=new_coords)
    loss = make_loss(net, 1)
    for seed in range(3):
        out, targets = scene(net, seed)
        r = loss.compute(out, targets, ctx(80))
        ref, cost, count = reference(out.numpy(), [t.numpy().astype(np.float64) for t in targets],
                                     loss.o, 80, 80)
        err = np.abs(r.delta.numpy() - ref).max() / np.abs(ref).max()
        assert err <= TOL, f"seed {seed}: delta error {err:.2e}"
        assert r.count == count
        assert r.cost.item() == pytest.approx(cost, rel=1e-5)


def test_the_port_scenes_reach_every_branch() -> None:
    """The loop-port comparison is only worth something if its scenes have truth_thresh
    positives, ignored cells and cells that several truths write."""
    net = yolo_net(OPTION_SETS[0])
    loss = make_loss(net, 1)
    out, targets = scene(net, 0)
    _, _, count = reference(out.numpy(), [t.numpy().astype(np.float64) for t in targets],
                            loss.o, 80, 80)
    plain = make_loss(yolo_net("truth_thresh=1"), 1)
    with_tt = loss.compute(out, targets, ctx(80)).delta
    without = plain.compute(out, targets, ctx(80)).delta
    assert not torch.equal(with_tt, without)  # truth_thresh changed some cells
    cells = [(b, int(r[1] * 5), int(r[2] * 5)) for b, t in enumerate(targets) for r in t.tolist()]
    assert len(set(cells)) < len(cells)  # shared cells
    assert count == sum(len(t) for t in targets) - sum(  # every truth's best anchor is in mask
        1 for t in targets for r in t.tolist() if _best_anchor(loss.o, r) not in loss.o.mask)


def _best_anchor(o, row) -> int:
    ious = [_iou((0, 0, w / 80, h / 80), (0, 0, row[3], row[4])) for w, h in o.anchors[:o.total]]
    return max(range(o.total), key=lambda n: (ious[n], -n))


# -- the truth list -----------------------------------------------------------------------------

def test_no_truths_leaves_only_the_objectness_push() -> None:
    net = yolo_net("iou_loss=ciou\nobj_normalizer=.5")
    out, _ = scene(net, 1)
    r = make_loss(net, 1).compute(out, [torch.zeros(0, 5), torch.zeros(0, 5)], ctx(80))
    d = r.delta.reshape(2, 3, 8, 5, 5)
    obj = out.reshape(2, 3, 8, 5, 5)[:, :, 4]
    assert torch.equal(d[:, :, 4], np.float32(.5) * (0 - obj))
    assert not d[:, :, :4].any() and not d[:, :, 5:].any()
    assert r.count == 0
    assert r.cost.item() == pytest.approx(.5 * float((d.double() ** 2).sum()), rel=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), pad=st.integers(0, 3), cut=st.integers(0, 6),
       flip=st.booleans())
def test_truth_list_reading(seed: int, pad: int, cut: int, flip: bool) -> None:
    """Padding rows (class -1) change nothing; rows after one with x == 0, or past max=, are
    never read; the images of a mini-batch are independent (swapping them swaps the delta)."""
    net = yolo_net("iou_loss=giou\niou_thresh=.3\nmax=4")
    loss = make_loss(net, 1)
    out, targets = scene(net, seed)
    base = loss.compute(out, targets, ctx(80))
    junk = torch.tensor([[-1.0, -1, -1, -1, -1]] * pad)
    padded = [torch.cat((t[:2], junk, t[2:])) for t in targets]
    assert torch.equal(loss.compute(out, padded, ctx(80)).delta, base.delta)
    # a row with x == 0 ends the list: rows after it are ignored, however bad
    kept = [t[:min(cut, len(t))] for t in targets]
    tail = torch.tensor([[0.0, 0, .5, .1, .1], [1.0, .5, .5, .2, .2]])
    ended = [torch.cat((k, tail)) for k in kept]
    assert torch.equal(loss.compute(out, ended, ctx(80)).delta,
                       loss.compute(out, kept, ctx(80)).delta)
    # max=4: a fifth row is never read
    long = [torch.cat((t[:4], t[:1] * 0 + torch.tensor([[2.0, .3, .3, .3, .3]]))) for t in targets]
    assert torch.equal(loss.compute(out, long, ctx(80)).delta,
                       loss.compute(out, [t[:4] for t in targets], ctx(80)).delta)
    if flip:
        swapped = loss.compute(out.flip(0), targets[::-1], ctx(80))
        assert torch.equal(swapped.delta, base.delta.flip(0))
        assert swapped.cost.item() == pytest.approx(base.cost.item(), rel=1e-6)


@pytest.mark.parametrize("row, message", [
    ([3.0, .5, .5, .1, .1], "target row 1 of image 1: class 3 is not below classes=3"),
    ([1.5, .5, .5, .1, .1], "target row 1 of image 1: class 1.5 is not an integer"),
    ([-2.0, .5, .5, .1, .1], "target row 1 of image 1: class -2 is negative"),
    ([1.0, 1.5, .5, .1, .1], "target row 1 of image 1: x=1.5 is outside [0, 1]"),
    ([1.0, .5, .5, 0.0, .1], "target row 1 of image 1: w=0 is not in (0, 1]"),
    ([1.0, float("nan"), .5, .1, .1], "target row 1 of image 1: non-finite value in "
                                      "[1.0, nan, 0.5, 0.10000000149011612, 0.10000000149011612]"),
])
def test_bad_targets_name_image_and_row(row: list[float], message: str) -> None:
    net = yolo_net()
    out, _ = scene(net, 0)
    good = torch.tensor([[0.0, .5, .5, .2, .2]])
    targets = [good, torch.cat((good, torch.tensor([row])))]
    with pytest.raises(CfgError) as e:
        make_loss(net, 1).compute(out, targets, ctx(80))
    assert str(e.value) == message


def test_wrong_number_of_images() -> None:
    net = yolo_net()
    out, _ = scene(net, 0)
    with pytest.raises(CfgError, match=r"^detector targets must be a list of 2 \(n, 5\) tensors, "
                                       r"one per image of the mini-batch; got 3 images$"):
        make_loss(net, 1).compute(out, [torch.zeros(0, 5)] * 3, ctx(80))


# -- options ------------------------------------------------------------------------------------

def test_option_defaults_and_values() -> None:
    o = make_loss(yolo_net(), 1).o
    assert (o.iou_loss, o.obj_normalizer, o.cls_normalizer) == ("mse", 1, 1)
    assert o.iou_normalizer == np.float32(.75)  # as Darknet holds it
    assert (o.ignore_thresh, o.truth_thresh, o.iou_thresh, o.iou_thresh_kind) == (.5, 1, 1, "iou")
    assert (o.max_boxes, o.total, o.show_details, o.classes_multipliers) == (200, 6, 1, None)
    o = make_loss(yolo_net("counters_per_class=100,300,0\nmax_delta=4"), 1).o
    assert o.classes_multipliers == (3.0, 1.0, 4.0)  # 300/100, 300/300, 300/1 capped at max_delta


def test_unknown_iou_loss_is_plain_iou_with_a_warning() -> None:
    net = yolo_net("iou_loss=ciuo")
    with pytest.warns(darkcfg.CfgWarning, match=r"iou_loss=ciuo is not one of mse, iou, giou, "
                                                r"diou, ciou; Darknet uses iou"):
        loss = make_loss(net, 1)
    assert loss.o.iou_loss == "iou"


def test_counters_per_class_count_must_match_classes() -> None:
    with pytest.raises(CfgError) as e:
        make_loss(yolo_net("counters_per_class=1,2"), 1)
    assert e.value.msg == ("counters_per_class= has 2 values but classes=3 (Darknet stops with an "
                           "error)")
    assert e.value.lineno == 19  # the option's own line


def test_map_file_is_refused() -> None:
    with pytest.raises(CfgError) as e:
        make_loss(yolo_net("map=data/9k.map"), 1)
    assert e.value.msg == "map= (a class-map file, yolo9000 style) is not supported in training"
    assert e.value.lineno == 19  # the option's own line


def test_max_must_match_the_last_detection_layer() -> None:
    net = darkcfg.parse(f"""[net]
width=64
height=64
channels=3

[convolutional]
filters=24
size=1
stride=32
activation=linear

[yolo]
mask=0,1,2
anchors={ANCHORS}
classes=3
num=6
max=90

[route]
layers=-2

[yolo]
mask=3,4,5
anchors={ANCHORS}
classes=3
num=6
""")
    with pytest.raises(CfgError) as e:
        make_loss(net, 1)
    assert e.value.msg == ("max=90 differs from max=200 of the last detection layer ([yolo] #3), "
                           "which sizes Darknet's truth buffer: Darknet would read other images' "
                           "boxes here; darkcfg does not train that")
    assert make_loss(net, 3).o.max_boxes == 200


def test_registered_and_backward_scale() -> None:
    loss = make_loss(yolo_net("delta_normalizer=.5"), 1)
    assert loss.backward_scale == 1.0  # the CPU backward; the Trainer adds the GPU's factor
    assert loss.o.delta_normalizer == .5


# -- the IoU family -----------------------------------------------------------------------------

def test_dx_box_iou_is_the_iou_gradient_with_unhalved_sizes() -> None:
    """For overlapping boxes without touching edges, Darknet's IoU derivative equals autograd's
    for x and y, and twice autograd's for w and h (it does not halve them)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = torch.tensor([.5, .5, .3, .4], dtype=torch.float64)
        pred = (truth + torch.from_numpy(rng.uniform(-.05, .05, 4))).requires_grad_()
        box_iou(pred, truth).backward()
        g = dx_box_iou(pred.detach(), truth, "iou")
        assert torch.allclose(torch.stack((g.dx, g.dy)), pred.grad[:2], rtol=1e-9, atol=1e-12)
        assert torch.allclose(torch.stack((g.dw, g.dh)), 2 * pred.grad[2:], rtol=1e-9, atol=1e-12)


def test_iou_family_values() -> None:
    a = torch.tensor([.5, .5, .2, .2])
    b = torch.tensor([.6, .5, .2, .2])
    assert box_iou(a, b).item() == pytest.approx(.1 * .2 / (.08 - .02), rel=1e-6)
    far = torch.tensor([.9, .9, .1, .1])
    assert box_iou(a, far).item() == 0
    # GIoU subtracts the empty part of the enclosing box
    assert box_giou(a, far).item() == pytest.approx(-(.55 * .55 - .05) / (.55 * .55), rel=1e-5)
    # float32 edges: (x + w/2) - (x - w/2) can exceed w, so an IoU can pass 1 (and truth_thresh=1)
    assert box_iou(a, a).item() == pytest.approx(1, abs=1e-6)
    assert box_iou_kind(a, a, "ciou").item() == box_iou(a, a).item()
    assert box_iou_kind(a, a, "diou").item() == box_iou(a, a).item()


def test_an_exact_prediction_passes_truth_thresh_1() -> None:
    """Darknet's float32 IoU of a prediction equal to its truth is often 1 + an ulp, above the
    default truth_thresh=1: such a cell becomes a positive in the per-cell loop too."""
    net = yolo_net("truth_thresh=1")
    loss = make_loss(net, 1)
    out, targets = scene(net, 0)
    f = np.float32  # get_yolo_box in float, exp in double
    for truth in targets[0].tolist():
        # an anchor the truth loop leaves alone, so only the per-cell loop can make it positive
        a = next(k for k in range(3) if loss.o.mask[k] != _best_anchor(loss.o, truth))
        i, j = int(truth[1] * 5), int(truth[2] * 5)
        aw, ah = loss.o.anchors[loss.o.mask[a]]
        raw = [f(f(truth[1]) * f(5)) - f(i), f(f(truth[2]) * f(5)) - f(j),
               f(math.log(f(f(truth[3]) * f(80)) / f(aw))),
               f(math.log(f(f(truth[4]) * f(80)) / f(ah)))]
        pred = torch.tensor([(f(i) + raw[0]) / f(5), (f(j) + raw[1]) / f(5),
                             f(math.exp(raw[2]) * aw / 80), f(math.exp(raw[3]) * ah / 80)])
        if box_iou(pred, torch.tensor(truth[1:])).item() > 1:
            break
    else:
        pytest.skip("no truth of this scene has a float32 IoU above 1 with its exact prediction")
    planes = out.clone().reshape(2, 3, 8, 5, 5)
    planes[0, a, :4, j, i] = torch.tensor(raw)
    obj = planes[0, a, 4, j, i].item()
    d = loss.compute(planes.reshape(out.shape), targets, ctx(80)).delta.reshape(2, 3, 8, 5, 5)
    assert d[0, a, 4, j, i].item() == pytest.approx(1 - obj)
    never = make_loss(yolo_net("truth_thresh=2"), 1)
    d = never.compute(planes.reshape(out.shape), targets, ctx(80)).delta.reshape(2, 3, 8, 5, 5)
    assert d[0, a, 4, j, i].item() in (0.0, pytest.approx(-obj))
