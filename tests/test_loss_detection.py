"""[detection] loss (yolov1): Darknet's l.delta and l.cost, checked against the training oracle
and against a plain loop port of forward_detection_layer on Darknet's flat arrays (forced, random,
the RMSE fallback and its index -1, softmax, sqrt off, boxes fill_truth_region skips)."""

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
from darkcfg.train.losses.detection import truth_grid
from darkcfg.train.sections import section_options
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


def ctx(seen: int) -> LossContext:
    return LossContext(64, 64, seen, 0, 1000, "cpu")


# -- the oracle ---------------------------------------------------------------------------------

@pytest.mark.skipif(SHARED is None, reason=SKIP_REASON)
@pytest.mark.parametrize("case", oracle_cases("detection") or ["detection_v1"])
def test_oracle_delta_cost_truth_grid_and_printed_stats(case: str) -> None:
    folder = SHARED / "oracle" / "train" / case
    meta = json.loads((folder / "meta.json").read_text())
    model = darkcfg.build(folder / "case.cfg")
    k = next(i for i, s in enumerate(model.network.layers) if s.type == "detection")
    spec = model.network.layers[k]
    o = spec.options
    mb, batch = meta["mini_batch"], meta["batch"]
    first = np.load(folder / "first_iter.npz")
    inputs = np.load(folder / "inputs.npz")
    for it, rows in enumerate(inputs["truths"]):  # the grid Darknet trained on, every image
        grid = truth_grid([torch.from_numpy(r) for r in rows], o.side, torch.device("cpu"))
        assert np.array_equal(grid.darknet(o.classes).numpy(), inputs["truth_darknet"][it])
    s = spec.in_shape
    x = torch.from_numpy(first[f"output_{k - 1:03d}"]).reshape(mb, s.c, s.h, s.w)
    out = model.layers[k](x)
    assert np.array_equal(out.reshape(mb, -1).numpy(), first[f"output_{k:03d}"])
    loss = make_loss(model.network, k)
    targets = [torch.from_numpy(t) for t in inputs["truths"][0][mb:batch]]
    got = loss(out, x, targets, ctx(batch))
    ref = first[f"delta_{k:03d}"]
    assert got.delta.shape == out.shape
    err = np.abs(got.delta.reshape(mb, -1).numpy() - ref).max() / np.abs(ref).max()
    assert err <= TOL, f"{case}: delta error {err:.2e} of max|delta|"
    assert float(got.cost) == pytest.approx(float((ref.astype(np.float64) ** 2).sum()), rel=TOL)
    lines = [ln for ln in meta["darknet_printed"] if ln.startswith("Detection Avg IOU")]
    printed = lines[meta["subdivisions"] - 1]
    nums = [float(v) for v in re.findall(r"(?<=: )-?[\d.]+", printed)]
    ours = loss.stats.averages()
    expect = [ours[key] for key in ("avg_iou", "pos_cat", "all_cat", "pos_obj", "any_obj")]
    assert nums[:5] == pytest.approx(expect, abs=2e-6), printed
    assert int(nums[5]) == ours["count"]


# -- a loop port of fill_truth_region + forward_detection_layer ----------------------------------

def reference_grid(truths: list[np.ndarray], side: int, classes: int) -> np.ndarray:
    cells = side * side
    grid = np.zeros((len(truths), cells * (5 + classes)), np.float32)
    for b, rows in enumerate(truths):
        for c, x, y, w, h in rows.astype(np.float32):
            if c == -1 or w < .001 or h < .001 or (x == 0 and y == 0):
                continue
            col, row = int(x * F32(side)), int(y * F32(side))
            if col + row * side >= cells:
                continue  # Darknet would write into the next image's truth
            at = (col + row * side) * (5 + classes)
            if grid[b, at]:
                continue
            grid[b, at] = 1
            grid[b, at + 1 + int(c)] = 1
            grid[b, at + 1 + classes:at + 5 + classes] = (
                x * F32(side) - F32(col), y * F32(side) - F32(row), w, h)
    return grid


def _iou(a: tuple, b: tuple) -> np.float32:
    def overlap(x1, w1, x2, w2):
        l1, l2 = x1 - w1 / F32(2), x2 - w2 / F32(2)
        r1, r2 = x1 + w1 / F32(2), x2 + w2 / F32(2)
        return (r1 if r1 < r2 else r2) - (l1 if l1 > l2 else l2)
    ow, oh = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = F32(0) if ow < 0 or oh < 0 else ow * oh
    union = a[2] * a[3] + b[2] * b[3] - inter
    return F32(0) if inter == 0 or union == 0 else inter / union


def _rmse(a: tuple, b: tuple) -> np.float32:
    return F32(np.sqrt(sum(np.float64(p - q) ** 2 for p, q in zip(a, b))))


def reference(out: np.ndarray, grid: np.ndarray, o, scales: dict, draws: list[int] | None
              ) -> np.ndarray:
    """Darknet's l.delta for the flat outputs `out` (N, inputs) float32 and truth `grid`."""
    n_img, inputs = out.shape
    cells, n, c, side = o.side * o.side, o.num, o.classes, F32(o.side)
    y, d = out.reshape(-1), np.zeros(out.size, np.float32)
    sc = {k: F32(v) for k, v in scales.items()}

    def as_box(at: int) -> tuple:
        x, yy, w, h = y[at:at + 4]
        if o.sqrt:
            w, h = w * w, h * h
        return x / side, yy / side, w, h

    for b in range(n_img):
        base = b * inputs
        for i in range(cells):
            t = grid[b, i * (5 + c):(i + 1) * (5 + c)]
            for j in range(n):
                p = base + cells * c + i * n + j
                d[p] = sc["noobject"] * (F32(0) - y[p])
            if not t[0]:
                continue
            for j in range(c):
                at = base + i * c + j
                d[at] = sc["class"] * (t[1 + j] - y[at])
            tb = t[1 + c:5 + c]
            truth = (tb[0] / side, tb[1] / side, tb[2], tb[3])
            best, best_iou, best_rmse = -1, F32(0), F32(20)
            for j in range(n):
                pred = as_box(base + cells * (c + n) + (i * n + j) * o.coords)
                iou, rmse = _iou(pred, truth), _rmse(pred, truth)
                if best_iou > 0 or iou > 0:
                    if iou > best_iou:
                        best_iou, best = iou, j
                elif rmse < best_rmse:
                    best_rmse, best = rmse, j
            if o.forced:
                best = 1 if tb[2] * tb[3] < F32(.1) else 0
            if draws is not None:
                best = draws.pop(0)
            box = base + cells * (c + n) + (i * n + best) * o.coords
            p = base + cells * c + i * n + best
            if box < 0 or p < 0:
                raise CfgError("index -1 before the buffer")
            iou = _iou(as_box(box), truth)
            d[p] = F32(np.float64(sc["object"]) * (1.0 - np.float64(y[p])))
            if o.rescore:
                d[p] = sc["object"] * (iou - y[p])
            for k in range(4):
                d[box + k] = sc["coord"] * (tb[k] - y[box + k])
            if o.sqrt:
                for k in (2, 3):
                    d[box + k] = F32(np.float64(sc["coord"])
                                     * (np.sqrt(np.float64(tb[k])) - np.float64(y[box + k])))
    return d.reshape(out.shape)


def detection_cfg(classes: int, num: int, side: int, opts: dict) -> str:
    inputs = side * side * (5 * num + classes)
    keys = "\n".join(f"{k}={v}" for k, v in opts.items())
    return (f"[net]\nwidth=1\nheight=1\nchannels={inputs}\n\n[detection]\nclasses={classes}\n"
            f"coords=4\nnum={num}\nside={side}\n{keys}\n")


@st.composite
def detection_problem(draw):
    classes, num, side = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    opts = {"sqrt": int(draw(st.booleans())), "rescore": int(draw(st.booleans())),
            "softmax": int(draw(st.booleans())), "random": int(draw(st.booleans())),
            "forced": int(num >= 2 and draw(st.booleans())),
            "coord_scale": draw(st.sampled_from([1, 5, 0.3])),
            "object_scale": draw(st.sampled_from([1, 0.3])),
            "noobject_scale": draw(st.sampled_from([1, 0.5])),
            "class_scale": draw(st.sampled_from([1, 2]))}
    coord = st.sampled_from([0.0, 0.5, 0.999, 1.0]) | st.floats(0.0, 1.0)
    size = st.sampled_from([0.0005, 0.001, 1.0]) | st.floats(0.002, 1.0)
    truths = []
    for _ in range(draw(st.integers(1, 3))):
        rows = [[draw(st.integers(0, classes - 1)), draw(coord), draw(coord), draw(size),
                 draw(size)] for _ in range(draw(st.integers(0, 6)))]
        truths.append(np.asarray(rows, np.float32).reshape(-1, 5))
    spread = draw(st.sampled_from([0.5, 2.0, 40.0]))  # 40: every RMSE >= 20 happens
    return classes, num, side, opts, truths, spread, draw(st.integers(0, 2**16)), \
        draw(st.sampled_from([4, 64000]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=detection_problem())
def test_matches_loop_port(problem, tmp_path_factory) -> None:
    classes, num, side, opts, truths, spread, seed, seen = problem
    cfg = tmp_path_factory.mktemp("det") / "d.cfg"
    cfg.write_text(detection_cfg(classes, num, side, opts))
    model = darkcfg.build(cfg)
    inputs = model.network.layers[0].in_shape.c
    x = torch.randn(len(truths), inputs, 1, 1, generator=torch.Generator().manual_seed(seed))
    out = model.layers[0](x * spread)
    loss = make_loss(model.network, 0)
    loss.generator = torch.Generator().manual_seed(seed)
    grid = reference_grid(truths, side, classes)
    targets = [torch.from_numpy(t) for t in truths]
    assert np.array_equal(truth_grid(targets, side, torch.device("cpu")).darknet(classes).numpy(),
                          grid)
    draws = None
    if opts["random"] and seen < 64000:
        objects = int(grid.reshape(len(truths), side * side, -1)[..., 0].sum())
        draws = torch.randint(0, num, (objects,),
                              generator=torch.Generator().manual_seed(seed)).tolist()
    scales = {k: float(opts[f"{k}_scale"]) for k in ("coord", "object", "noobject", "class")}
    flat = out.reshape(len(truths), -1).numpy()
    try:
        ref = reference(flat, grid, model.network.layers[0].options, scales, draws)
    except CfgError:  # cell 0 of image 0 with no responsible box: Darknet writes before l.delta
        with pytest.raises(CfgError, match="before the start of its delta buffer"):
            loss(out, x, targets, ctx(seen))
        return
    got = loss(out, x, targets, ctx(seen))
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(got.delta.reshape(flat.shape).numpy() - ref).max() <= TOL * scale
    assert float(got.cost) == pytest.approx(float((ref.astype(np.float64) ** 2).sum()),
                                            rel=1e-5, abs=1e-6)


# -- small cases on our own inputs --------------------------------------------------------------

def small(tmp_path: Path, **opts):
    cfg = tmp_path / "d.cfg"
    cfg.write_text(detection_cfg(2, 2, 2, {"sqrt": 1, "rescore": 1, **opts}))
    model = darkcfg.build(cfg)
    x = torch.randn(2, 48, 1, 1, generator=torch.Generator().manual_seed(0))
    return model, make_loss(model.network, 0), x


def test_without_objects_only_confidences(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path, noobject_scale=0.5)
    out = model.layers[0](x)
    got = loss(out, x, [torch.zeros(0, 5), torch.tensor([[1, .5, .5, .0005, .3]])], ctx(4))
    d, y = got.delta.reshape(2, 48), out.reshape(2, 48)
    conf = slice(2 * 2 * 2, 2 * 2 * 4)
    torch.testing.assert_close(d[:, conf], 0.5 * (0 - y[:, conf]), rtol=0, atol=0)
    d[:, conf] = 0
    assert not d.any()  # a box under .001 wide is skipped as fill_truth_region skips it


def test_first_box_in_a_cell_wins_and_random_follows_torch_seed(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path, random=1)
    out = model.layers[0](x)
    a = torch.tensor([[0, .2, .2, .3, .3]])
    b = torch.tensor([[1, .3, .1, .1, .1]])  # same cell (0, 0)
    torch.manual_seed(5)
    first = loss(out, x, [torch.cat((a, b)), torch.zeros(0, 5)], ctx(4)).delta
    torch.manual_seed(5)
    assert torch.equal(first, loss(out, x, [a, torch.zeros(0, 5)], ctx(4)).delta)
    picks = set()
    for seed in range(8):
        loss.generator = torch.Generator().manual_seed(seed)
        d = loss(out, x, [a, torch.zeros(0, 5)], ctx(4)).delta.reshape(2, 48)
        picks.add(tuple(bool(v) for v in d[0, 16:24].reshape(2, 4).any(1)))  # boxes of cell 0
    assert picks == {(True, False), (False, True)}
    (tmp_path / "plain").mkdir()
    _, plain, _ = small(tmp_path / "plain")
    for seed in range(4):  # from seen 64000 on Darknet stops picking at random
        loss.generator = torch.Generator().manual_seed(seed)
        assert torch.equal(loss(out, x, [a, torch.zeros(0, 5)], ctx(64000)).delta,
                           plain(out, x, [a, torch.zeros(0, 5)], ctx(64000)).delta)


def test_registered_shapes_and_cost(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path)
    assert type(loss).__name__ == "DetectionLoss" and loss.backward_scale == 1.0
    out = model.layers[0](x)
    got = loss(out, x, [torch.tensor([[1, .7, .2, .3, .4]]), torch.zeros(0, 5)], ctx(4))
    assert got.delta.shape == out.shape == (2, 48, 1, 1)
    assert got.cost.shape == () and got.cost.dtype == torch.float32
    assert float(got.cost) == pytest.approx(float((got.delta.double() ** 2).sum()), rel=1e-6)


@pytest.mark.parametrize("opts, message", [
    ({"coords": 5}, "training [detection] needs coords=4: Darknet's truth grid has 4 box values "
                    "per cell, and with coords=5 the layer reads it with the wrong stride"),
    ({"forced": 1}, "forced=1 needs num >= 2: Darknet then makes box 1 responsible for small "
                    "truths, past the cell's num=1 boxes"),
])
def test_unsupported_options_are_refused(tmp_path: Path, opts: dict, message: str) -> None:
    coords = opts.get("coords", 4)
    cfg = tmp_path / "d.cfg"
    keys = "\n".join(f"{k}={v}" for k, v in opts.items() if k != "coords")
    cfg.write_text(f"[net]\nwidth=1\nheight=1\nchannels={4 * (coords + 1 + 2)}\n\n[detection]\n"
                   f"classes=2\ncoords={coords}\nnum=1\nside=2\n{keys}\n")
    with pytest.raises(CfgError) as e:
        make_loss(darkcfg.parse(cfg), 0)
    assert e.value.msg == message


def test_bad_targets_name_image_and_row(tmp_path: Path) -> None:
    model, loss, x = small(tmp_path)
    out = model.layers[0](x)
    with pytest.raises(CfgError) as e:
        loss(out, x, [torch.zeros(0, 5), torch.tensor([[0, .5, .5, .1, .1], [2, .5, .5, .1, .1]])],
             ctx(4))
    assert str(e.value) == "target row 1 of image 1: class 2 is not below classes=2"
