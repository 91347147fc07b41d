"""[Gaussian_yolo]'s training loss (darkcfg.train.losses.gaussian_yolo): Darknet's l.delta/l.cost.

Checked three ways: against Darknet's own stored delta and printed statistics (the training
oracle), against a plain per-cell loop written from gaussian_yolo_layer.c on small random heads
for every option the vectorised code has a branch for, and by properties (padding, truncation).
"""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import darkcfg
from darkcfg import CfgError
from darkcfg.train.losses import LossContext, loss_factory
from darkcfg.train.losses.boxes import box_iou_kind, dx_box_iou
from darkcfg.train.losses.gaussian_yolo import GaussianYoloLoss, read_training_options
from darkcfg.train.sections import section_options
from oracle import SHARED, SKIP_REASON

f32 = np.float32


# --- helpers ----------------------------------------------------------------------------------

def head_cfg(options: str = "", *, classes: int = 3, mask: str = "0,2,3", num: int = 5,
             w: int = 5, h: int = 4) -> str:
    a = len(mask.split(","))
    return (f"[net]\nwidth={w}\nheight={h}\nchannels={a * (9 + classes)}\n\n[Gaussian_yolo]\n"
            f"mask={mask}\nanchors=6,8, 14,12, 24,26, 40,36, 60,20\nclasses={classes}\n"
            f"num={num}\n{options}\n")


def make_loss(cfg_text: str) -> tuple[GaussianYoloLoss, torch.nn.Module]:
    net = darkcfg.parse(cfg_text)
    _, opts = section_options(net)
    k = len(net) - 1
    return loss_factory("Gaussian_yolo")(net[k], opts[k], net), darkcfg.build(net).layers[k]


def ctx(net: int = 64, darknet: str = "cpu") -> LossContext:
    return LossContext(net_w=net, net_h=net, seen=2, iteration=0, max_batches=10,
                       darknet=darknet)


def random_case(seed: int, loss: GaussianYoloLoss, module, *, n: int = 2, boxes: int = 4,
                spread: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    o = loss.opts
    a = len(o.mask)
    x = torch.randn(n, a * o.entries, 4, 5, generator=g) * spread
    targets = []
    for _ in range(n):
        k = int(torch.randint(0, boxes + 1, (1,), generator=g))
        rows = torch.cat([torch.randint(0, o.classes, (k, 1), generator=g).float(),
                          torch.rand(k, 2, generator=g) * 0.9 + 0.05,
                          torch.rand(k, 2, generator=g) * 0.6 + 0.05], 1)
        if k:  # a twin of the first box, another class: same cell and anchor
            twin = rows[:1].clone()
            twin[0, 0] = (twin[0, 0] + 1) % o.classes
            twin[0, 3:] *= 1.02
            rows = torch.cat([rows, twin])
        targets.append(rows)
    return module(x), x, targets


# --- a plain loop over cells and truths, written from gaussian_yolo_layer.c -------------------

def _iou(a, b) -> float:
    """box.c box_iou on float32 scalars."""
    def overlap(x1, w1, x2, w2):
        left = max(f32(x1 - w1 / f32(2)), f32(x2 - w2 / f32(2)))
        right = min(f32(x1 + w1 / f32(2)), f32(x2 + w2 / f32(2)))
        return f32(right - left)
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = f32(0) if w < 0 or h < 0 else f32(w * h)
    union = f32(f32(f32(a[2] * a[3]) + f32(b[2] * b[3])) - inter)
    return 0.0 if inter == 0 or union == 0 else float(f32(inter / union))


def _t(v) -> torch.Tensor:
    return torch.tensor([[float(e) for e in v]], dtype=torch.float32)


def reference(loss: GaussianYoloLoss, out: torch.Tensor, targets, net: int, hits=None):
    """(delta, cost, count, sum of reported IoUs); `hits` counts the branches taken."""
    hits = {} if hits is None else hits

    def hit(name: str) -> None:
        hits[name] = hits.get(name, 0) + 1

    o, t = loss.opts, loss.training
    n, c, lh, lw = out.shape
    a_n, ent = len(o.mask), o.entries
    y = out.detach().numpy().astype(np.float32).reshape(n, a_n, ent, lh, lw)
    d = np.zeros_like(y)
    anchors = [(f32(a), f32(b)) for a, b in o.anchors]
    mult = t.class_multipliers
    eps = f32(t.label_smooth_eps)
    y_pos = f32(float(f32(1) - eps) + 0.5 * float(eps))
    y_neg = f32(0.5 * float(eps))
    clip = t.max_delta < 3e38

    def pred_box(b, a, j, i, n_anchor):
        bw = f32(math.exp(y[b, a, 4, j, i]) * anchors[n_anchor][0] / net)
        bh = f32(math.exp(y[b, a, 6, j, i]) * anchors[n_anchor][1] / net)
        bx = f32(f32(i + y[b, a, 0, j, i]) / f32(lw))
        by = f32(f32(j + y[b, a, 2, j, i]) / f32(lh))
        if o.yolo_point == "left_top":
            bx, by = f32(bx + bw / f32(2)), f32(by + bh / f32(2))
        elif o.yolo_point == "right_bottom":
            bx, by = f32(bx - bw / f32(2)), f32(by - bh / f32(2))
        return bx, by, bw, bh

    def class_delta(b, a, j, i, cid):
        if d[b, a, 9, j, i] != 0:
            hit("partial class write")
            d[b, a, 9 + cid, j, i] = f32(y_pos - y[b, a, 9 + cid, j, i])
            if mult:
                d[b, a, 9 + cid, j, i] *= f32(mult[cid])
            return
        for k in range(o.classes):
            d[b, a, 9 + k, j, i] = f32((y_pos if k == cid else y_neg) - y[b, a, 9 + k, j, i])
            if mult and k == cid:
                d[b, a, 9 + k, j, i] *= f32(f32(mult[cid]) * f32(t.cls_normalizer))

    def box_delta(truth, b, a, j, i, n_anchor, scale, normalizer):
        pb = pred_box(b, a, j, i, n_anchor)
        e = [float(v) for v in y[b, a, :8, j, i]]
        tx, ty, tw, th = truth
        if o.yolo_point == "left_top":
            tx, ty = f32(tx - tw / f32(2)), f32(ty - th / f32(2))
        elif o.yolo_point == "right_bottom":
            tx, ty = f32(tx + tw / f32(2)), f32(ty + th / f32(2))
        targets_ = [f32(f32(tx * lw) - i), f32(f32(ty * lh) - j),
                    f32(math.log(f32(f32(tw * net) / anchors[n_anchor][0]))),
                    f32(math.log(f32(f32(th * net) / anchors[n_anchor][1])))]
        out8 = [0.0] * 8
        for k in range(4):
            mu, sig = e[2 * k], e[2 * k + 1]
            z = float(f32(f32(targets_[k] - f32(mu)) / f32(sig)))
            dens = math.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * (sig + 0.3))
            tmp = 0.5 * dens / (dens + 1e-9) * scale
            out8[2 * k] = tmp * z / sig
            out8[2 * k + 1] = tmp * (z * z / sig - 1 / (sig + 0.3))
        reported = _iou(pb, truth)
        if t.iou_loss != "mse":
            pw = pb[2] if pb[2] != 0 else f32(1)
            ph = pb[3] if pb[3] != 0 else f32(1)
            g = dx_box_iou(_t((pb[0], pb[1], pw, ph)), _t(truth), t.iou_loss)
            gx, gy, gw, gh = (float(v[0]) for v in g)
            if o.yolo_point == "left_top":
                gx, gy = gx - gw / 2, gy - gh / 2
            elif o.yolo_point == "right_bottom":
                gx, gy = gx + gw / 2, gy + gh / 2
            out8[0], out8[2] = gx, gy
            out8[4], out8[6] = gw * math.exp(e[4]), gh * math.exp(e[6])
            reported = float(box_iou_kind(_t(pb), _t(truth), "giou")[0])
        for k in range(8):
            v = out8[k] * (normalizer if k % 2 == 0 else t.uc_normalizer)
            v = 0.0 if not math.isfinite(v) else v
            if clip and abs(v) > t.max_delta:
                hit("clipped")
                v = min(max(v, -t.max_delta), t.max_delta)
            d[b, a, k, j, i] += f32(v)
        return reported

    count, iou_sum = 0, 0.0
    for b in range(n):
        rows = [r for r in targets[b].tolist() if r[0] != -1][:t.max_boxes]
        truths = []
        for r in rows:
            if r[1] == 0:
                break
            truths.append((int(r[0]), tuple(f32(v) for v in r[1:])))
        for j in range(lh):
            for i in range(lw):
                for a in range(a_n):
                    pb = pred_box(b, a, j, i, o.mask[a])
                    match = any(y[b, a, 9 + k, j, i] > 0.25 for k in range(o.classes))
                    best_m, best_mt, best, best_t = 0.0, 0, 0.0, 0
                    for ti, (_, tb) in enumerate(truths):
                        v = _iou(pb, tb)
                        if v > best_m and match:
                            best_m, best_mt = v, ti
                        if v > best:
                            best, best_t = v, ti
                    obj = y[b, a, 8, j, i]
                    d[b, a, 8, j, i] = f32(t.obj_normalizer) * f32(0 - obj)
                    if best_m > t.ignore_thresh:
                        hit("ignored")
                        if t.objectness_smooth:
                            im = f32(best_m * best_m)
                            d[b, a, 8, j, i] = f32(t.obj_normalizer * f32(im - obj))
                            class_delta(b, a, j, i, truths[best_mt][0])
                        else:
                            d[b, a, 8, j, i] = 0
                    if best > t.truth_thresh:
                        hit("truth_thresh positive")
                        im = f32(best * best)
                        d[b, a, 8, j, i] = (f32(t.obj_normalizer * f32(im - obj))
                                            if t.objectness_smooth
                                            else f32(t.obj_normalizer * f32(1 - obj)))
                        cid, tb = truths[best_t]
                        class_delta(b, a, j, i, cid)
                        cm = f32(mult[cid]) if mult else f32(1)
                        if t.objectness_smooth:
                            d[b, a, 9 + cid, j, i] = f32(cm * f32(im - y[b, a, 9 + cid, j, i]))
                        box_delta(tb, b, a, j, i, o.mask[a], f32(2 - f32(tb[2] * tb[3])),
                                  f32(t.iou_normalizer * cm))
        for cid, tb in truths:
            fx, fy = tb[0] * lw, tb[1] * lh
            if o.yolo_point == "left_top":
                fx, fy = (tb[0] - tb[2] / 2) * lw, (tb[1] - tb[3] / 2) * lh
            elif o.yolo_point == "right_bottom":
                fx, fy = (tb[0] + tb[2] / 2) * lw, (tb[1] + tb[3] / 2) * lh
            i, j = int(min(lw - 1, max(0, fx))), int(min(lh - 1, max(0, fy)))
            shape = (f32(0), f32(0), tb[2], tb[3])
            best, best_n = 0.0, 0
            for k in range(t.total):
                v = _iou((f32(0), f32(0), f32(anchors[k][0] / net), f32(anchors[k][1] / net)),
                         shape)
                if v > best:
                    best, best_n = v, k
            picks = [best_n] if best_n in o.mask else []
            if t.iou_thresh < 1:
                for k in range(t.total):
                    anchor = _t((0, 0, f32(anchors[k][0] / net), f32(anchors[k][1] / net)))
                    if (k in o.mask and k != best_n and float(
                            box_iou_kind(anchor, _t(shape), t.iou_thresh_kind)[0]) > t.iou_thresh):
                        picks.append(k)
                        hit("iou_thresh anchor")
            for k in picks:
                a = o.mask.index(k)
                cm = f32(mult[cid]) if mult else f32(1)
                iou_sum += box_delta(tb, b, a, j, i, k, f32(2 - f32(tb[2] * tb[3])),
                                     f32(t.iou_normalizer * cm))
                d[b, a, 8, j, i] = f32(f32(cm * f32(t.obj_normalizer)) * f32(1 - y[b, a, 8, j, i]))
                class_delta(b, a, j, i, cid)
                count += 1
        for j in range(lh):
            for i in range(lw):
                for a in range(a_n):
                    pos = int((d[b, a, 9:, j, i] > 0).sum())
                    if pos > 1:
                        hit("box deltas averaged")
                    if pos:
                        d[b, a, :8, j, i] /= f32(pos)
    return d.reshape(n, c, lh, lw), float((d.astype(np.float64) ** 2).sum()), count, iou_sum


OPTION_SETS = [
    "",
    "iou_loss=giou\niou_normalizer=0.5",
    "iou_loss=diou",
    "iou_loss=ciou\nuc_normalizer=0.3",
    "iou_loss=iou",
    "iou_thresh=0.2",
    "iou_thresh=0.3\niou_thresh_kind=giou\niou_loss=ciou",
    "truth_thresh=0.3\nignore_thresh=0.1",
    "objectness_smooth=1\nignore_thresh=0.1\ntruth_thresh=0.35",
    "label_smooth_eps=0.1\nobj_normalizer=0.5",
    "max_delta=0.5\niou_loss=giou",
    "max_delta=2\nuc_normalizer=2",
    "counters_per_class=10,30,60\ncls_normalizer=2\niou_thresh=0.2",
    "yolo_point=left_top\niou_thresh=0.25",
    "yolo_point=right_bottom\niou_loss=giou\ntruth_thresh=0.3\nignore_thresh=0.1",
    "scale_x_y=1.2\niou_loss=diou",
    "max=2",
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda s: s.replace("\n", ",") or "default")
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_per_cell_loop(options: str, seed: int) -> None:
    loss, module = make_loss(head_cfg(options))
    out, x, targets = random_case(seed, loss, module)
    got = loss(out, x, targets, ctx())
    want, cost, count, iou_sum = reference(loss, out, targets, 64)
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got.delta.numpy() - want).max() <= 1e-5 * scale
    assert float(got.cost) == pytest.approx(cost, rel=1e-5)
    assert int(loss.last_stats["count"]) == count
    assert float(loss.last_stats["iou_sum"]) == pytest.approx(iou_sum, abs=1e-5)


@pytest.mark.parametrize("options, branches", [
    ("truth_thresh=0.3\nignore_thresh=0.1", {"ignored", "truth_thresh positive"}),
    ("objectness_smooth=1\nignore_thresh=0.1\ntruth_thresh=0.35",
     {"ignored", "truth_thresh positive", "partial class write"}),
    ("iou_thresh=0.2", {"iou_thresh anchor", "partial class write", "box deltas averaged"}),
    ("max_delta=0.5\niou_loss=giou", {"clipped"}),
])
def test_random_cases_reach_the_branches(options: str, branches: set[str]) -> None:
    """The random heads of the comparison above reach the branches they are meant to test."""
    hits: dict[str, int] = {}
    loss, module = make_loss(head_cfg(options))
    for seed in (0, 1):
        out, _, targets = random_case(seed, loss, module)
        reference(loss, out, targets, 64, hits)
    assert branches <= set(hits), hits


# --- the oracle -----------------------------------------------------------------------------------

def _oracle_cases() -> list[str]:
    if SHARED is None:
        return []
    root = SHARED / "oracle" / "train"
    return sorted(p.parent.name for p in root.glob("*/case.cfg")
                  if "[gaussian_yolo]" in p.read_text().lower())


_NUM = r"(-?[\d.]+|-?nan|-?inf)"  # averages over count = 0 print as nan
_PRINTED = re.compile(rf"Region (\d+) Avg IOU: {_NUM}, Class: {_NUM}, Obj: {_NUM}, No Obj: {_NUM}, "
                      rf".*count: (\d+), class_loss = {_NUM}, iou_loss = {_NUM}, "
                      rf"uc_loss = {_NUM}, total_loss = {_NUM}")


def _oracle_run(name: str):
    folder = SHARED / "oracle" / "train" / name
    meta = json.loads((folder / "meta.json").read_text())
    stored = np.load(folder / "first_iter.npz")
    truths = np.load(folder / "inputs.npz")["truths"][0]
    model = darkcfg.build(folder / "case.cfg")
    net = darkcfg.parse(folder / "case.cfg")
    _, opts = section_options(net)
    mb = meta["mini_batch"]
    c = LossContext(net_w=meta["input_w"], net_h=meta["input_h"], seen=meta["batch"],
                    iteration=0, max_batches=meta["net_params"]["max_batches"], darknet="cpu")
    for k, spec in enumerate(net):
        if spec.type != "Gaussian_yolo":
            continue
        s = spec.in_shape
        x = torch.from_numpy(stored[f"output_{k - 1:03d}"]).reshape(mb, s.c, s.h, s.w)
        out = model.layers[k](x)
        loss = loss_factory("Gaussian_yolo")(spec, opts[k], net)
        targets = [torch.from_numpy(t) for t in truths[mb:]]  # class -1 rows are padding
        yield k, meta, loss, out, loss(out, x, targets, c), stored


@pytest.mark.skipif(SHARED is None, reason=SKIP_REASON)
@pytest.mark.parametrize("name", _oracle_cases() or ["gaussian_yolo"])
def test_oracle_delta(name: str) -> None:
    for k, _, _, out, got, stored in _oracle_run(name):
        np.testing.assert_allclose(out.reshape(out.shape[0], -1).numpy(),
                                   stored[f"output_{k:03d}"], atol=1e-6)
        ref = stored[f"delta_{k:03d}"]
        err = np.abs(got.delta.reshape(ref.shape).numpy() - ref).max()
        assert err <= 1e-5 * np.abs(ref).max(), err


@pytest.mark.skipif(SHARED is None, reason=SKIP_REASON)
@pytest.mark.parametrize("name", _oracle_cases() or ["gaussian_yolo"])
def test_oracle_printed_statistics(name: str) -> None:
    """Darknet prints, per subdivision, count, average IoU/class/objectness and the cost split;
    the last line of iteration 0 is the stored subdivision."""
    for k, meta, loss, out, got, _ in _oracle_run(name):
        it0 = meta["darknet_printed"][:meta["darknet_printed"].index(
            next(line for line in meta["darknet_printed"] if "iteration 0 done" in line))]
        line = [m for m in map(_PRINTED.search, it0) if m and int(m.group(1)) == k][-1]
        avg_iou, cat, obj, noobj = (float(line.group(i)) for i in range(2, 6))
        count = int(line.group(6))
        class_loss, iou_loss, uc_loss, total = (float(line.group(i)) for i in range(7, 11))
        s = loss.last_stats
        mb = out.shape[0]
        assert int(s["count"]) == count
        if count:  # else Darknet prints nan
            assert float(s["iou_sum"]) / count == pytest.approx(avg_iou, abs=1e-6)
            assert float(s["cat_sum"]) / count == pytest.approx(cat, abs=1e-6)
            assert float(s["obj_sum"]) / count == pytest.approx(obj, abs=1e-6)
        assert float(s["anyobj_sum"]) / out[:, 8::loss.opts.entries].numel() == pytest.approx(
            noobj, abs=1e-6)
        assert float(got.cost) / mb == pytest.approx(total, abs=0.006)
        for key, value in (("class_loss", class_loss), ("iou_loss", iou_loss),
                           ("uc_loss", uc_loss)):
            assert float(s[key]) == pytest.approx(value, abs=0.006)


# --- options --------------------------------------------------------------------------------------

def test_training_options_and_defaults() -> None:
    loss, _ = make_loss(head_cfg())
    t = loss.training
    assert (t.iou_loss, t.iou_normalizer, t.uc_normalizer, t.ignore_thresh, t.truth_thresh,
            t.iou_thresh, t.max_boxes, t.total) == ("mse", 0.75, 1.0, 0.5, 1.0, 1.0, 200, 5)
    loss, _ = make_loss(head_cfg("iou_loss=ciou\nignore_thresh=.7\nmax_delta=5\n"
                                 "counters_per_class=100,0,300"))
    t = loss.training
    assert t.iou_loss == "ciou"
    assert t.ignore_thresh == float(np.float32(0.7))
    assert t.class_multipliers == (3.0, 5.0, 1.0)  # 300/100, 300/1 capped at max_delta, 1


def test_unknown_iou_loss_warns_and_uses_iou() -> None:
    with pytest.warns(darkcfg.CfgWarning,
                      match=r"iou_loss=smooth is not one of mse, iou, giou, diou, ciou; "
                            r"Darknet uses iou"):
        loss, _ = make_loss(head_cfg("iou_loss=smooth"))
    assert loss.training.iou_loss == "iou"


def test_option_errors() -> None:
    net = darkcfg.parse(head_cfg("counters_per_class=1,2"))
    _, opts = section_options(net)
    with pytest.raises(CfgError, match=r"^counters_per_class= has 2 values but classes=3 "):
        read_training_options(opts[0], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = darkcfg.parse(head_cfg("map=data/9k.map"))
    _, opts = section_options(net)
    with pytest.raises(CfgError, match=r"^map= \(class remapping\) is not supported in training "):
        read_training_options(opts[0], 3)


def test_backward_scale_follows_the_build() -> None:
    """The GPU backward multiplies the delta by delta_normalizer= (gaussian_yolo_layer.c:894), the
    CPU's adds it as is (701); the Trainer owns that factor."""
    from darkcfg.train import Trainer

    model = darkcfg.build(head_cfg("delta_normalizer=0.5"))
    k = len(model.layers) - 1
    assert Trainer(model, darknet="gpu").losses[k].backward_scale == 0.5
    assert Trainer(model, darknet="cpu").losses[k].backward_scale == 1.0


# --- targets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, message", [
    ([7, .5, .5, .2, .2], "target row 1 of image 0: class 7 is not below classes=3"),
    ([-2, .5, .5, .2, .2], "target row 1 of image 0: class -2 is negative"),
    ([1.5, .5, .5, .2, .2], "target row 1 of image 0: class 1.5 is not an integer"),
    ([1, 1.5, .5, .2, .2], "target row 1 of image 0: x=1.5 is outside [0, 1]"),
    ([1, .5, -.1, .2, .2], "target row 1 of image 0: y=-0.1 is outside [0, 1]"),
    ([1, .5, .5, 0, .2], "target row 1 of image 0: w=0 is not in (0, 1]"),
    ([1, .5, .5, .2, 2], "target row 1 of image 0: h=2 is not in (0, 1]"),
    ([1, float("nan"), .5, .2, .2],
     "target row 1 of image 0: non-finite value in [1.0, nan, 0.5, 0.2, 0.2]"),
])
def test_bad_targets_are_refused(row, message) -> None:
    loss, module = make_loss(head_cfg())
    out, x, _ = random_case(0, loss, module)
    good = [1, .5, .5, .2, .2]
    targets = [torch.tensor([good, row], dtype=torch.float64), torch.zeros(0, 5)]
    with pytest.raises(CfgError) as e:
        loss(out, x, targets, ctx())
    assert str(e.value) == message


def test_bad_row_is_named_in_its_image_after_padding() -> None:
    loss, module = make_loss(head_cfg())
    out, x, _ = random_case(0, loss, module)
    targets = [torch.tensor([[0, .5, .5, .2, .2]]),
               torch.tensor([[-1, -1, -1, -1, -1], [0, .5, .5, .2, .2], [3, .5, .5, .2, .2]])]
    with pytest.raises(CfgError, match=r"^target row 2 of image 1: class 3 is not below "
                                       r"classes=3$"):
        loss(out, x, targets, ctx())


def test_targets_must_match_the_mini_batch() -> None:
    loss, module = make_loss(head_cfg())
    out, x, _ = random_case(0, loss, module)
    with pytest.raises(CfgError, match=r"^detector targets must be a list of 2 \(n, 5\) tensors, "
                                       r"one per image of the mini-batch; got 1 images$"):
        loss(out, x, [torch.zeros(0, 5)], ctx())
    with pytest.raises(CfgError, match=r"^targets of image 1 have shape \(3,\); expected"):
        loss(out, x, [torch.zeros(0, 5), torch.zeros(3)], ctx())


# --- properties -----------------------------------------------------------------------------------

def test_no_truths_only_pushes_objectness_down() -> None:
    loss, module = make_loss(head_cfg("obj_normalizer=0.5"))
    out, x, _ = random_case(3, loss, module)
    got = loss(out, x, [torch.zeros(0, 5), torch.zeros(0, 5)], ctx())
    ent = loss.opts.entries
    obj = out[:, 8::ent]
    expected = torch.zeros_like(out)
    expected[:, 8::ent] = -0.5 * obj
    assert torch.equal(got.delta, expected)
    assert float(got.cost) == pytest.approx(float((0.25 * obj.double() ** 2).sum()), rel=1e-6)
    assert int(loss.last_stats["count"]) == 0


def test_no_autograd_and_dtype() -> None:
    loss, module = make_loss(head_cfg())
    out, x, targets = random_case(0, loss, module)
    out.requires_grad_(True)
    got = loss(out, x, targets, ctx())
    assert got.delta.grad_fn is None and got.cost.dim() == 0
    assert got.delta.shape == out.shape and got.delta.dtype == torch.float32


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), pad_at=st.integers(0, 4), x0_at=st.integers(0, 4))
def test_padding_rows_truncation_and_max(seed: int, pad_at: int, x0_at: int) -> None:
    """Rows of class -1 are ignored wherever they are; a row with x == 0 ends the list (as
    Darknet's zero-filled truth slots do); max= keeps the first boxes."""
    loss, module = make_loss(head_cfg("iou_thresh=0.3"))
    out, x, targets = random_case(seed, loss, module, boxes=4)
    base = loss(out, x, targets, ctx()).delta
    pad = torch.full((1, 5), -1.0)
    padded = [torch.cat([t[:pad_at], pad, t[pad_at:]]) for t in targets]
    assert torch.equal(loss(out, x, padded, ctx()).delta, base)
    stop = torch.tensor([[0, 0, .5, .2, .2]])
    cut = [torch.cat([t[:x0_at], stop, t[x0_at:]]) for t in targets]
    short = [t[:x0_at] for t in targets]
    assert torch.equal(loss(out, x, cut, ctx()).delta, loss(out, x, short, ctx()).delta)
    capped, _ = make_loss(head_cfg(f"iou_thresh=0.3\nmax={x0_at}"))
    assert torch.equal(capped(out, x, targets, ctx()).delta, loss(out, x, short, ctx()).delta)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_random_heads_match_the_loop(seed: int) -> None:
    loss, module = make_loss(head_cfg("iou_thresh=0.25\ntruth_thresh=0.4\nignore_thresh=0.2\n"
                                      "iou_loss=giou"))
    out, x, targets = random_case(seed, loss, module, boxes=6)
    got = loss(out, x, targets, ctx())
    want, cost, _, _ = reference(loss, out, targets, 64)
    assert np.abs(got.delta.numpy() - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
