"""[region] loss: Darknet's l.delta and l.cost, checked against the training oracle (Darknet's own
numbers) and against a plain loop port of forward_region_layer for the options the oracle does
not exercise (softmax tree, classfix, focal loss, map=, the prior term switching off, overwrites)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import darkcfg
from darkcfg import CfgError
from darkcfg.train.losses import LossContext, loss_factory
from darkcfg.train.sections import section_options
from darkcfg.tree import parse_tree
from oracle import SHARED, SKIP_REASON

F32 = np.float32
TOL = 1e-5  # of max|delta|


def oracle_cases(section: str) -> list[str]:
    if SHARED is None:
        return []
    root = SHARED / "oracle" / "train"
    return sorted(p.parent.name for p in root.glob("*/case.cfg")
                  if re.search(rf"^\[{section}\]", p.read_text(), re.M))


def make_loss(net: darkcfg.Network, k: int):
    _, opts = section_options(net)
    spec = net.layers[k]
    return loss_factory(spec.type)(spec, opts[k], net)


def ctx(seen: int, size: int = 64) -> LossContext:
    return LossContext(size, size, seen, 0, 1000, "cpu")


# -- the oracle ---------------------------------------------------------------------------------

@pytest.mark.skipif(SHARED is None, reason=SKIP_REASON)
@pytest.mark.parametrize("case", oracle_cases("region") or ["region_v2"])
def test_oracle_delta_cost_and_printed_stats(case: str) -> None:
    folder = SHARED / "oracle" / "train" / case
    meta = json.loads((folder / "meta.json").read_text())
    model = darkcfg.build(folder / "case.cfg")
    k = next(i for i, s in enumerate(model.network.layers) if s.type == "region")
    spec = model.network.layers[k]
    mb, batch = meta["mini_batch"], meta["batch"]
    first = np.load(folder / "first_iter.npz")
    truths = np.load(folder / "inputs.npz")["truths"][0][mb:batch]  # the last subdivision
    s = spec.in_shape
    x = torch.from_numpy(first[f"output_{k - 1:03d}"]).reshape(mb, s.c, s.h, s.w)
    head = model.layers[k]
    out = head(x)
    ref_out = first[f"output_{k:03d}"]
    assert np.abs(head.darknet_order(out).reshape(mb, -1).numpy() - ref_out).max() \
        <= TOL * np.abs(ref_out).max()
    loss = make_loss(model.network, k)
    got = loss(out, x, [torch.from_numpy(t) for t in truths], ctx(batch))  # with padding rows
    ref = first[f"delta_{k:03d}"]
    assert got.delta.shape == out.shape
    err = np.abs(got.delta.reshape(mb, -1).numpy() - ref).max() / np.abs(ref).max()
    assert err <= TOL, f"{case}: delta error {err:.2e} of max|delta|"
    assert float(got.cost) == pytest.approx(float((ref.astype(np.float64) ** 2).sum()), rel=TOL)
    # Darknet's printed line of this subdivision (iteration 0 prints one per subdivision)
    lines = [ln for ln in meta["darknet_printed"] if ln.startswith("Region Avg IOU")]
    printed = lines[meta["subdivisions"] - 1]
    nums = [float(v) for v in re.findall(r"(?<=: )-?[\d.]+|(?<=count: )\d+", printed)]
    ours = loss.stats.averages()
    expect = [ours[key] for key in ("avg_iou", "class", "obj", "no_obj", "recall")]
    assert nums[:5] == pytest.approx(expect, abs=2e-6), printed
    assert int(nums[5]) == ours["count"]


# -- a loop port of forward_region_layer (reference for the options the oracle lacks) -----------

def _sig(x: np.float32) -> np.float32:
    return F32(1) / (F32(1) + np.exp(-x))


def _iou(a: tuple, b: tuple) -> np.float32:
    def overlap(x1, w1, x2, w2):
        l1, l2 = x1 - w1 / F32(2), x2 - w2 / F32(2)
        r1, r2 = x1 + w1 / F32(2), x2 + w2 / F32(2)
        return (r1 if r1 < r2 else r2) - (l1 if l1 > l2 else l2)
    ow, oh = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = F32(0) if ow < 0 or oh < 0 else ow * oh
    union = a[2] * a[3] + b[2] * b[3] - inter
    return F32(0) if inter == 0 or union == 0 else inter / union


def reference(out: np.ndarray, truths: list[np.ndarray], o, train: dict, seen: int,
              class_map: list[int] | None = None) -> tuple[np.ndarray, float]:
    """`out`: Darknet's l.output (N, H*W, num, entries) float32; returns its l.delta, same order."""
    n_img, cells, num, _ = out.shape
    h = w = int(round(cells ** 0.5))
    anchors = np.asarray(o.anchors, np.float32)
    tree = o.tree
    d = np.zeros_like(out)
    s = {k: F32(v) for k, v in train.items() if k != "classfix"}

    def box(e, n, i, j):
        return ((F32(i) + _sig(e[0])) / F32(w), (F32(j) + _sig(e[1])) / F32(h),
                F32(np.exp(np.float64(e[2])) * np.float64(anchors[n, 0]) / w),
                F32(np.exp(np.float64(e[3])) * np.float64(anchors[n, 1]) / h))

    def box_delta(t, e, dd, n, i, j, scale):
        iou = _iou(box(e, n, i, j), t)
        tx, ty = t[0] * F32(w) - F32(i), t[1] * F32(h) - F32(j)
        tw = F32(np.log(np.float64(t[2] * F32(w) / anchors[n, 0])))
        th = F32(np.log(np.float64(t[3] * F32(h) / anchors[n, 1])))
        sx, sy = _sig(e[0]), _sig(e[1])
        dd[0] = scale * (tx - sx) * ((F32(1) - sx) * sx)
        dd[1] = scale * (ty - sy) * ((F32(1) - sy) * sy)
        dd[2] = scale * (tw - e[2])
        dd[3] = scale * (th - e[3])
        return iou

    def class_delta(e, dd, c, scale):
        if tree is not None:
            while c >= 0:
                g = tree.group[c]
                for m in range(tree.group_offset[g], tree.group_offset[g] + tree.group_size[g]):
                    dd[5 + m] = scale * (F32(0) - e[5 + m])
                dd[5 + c] = scale * (F32(1) - e[5 + c])
                c = tree.parent[c]
            return
        for m in range(o.classes):
            dd[5 + m] = scale * (F32(m == c) - e[5 + m])
        if train.get("focal_loss"):
            pt = e[5 + c] + F32(1e-15)
            with np.errstate(invalid="ignore"):  # raw scores without softmax: NaN, as Darknet
                grad = -(F32(1) - pt) * (F32(2) * pt * np.log(pt) + pt - F32(1))
            for m in range(o.classes):
                dd[5 + m] *= F32(0.5) * grad

    for b in range(n_img):
        slots = []
        for row in truths[b]:
            if row[0] == -1:
                continue
            if len(slots) == train["max"] or row[1] == 0:
                break
            slots.append((int(row[0]), tuple(F32(v) for v in row[1:])))
        for j in range(h):
            for i in range(w):
                for n in range(num):
                    e, dd = out[b, j * w + i, n], d[b, j * w + i, n]
                    best, best_cls = F32(0), -1
                    for c, t in slots:
                        iou = _iou(box(e, n, i, j), t)
                        if iou > best:
                            best, best_cls = iou, c
                    obj = e[4]
                    grad = (F32(1) - obj) * obj
                    dd[4] = s["noobject_scale"] * ((F32(0) - obj) * grad)
                    if train["classfix"] == -1:
                        dd[4] = s["noobject_scale"] * ((best - obj) * grad)
                    elif best > s["thresh"]:
                        dd[4] = 0
                        if train["classfix"] > 0:
                            scale = s["class_scale"] * (obj if train["classfix"] == 2 else F32(1))
                            class_delta(e, dd, best_cls, scale)
                    if seen < 12800:
                        prior = (F32((i + .5) / w), F32((j + .5) / h),
                                 anchors[n, 0] / F32(w), anchors[n, 1] / F32(h))
                        box_delta(prior, e, dd, n, i, j, F32(.01))
        for c, t in slots:
            i, j = int(t[0] * F32(w)), int(t[1] * F32(h))
            if j * w + i >= cells:
                continue  # Darknet would write into the next image
            best, best_n = F32(0), 0
            for n in range(num):
                e = out[b, j * w + i, n]
                p = box(e, n, i, j)
                if o.bias_match:
                    p = (p[0], p[1], anchors[n, 0] / F32(w), anchors[n, 1] / F32(h))
                iou = _iou((F32(0), F32(0), p[2], p[3]), (F32(0), F32(0), t[2], t[3]))
                if iou > best:
                    best, best_n = iou, n
            e, dd = out[b, j * w + i, best_n], d[b, j * w + i, best_n]
            iou = box_delta(t, e, dd, best_n, i, j, s["coord_scale"])
            obj = e[4]
            target = iou if o.rescore else F32(1)
            dd[4] = s["object_scale"] * (target - obj) * ((F32(1) - obj) * obj)
            class_delta(e, dd, class_map[c] if class_map else c, s["class_scale"])
    return d, float((d.astype(np.float64) ** 2).sum())


TREE = "a -1\nb -1\na1 0\na2 0\nb1 1\nb2 1\nb3 1\na1x 2\na1y 2\na1z 2\n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("region")
    (d / "small.tree").write_text(TREE)
    (d / "coco.map").write_text("7\n4\n 9\n")
    return d


def region_cfg(classes: int, num: int, side: int, opts: dict) -> str:
    entries = 5 + classes
    keys = "\n".join(f"{k}={v}" for k, v in opts.items())
    return (f"[net]\nwidth={side}\nheight={side}\nchannels={num * entries}\n\n[region]\n"
            f"classes={classes}\ncoords=4\nnum={num}\n{keys}\n")


def boxes(draw, classes: int, n: int) -> np.ndarray:
    rows = []
    for _ in range(n):
        x = draw(st.sampled_from([0.0, 0.13, 0.5, 0.77, 0.99, 1.0]) | st.floats(0.01, 0.99))
        y = draw(st.floats(0.01, 1.0))
        w, h = draw(st.floats(0.02, 1.0)), draw(st.floats(0.02, 1.0))
        rows.append([draw(st.integers(0, classes - 1)), x, y, w, h])
    return np.asarray(rows, np.float32).reshape(-1, 5)


@st.composite
def region_problem(draw):
    tree = draw(st.booleans())
    classes = 10 if tree else draw(st.integers(1, 4))
    num = draw(st.integers(1, 3))
    side = draw(st.integers(1, 4))
    opts = {"anchors": ",".join(f"{draw(st.floats(0.3, 4)):.3f}" for _ in range(2 * num)),
            "bias_match": int(draw(st.booleans())), "rescore": int(draw(st.booleans())),
            "softmax": int(draw(st.booleans())), "classfix": draw(st.sampled_from([-1, 0, 1, 2])),
            "thresh": draw(st.sampled_from([0.0, 0.2, 0.6])),
            "coord_scale": draw(st.sampled_from([1, 0.5, 5])),
            "object_scale": draw(st.sampled_from([1, 5])),
            "noobject_scale": draw(st.sampled_from([1, 0.5])),
            "class_scale": draw(st.sampled_from([1, 2])), "max": draw(st.integers(1, 6))}
    if tree:
        opts["tree"] = "small.tree"
        if draw(st.booleans()):
            opts["map"] = "coco.map"
    elif draw(st.booleans()):
        opts["focal_loss"] = 1
    n_img = draw(st.integers(1, 3))
    label_classes = 3 if "map" in opts else classes
    truths = [boxes(draw, label_classes, draw(st.integers(0, 5))) for _ in range(n_img)]
    seen = draw(st.sampled_from([2, 12799, 12800, 40000]))
    seed = draw(st.integers(0, 2**16))
    return classes, num, side, opts, truths, seen, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=region_problem())
def test_matches_loop_port(problem, data_dir: Path) -> None:
    classes, num, side, opts, truths, seen, seed = problem
    cfg = data_dir / "region.cfg"
    cfg.write_text(region_cfg(classes, num, side, opts))
    model = darkcfg.build(cfg)
    head = model.layers[0]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(truths), num * (5 + classes), side, side, generator=gen) * 2
    out = head(x)
    loss = make_loss(model.network, 0)
    if "map" in opts:
        truths = [t[t[:, 0] < 3] for t in truths]
    got = loss(out, x, [torch.from_numpy(t) for t in truths], ctx(seen))
    train = {k: float(opts[k]) for k in ("thresh", "coord_scale", "object_scale",
                                          "noobject_scale", "class_scale")}
    train.update(classfix=opts["classfix"], max=opts["max"], focal_loss=opts.get("focal_loss"))
    cmap = [7, 4, 9] if "map" in opts else None
    ref, cost = reference(head.darknet_order(out).numpy(), truths, head.opts, train, seen, cmap)
    ours = head.darknet_order(got.delta).numpy()
    # focal loss without softmax takes the log of raw scores: NaN in Darknet too
    scale = max(1.0, float(np.nanmax(np.abs(ref))))
    assert np.allclose(ours, ref, rtol=0, atol=TOL * scale, equal_nan=True)
    assert float(got.cost) == pytest.approx(cost, rel=1e-5, abs=1e-6, nan_ok=True)


# -- small cases on our own inputs --------------------------------------------------------------

def small(tmp_path: Path, **opts) -> tuple[darkcfg.DarknetModel, object, torch.Tensor]:
    base = {"anchors": "1,1, 2,2", "bias_match": 1, "softmax": 1}
    base.update(opts)
    cfg = tmp_path / "r.cfg"
    cfg.write_text(region_cfg(3, 2, 4, base))
    model = darkcfg.build(cfg)
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    return model, make_loss(model.network, 0), x


def test_no_truths_after_the_prior_phase_only_objectness(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path, noobject_scale=0.5)
    out = model.layers[0](x)
    got = loss(out, x, [torch.zeros(0, 5), torch.zeros(0, 5)], ctx(12800))
    d = got.delta.reshape(2, 2, 8, 4, 4)
    obj = out.reshape(2, 2, 8, 4, 4)[:, :, 4]
    assert torch.equal(d[:, :, :4], torch.zeros_like(d[:, :, :4]))
    assert torch.equal(d[:, :, 5:], torch.zeros_like(d[:, :, 5:]))
    torch.testing.assert_close(d[:, :, 4], 0.5 * (-obj * ((1 - obj) * obj)))
    assert float(got.cost) == pytest.approx(float((d.double() ** 2).sum()), rel=1e-6)
    before = loss(out, x, [torch.zeros(0, 5)] * 2, ctx(12799)).delta.reshape(2, 2, 8, 4, 4)
    assert before[:, :, :4].abs().min() > 0  # the prior pull is on while seen < 12800


def test_slots_padding_max_and_stop_at_x_zero(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path, max=2)
    out = model.layers[0](x)
    a = torch.tensor([[1, .3, .3, .2, .3], [2, .6, .7, .4, .2]])
    pad = torch.full((1, 5), -1.0)
    stop = torch.tensor([[0, 0, .5, .2, .2], [1, .8, .8, .3, .3]])
    ref = loss(out, x, [a, a[:1]], ctx(20000)).delta
    variants = [[torch.cat((pad, a[:1], pad, a[1:], pad)), a[:1]],  # padding rows dropped
                [torch.cat((a, stop)), torch.cat((a[:1], stop))],  # reading stops at x == 0
                [torch.cat((a, a[:1])), a[:1]]]  # max=2 keeps the first two
    for targets in variants:
        assert torch.equal(loss(out, x, targets, ctx(20000)).delta, ref)
    assert not torch.equal(loss(out, x, [a[:1], a[:1]], ctx(20000)).delta, ref)


def test_later_truth_on_the_same_anchor_overwrites(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path, thresh=2)  # no IoU is above: step 1 ignores the truths
    out = model.layers[0](x)
    first = torch.tensor([[0, .30, .30, .20, .20]])
    second = torch.tensor([[2, .32, .28, .22, .18]])  # same cell, same best anchor
    both = loss(out, x, [torch.cat((first, second)), torch.zeros(0, 5)], ctx(20000)).delta
    alone = loss(out, x, [second, torch.zeros(0, 5)], ctx(20000)).delta
    assert torch.equal(both, alone)


def test_registered_and_delta_in_conv_layout(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path)
    assert type(loss).__name__ == "RegionLoss" and loss.backward_scale == 1.0
    out = model.layers[0](x)
    got = loss(out, x, [torch.tensor([[1, .6, .1, .3, .3]]), torch.zeros(0, 5)], ctx(20000))
    # the truth sits in cell (row 0, column 2): anchor-major conv layout, class entry 5 + 1
    d = got.delta.reshape(2, 2, 8, 4, 4)
    written = (d[0, :, 5:8] != 0).nonzero().tolist()
    assert {(r[2], r[3]) for r in written} == {(0, 2)}
    assert got.delta.dtype == torch.float32 and got.cost.shape == ()


@pytest.mark.parametrize("rows, message", [
    ([[3, .5, .5, .1, .1]], "target row 0 of image 0: class 3 is not below classes=3"),
    ([[0, .5, .5, .1, .1], [1, float("nan"), .5, .1, .1]],
     "target row 1 of image 0: non-finite value in [1.0, nan, 0.5, 0.10000000149011612, "
     "0.10000000149011612]"),
])
def test_bad_targets_name_image_and_row(tmp_path: Path, rows, message: str) -> None:
    model, loss, x = small(tmp_path)
    out = model.layers[0](x)
    with pytest.raises(CfgError) as e:
        loss(out, x, [torch.tensor(rows), torch.zeros(0, 5)], ctx(4))
    assert str(e.value) == message


def test_tree_smaller_than_classes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.tree").write_text("a -1\nb -1\n")
    cfg = tmp_path / "r.cfg"
    cfg.write_text(region_cfg(3, 1, 2, {"tree": "t.tree"}))
    with pytest.warns(darkcfg.CfgWarning):
        net = darkcfg.parse(cfg)
    with pytest.raises(CfgError) as e:
        make_loss(net, 0)
    assert e.value.msg == ("training with tree=t.tree needs as many tree nodes as classes=3: "
                           "Darknet reads the tree at class ids up to 2 and the tree has 2")
    assert e.value.loc.line == 10


def test_class_map_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.map").write_text("1\n5\n")
    cfg = tmp_path / "r.cfg"
    cfg.write_text(region_cfg(3, 1, 2, {"map": "bad.map"}))
    with pytest.raises(CfgError) as e:
        make_loss(darkcfg.parse(cfg), 0)
    assert e.value.msg == "map=bad.map: line 2 maps to class 5, outside 0..2"
    (tmp_path / "bad.map").write_text("1\n")
    loss = make_loss(darkcfg.parse(cfg), 0)
    x = torch.zeros(1, 8, 2, 2)
    with pytest.raises(CfgError) as e:
        loss(x, x, [torch.tensor([[0, .5, .5, .2, .2], [1, .2, .2, .2, .2]])], ctx(4))
    assert str(e.value) == "target row 1 of image 0: class 1 has no line in map=bad.map (1 lines)"
    cfg.write_text(region_cfg(3, 1, 2, {"map": "missing.map"}))
    with pytest.raises(CfgError, match=r"^map=missing\.map: class map file not found \(tried "):
        make_loss(darkcfg.parse(cfg), 0)


def test_tree_parse_matches_reference_groups() -> None:
    t = parse_tree(TREE)  # the reference walks these arrays; guard the fixture's shape
    assert t.group_size[t.group[7]] == 3 and t.parent[7] == 2 and t.parent[2] == 0
