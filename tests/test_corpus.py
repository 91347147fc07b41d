"""The public Darknet cfg corpus (../shared/darknet-cfgs): every cfg Darknet can run parses, builds,
runs and prints its table; the few Darknet cannot run get a located error saying why."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.cli import main
from oracle import SHARED, needs_shared

pytestmark = needs_shared

ROOT = SHARED / "darknet-cfgs" if SHARED else Path("/nonexistent")
CORPUS = sorted(ROOT.rglob("*.cfg")) if SHARED else []
CSP = "extra/WongKinYiu__CrossStagePartialNetworks/in progress/"
YOLOR = "extra/WongKinYiu__yolor/cfg/"

# Cfgs that Darknet itself cannot run, and the start of the error darkcfg gives for each.
EXPECTED_ERRORS = {
    CSP + "csresnet50-elastic-panet-spp.cfg": "route inputs differ in size",
    CSP + "csresnext50-elastic-panet-spp.cfg": "route inputs differ in size",
    CSP + "yolov3-spp-matrix.cfg": "share_index=",
    YOLOR + "yolor_csp.cfg": "unknown section type [implicit_add]: a yolor",
    YOLOR + "yolor_csp_x.cfg": "unknown section type [implicit_add]: a yolor",
    YOLOR + "yolor_p6.cfg": "unknown section type [implicit_add]: a yolor",
    YOLOR + "yolor_w6.cfg": "unknown section type [implicit_add]: a yolor",
    "extra/WongKinYiu__PyTorch_YOLOv4/cfg/yolov4-tiny.cfg": "unknown section type [route_lhalf]",
    # yolo9000.cfg finds ../shared's 9k.tree beside it; pjreddie's darknet9000.cfg has none near it.
    "extra/pjreddie__darknet/cfg/darknet9000.cfg": "tree=data/9k.tree: tree file not found",
}
RUNNABLE = [p for p in CORPUS if p.relative_to(ROOT).as_posix() not in EXPECTED_ERRORS]


def _id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _parse(path: Path, **size: int) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(path, **size)


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 239
    assert all((ROOT / name).exists() for name in EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_cfgs_darknet_cannot_run_get_a_located_error(name: str) -> None:
    path = ROOT / name
    with pytest.raises(darkcfg.CfgError) as info:
        _parse(path)
    err = info.value
    assert err.msg.startswith(EXPECTED_ERRORS[name]), err.msg
    assert err.path == str(path) and err.lineno is not None and err.section is not None


@pytest.mark.parametrize("path", RUNNABLE, ids=_id)
def test_every_other_cfg_parses(path: Path) -> None:
    net = _parse(path)
    assert len(net) > 0
    for spec in net:
        assert spec.out_shape.size > 0
        assert all(-1 <= j < spec.index for j in spec.inputs)
    assert net.total_bflops >= 0


def _small(path: Path) -> darkcfg.Network:
    """The cfg at a small input size where its layers allow one, else at its own size."""
    native = _parse(path)
    w, h = native.net.width, native.net.height
    if w * h == 0 or native.total_bflops < 2.0:
        return native
    for size in (128, 256, 512):
        if size >= max(w, h):
            break
        try:
            net = _parse(path, width=size, height=size)
        except darkcfg.CfgError:
            continue  # e.g. [connected] or mismatched routes at this size
        if [l.type for l in net] == [l.type for l in native]:
            return net
    return native


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNNABLE, ids=_id)
def test_every_other_cfg_builds_and_runs(path: Path) -> None:
    net = _small(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        model = darkcfg.build(net)
    s = net.net.input_shape
    x = torch.rand(1, s.c, s.h, s.w)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == len(net.output_layers)
    for i, out in zip(model.out_indices, outs):
        assert out.shape[0] == 1 and out[0].numel() == net[i].out_shape.size, i
        assert torch.isfinite(out).all(), i


@pytest.mark.parametrize("path", RUNNABLE, ids=_id)
def test_build_prints_the_table_and_darknets_total(path: Path) -> None:
    net = _parse(path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["build", str(path)]) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == len(net) + 3
    assert lines[-1] == f"Total BFLOPS {net.total_bflops:5.3f}"


# --- yolo9000: the [region] softmax tree over Darknet's own 9k.tree ------------------------------

def _tree_boxes_literal(out: np.ndarray, num: int, classes: int, parent: list[int],
                        thresh: float, hier: float) -> np.ndarray:
    """get_region_boxes' tree branch, from the [region] output of one image (num*entries, H, W):
    per detection (cell-major, then anchor), each node times its parent's updated value in node
    order, then only the highest-numbered node above `hier` is kept, where objectness > thresh.
    Vectorised over detections only; the node loops are Darknet's."""
    entries = out.shape[0] // num
    p = out.reshape(num, entries, -1).transpose(2, 0, 1).reshape(-1, entries)  # [cell*num+a]
    scale, pred = p[:, 4], p[:, 5:5 + classes].astype(np.float32).copy()
    for j in range(classes):
        if parent[j] >= 0:
            pred[:, j] *= pred[:, parent[j]]
    found = np.zeros(len(pred), bool)
    for j in range(classes - 1, -1, -1):
        keep = ~found & (pred[:, j] > hier)
        found |= keep
        pred[~keep, j] = 0
    return np.where((scale > thresh)[:, None], pred, np.float32(0))


def test_yolo9000_runs_and_decodes_through_the_tree() -> None:
    net = _parse(ROOT / "yolo9000.cfg", width=128, height=128)
    head = len(net) - 1
    o = net[head].options
    tree = o.tree
    assert (net[head].type, o.classes, o.num, tree.n) == ("region", 9418, 3, 9418)
    assert tree.groups == 1846 and sum(tree.leaf) == 7573 and tree.group_size[0] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        model = darkcfg.build(net, out_indices=[head - 1, head], init=False)
    model.init_weights(seed=0)  # fixed, so the counts below do not depend on the global RNG
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    conv = model.layers[head - 1].conv
    with torch.no_grad():
        pre, _ = model(x)
        k = 2 / pre.std()  # Darknet's init gives logits ~1e-5: make them O(1) so classes differ
        conv.weight.mul_(k)
        conv.bias.mul_(k)
        pre, out = model(x)
    assert out.shape == (2, 3 * 9423, 4, 4) and torch.isfinite(out).all()
    y = out.reshape(2, 3, 9423, 4, 4).double()
    # softmax per group of siblings: every group sums to 1 (a flat softmax sums to 1 over all 9418)
    sums = torch.zeros(2, 3, tree.groups, 4, 4, dtype=torch.float64).index_add_(
        2, torch.tensor(tree.group), y[:, :, 5:])
    assert torch.allclose(sums, torch.ones((), dtype=torch.float64), atol=1e-5)
    p = pre.reshape(2, 3, 9423, 4, 4)
    for g in (0, 1, 1845):  # the roots, the first and the last group of siblings
        a, b = 5 + tree.group_offset[g], 5 + tree.group_offset[g] + tree.group_size[g]
        assert torch.allclose(out.reshape(2, 3, 9423, 4, 4)[:, :, a:b],
                              torch.softmax(p[:, :, a:b], 2), atol=1e-6), g

    thresh, hier = 0.5, 0.3
    raws = darkcfg.decode(model, [pre, out], thresh=thresh, hier_thresh=hier)
    depth = [0] * tree.n
    for j, par in enumerate(tree.parent):
        depth[j] = depth[par] + 1 if par >= 0 else 0
    deep = 0
    for b, raw in enumerate(raws):
        assert len(raw) == 4 * 4 * 3 and raw.probs.shape == (48, 9418)
        assert torch.isfinite(raw.boxes).all() and (raw.boxes[:, 2:] > 0).all()
        assert torch.equal(raw.objectness, torch.ones(48))  # Darknet sets 1 for [region]
        want = _tree_boxes_literal(out[b].numpy(), 3, 9418, list(tree.parent), thresh, hier)
        np.testing.assert_allclose(raw.probs.numpy(), want, rtol=1e-5, atol=0)
        chosen = raw.probs.count_nonzero(1)
        assert chosen.max() == 1 and chosen.sum() >= 5, chosen.tolist()  # one node per box
        for i in chosen.nonzero().squeeze(1).tolist():
            j = int(raw.probs[i].nonzero())
            deep += depth[j] > 0
            assert raw.probs[i, j] > hier
    assert deep >= 3  # kept nodes below the roots: their value is the product down the tree

    dets = darkcfg.detect_batch(model, x, thresh=thresh, nms=0.45, hier_thresh=hier)
    assert len(dets) == 2 and all(dets)
    for b, found in enumerate(dets):
        for d in found:  # each one of decode's kept nodes (NMS only drops or zeroes them)
            assert 0 <= d.class_id < 9418 and d.name is None and d.prob > hier
            kept = [v for v in raws[b].probs[:, d.class_id].tolist() if v]
            assert any(d.prob == pytest.approx(v, rel=1e-5) for v in kept), (d, kept)
