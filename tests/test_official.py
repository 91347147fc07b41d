"""The official yolov3-tiny.weights (../shared/official): real weights, Darknet's outputs on dog.jpg."""

from __future__ import annotations

import hashlib

import pytest
import torch

import darkcfg
from oracle import SHARED, OracleCase, needs_shared, rel_err

pytestmark = [needs_shared, pytest.mark.oracle]


def _official():
    return SHARED / "official"


def test_every_layer_on_dog_matches_darknet() -> None:
    root = _official()
    case = OracleCase("yolov3-tiny_dog416", root / "yolov3-tiny_dog416")
    model = darkcfg.load(root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights",
                         out_indices=range(24))
    header = model.last_load.header
    assert (header.major, header.minor, header.revision) == (0, 2, 0)
    assert model.last_load.floats_read == 8_858_734 and model.last_load.floats_left == 0
    with torch.no_grad():
        outs = model(torch.from_numpy(case.input())[None])
    stored = case.outputs()
    for i, out in enumerate(outs):
        key = f"layer_{i:03d}"
        if key in stored:
            assert rel_err(out[0].numpy().reshape(-1), stored[key].reshape(-1)) <= 1e-4, i
    assert "layer_016" in stored and "layer_023" in stored


def test_official_file_round_trips_byte_identical(tmp_path) -> None:
    root = _official()
    model = darkcfg.load(root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights")
    model.save_darknet_weights(tmp_path / "copy.weights")
    digest = hashlib.sha256((tmp_path / "copy.weights").read_bytes()).hexdigest()
    assert digest == "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"


def test_backbone_prefix_of_official_weights() -> None:
    from oracle import REPO

    root = _official()
    with pytest.warns(darkcfg.CfgWarning, match="left unread"):
        model = darkcfg.load(REPO / "cfgs" / "darknet53-tiny.cfg", root / "yolov3-tiny.weights",
                             strict=False, out_indices=[8, 12])
    full = darkcfg.load(root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights", out_indices=[8, 12])
    x = torch.rand(1, 3, 416, 416)
    with torch.no_grad():
        for a, b in zip(model(x), full(x)):  # two instances: the same within float rounding
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
