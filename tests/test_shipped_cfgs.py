"""The shipped backbones are the first layers of Darknet's detectors, layer for layer."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import darkcfg
from oracle import REPO, needs_shared, net_case, rel_err

CFGS = REPO / "cfgs"
# shipped cfg, detector oracle, number of layers, feature-map layers
SHIPPED = [
    ("cspdarknet53.cfg", "yolov4", 117, [54, 85, 116]),
    ("cspdarknet53-tiny.cfg", "yolov4-tiny", 27, [23, 26]),
    ("darknet53-tiny.cfg", "yolov3-tiny", 13, [8, 12]),
]


@pytest.mark.parametrize("cfg,detector,n,features", SHIPPED)
def test_shipped_cfg_parses_cleanly(cfg, detector, n, features) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", darkcfg.CfgWarning)  # no unused options, no oddities
        net = darkcfg.parse(CFGS / cfg)
    assert len(net) == n
    text = (CFGS / cfg).read_text()
    header = text.split("[net]")[0]
    for i in features:  # the header comment documents every feature map
        assert re.search(rf"layer\s+{i}\b", header), i


@needs_shared
@pytest.mark.oracle
@pytest.mark.parametrize("cfg,detector,n,features", SHIPPED)
def test_layer_for_layer_identical_to_the_detector(cfg, detector, n, features) -> None:
    case = net_case(detector)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        ours = darkcfg.parse(CFGS / cfg)
        theirs = darkcfg.parse(case.cfg_path, width=ours.net.width, height=ours.net.height)
    for a, b in zip(ours.layers, theirs.layers[:n]):
        assert (a.type, a.inputs, a.in_shape, a.out_shape, a.options, a.segments) == \
            (b.type, b.inputs, b.in_shape, b.out_shape, b.options, b.segments), a.index
    # ... and Darknet's own layout of the detector agrees on every weights segment
    for spec, ref in zip(ours.layers, case.layout["layers"][:n]):
        assert [(s.kind, s.count) for s in spec.segments] == \
            [(s["kind"], s["count"]) for s in ref["segments"]]


@needs_shared
@pytest.mark.oracle
@pytest.mark.parametrize("cfg,detector,n,features", SHIPPED)
def test_detector_weights_give_darknets_backbone_outputs(cfg, detector, n, features, tmp_path) -> None:
    case = net_case(detector)
    weights = case.write_weights(tmp_path / f"{detector}.weights")
    with pytest.warns(darkcfg.CfgWarning, match="left unread"):
        model = darkcfg.load(CFGS / cfg, weights, strict=False, out_indices=range(n),
                             width=case.meta["input_w"], height=case.meta["input_h"])
    assert model.last_load.floats_left == case.layout["total_floats"] - model.network.weight_count
    with torch.no_grad():
        outs = model(torch.from_numpy(case.input())[None])
    stored = case.outputs("outputs_backbone.npz")
    compared = 0
    for i, out in enumerate(outs):
        key = f"layer_{i:03d}"
        if key in stored:
            assert rel_err(out[0].numpy().reshape(-1), stored[key].reshape(-1)) <= 1e-4, i
            compared += 1
    assert compared >= len(features)
    assert all(f"layer_{i:03d}" in stored for i in features)
