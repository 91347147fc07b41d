"""The public Darknet cfg corpus (../shared/darknet-cfgs): every cfg Darknet can run parses, builds,
runs and prints its table; the few Darknet cannot run get a located error saying why."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

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
    # The shared 9k.tree has 512-byte blocks of zeros; darknet9000's tree file is not shared at all.
    "yolo9000.cfg": "tree=data/9k.tree: the tree file contains NUL bytes",
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
