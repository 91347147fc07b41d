"""The six oracle nets: every layer matches Darknet's own output within 1e-4 relative."""

from __future__ import annotations

import warnings

import pytest
import torch

import darkcfg
from oracle import NETS, needs_shared, net_case, rel_err, sample_err

pytestmark = [needs_shared, pytest.mark.oracle]

TOL = 1e-4


MODES = ["plain", "fused", "fused-channels-last"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NETS)
def test_every_layer_matches_darknet(name: str, mode: str, tmp_path) -> None:
    """Also after fuse() (BN folded, in-place activations) and in channels-last memory format."""
    case = net_case(name)
    meta = case.meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        net = darkcfg.parse(case.cfg_path, width=meta["input_w"], height=meta["input_h"])
    model = darkcfg.build(net, out_indices=range(len(net))).eval()
    model.load_darknet_weights(case.write_weights(tmp_path / "w.weights"))
    x = torch.from_numpy(case.input())[None]
    if mode != "plain":
        model.fuse()
    if mode == "fused-channels-last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        outs = model(x)
    stored = case.outputs()
    assert len(outs) == len(meta["layers"])
    checked_full = 0
    for i, out in enumerate(outs):
        ours = out[0].numpy().reshape(-1)
        layer = meta["layers"][i]
        assert ours.size == layer["stats"]["n"], f"layer {i} size"
        key = f"layer_{i:03d}"
        if key in stored:
            err = rel_err(ours, stored[key].reshape(-1))
            checked_full += 1
        else:
            err = sample_err(ours, layer["stats"])
        assert err <= TOL, f"{name} layer {i} ({layer['type']}): relative error {err:.3g}"
    for i in meta["output_layers"]:
        assert f"layer_{i:03d}" in stored
    assert checked_full >= len(meta["output_layers"])


@pytest.mark.parametrize("name", NETS)
def test_output_layers_are_darknets(name: str) -> None:
    case = net_case(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        net = darkcfg.parse(case.cfg_path)
    expected = case.meta["output_layers"]
    assert net.output_layers == expected


def test_default_forward_returns_output_layers(tmp_path) -> None:
    case = net_case("yolov3-tiny")
    model = darkcfg.load(case.cfg_path, case.write_weights(tmp_path / "w.weights"),
                         width=case.meta["input_w"], height=case.meta["input_h"])
    with torch.no_grad():
        outs = model(torch.from_numpy(case.input())[None])
    stored = case.outputs()
    assert [tuple(o.shape) for o in outs] == [(1, 255, 4, 4), (1, 255, 8, 8)]
    for i, out in zip(case.meta["output_layers"], outs):
        assert rel_err(out[0].numpy().reshape(-1), stored[f"layer_{i:03d}"].reshape(-1)) <= TOL
