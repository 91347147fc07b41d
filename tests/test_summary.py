"""`darkcfg summary`: strides and receptive fields measured on built models, parameters counted by
torch, BFLOPs counted by torch's FlopCounterMode, feature_info checked against real outputs."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import darkcfg
from darkcfg.cli import main
from darkcfg.features import feature_info
from darkcfg.summary import (format_summary, geometry, input_window, layer_params,
                             summary_dict)
from oracle import REPO, SHARED, micro_cases, needs_shared, net_case

CFGS = REPO / "cfgs"


def _parse(src, **size: int) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(src, **size)


def _build(net: darkcfg.Network, **kw) -> darkcfg.DarknetModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.build(net, **kw)


# --- measuring the receptive field of a built model ----------------------------------------------
#
# All weights positive, biases zero (or a positive constant), activations monotone: a larger
# input can only make every value larger, and an output value changes exactly when the input
# change reaches it. Feeding ones on the half-plane "column < t" changes output pixel o iff its
# first input column is < t; binary search over t finds that column exactly, and likewise the
# last one with "column >= t". Nothing here uses darkcfg.summary.
# Kernel choice must not fake a change. CPU kernels round differently for another batch size,
# thread split, vector width or CPU family, and float32 convolutions may be Winograd or FFT ones
# (NNPACK, oneDNN), which leak rounding noise into outputs whose true value is an exact 0. So the
# model runs in float64 (direct convolutions: an exact 0 stays 0), the unchanged base image rides
# in the same batch as the probes, and "changes" means by more than 1e-5 relative: real changes
# are >= 1e-3 relative here, or any change at all of an exact 0.

def _positive(model: torch.nn.Module, bias: float = 0.0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.fill_(bias)
            elif p.dim() > 1:
                p.copy_((torch.rand(p.shape, generator=g) + 0.5) / p[0].numel())
            else:
                p.fill_(1.0)
    return model


Query = tuple[int, str, int]  # layer, axis ("x" or "y"), output pixel along that axis


def _support(net: darkcfg.Network, queries: list[Query], *, bias: float = 0.0
             ) -> list[tuple[int, int]]:
    """For each query, the first and last input index along its axis that can change that
    output pixel (any channel, in the middle of the other axis). All binary searches run
    together, one batch per step."""
    layers = sorted({q[0] for q in queries})
    model = _positive(_build(net, out_indices=layers).double(), bias)
    s = net.net.input_shape
    extent = {"x": s.w, "y": s.h}

    def values(x: torch.Tensor) -> list[torch.Tensor]:
        """Per query and image: its output pixel, all channels."""
        model.reset_state()
        with torch.no_grad():
            outs = dict(zip(layers, model(x)))
        picked = []
        for layer, axis, o in queries:
            out = net[layer].out_shape
            y = outs[layer].reshape(len(x), out.c, out.h, out.w)
            picked.append(y[:, :, out.h // 2, o] if axis == "x" else y[:, :, o, out.w // 2])
        return picked

    n = len(queries)
    lo = [[0, extent[a]] for _, a, _ in queries]  # "index < t" reaches o at t = [1], not at [0]
    hi = [[0, extent[a]] for _, a, _ in queries]  # "index >= t" reaches o at t = [0], not at [1]
    while any(b - a > 1 for a, b in lo + hi):
        tl = [(a + b) // 2 for a, b in lo]
        th = [(a + b) // 2 for a, b in hi]
        x = torch.zeros(2 * n + 1, s.c, s.h, s.w, dtype=torch.float64)  # image 2n: the base
        for k, (_, axis, _) in enumerate(queries):
            for img, part in ((k, slice(0, tl[k])), (n + k, slice(th[k], None))):
                if axis == "x":
                    x[img, :, :, part] = 1
                else:
                    x[img, :, part, :] = 1
        got = values(x)
        for k in range(n):
            base = got[k][2 * n]
            changed = ((got[k] - base).abs() > 1e-5 * base.abs()).any(1)
            lo[k][1 if changed[k] else 0] = tl[k]
            hi[k][0 if changed[n + k] else 1] = th[k]
    return [(a[1] - 1, b[0]) for a, b in zip(lo, hi)]


def _check(net: darkcfg.Network, layers: list[int] | None = None, axes: str = "xy", *,
           count: int = 5, bias: float = 0.0) -> None:
    """For each layer and axis and `count` neighbouring output pixels, the measured window is
    input_window()'s; the largest is geometry()'s receptive field and they move by its stride."""
    geo = geometry(net)
    layers = list(range(len(net))) if layers is None else layers
    queries: list[Query] = []
    for layer in layers:
        assert geo[layer].scope == "local", (layer, geo[layer])
        out = net[layer].out_shape
        for axis in axes:
            extent = out.w if axis == "x" else out.h
            assert extent >= count, (layer, out)
            start = (extent - count) // 2
            queries += [(layer, axis, o) for o in range(start, start + count)]
    spans = _support(net, queries, bias=bias)
    for (layer, axis, o), span in zip(queries, spans):
        middle = (net[layer].out_shape.h if axis == "x" else net[layer].out_shape.w) // 2
        wx, wy = input_window(net, layer, *((o, middle) if axis == "x" else (middle, o)))
        assert span == (wx if axis == "x" else wy), (layer, axis, o)
    for i in range(0, len(queries), count):
        layer, axis, _ = queries[i]
        got = spans[i:i + count]
        inside = net.net.width if axis == "x" else net.net.height
        assert all(0 < a and b < inside - 1 for a, b in got), (layer, got)  # no border clipping
        g = geo[layer]
        rf, stride = (g.rf_x, g.stride_x) if axis == "x" else (g.rf_y, g.stride_y)
        assert max(b - a + 1 for a, b in got) == rf, (layer, axis, got)
        assert got[-1][0] - got[0][0] == (count - 1) * stride, (layer, axis, got)


DILATION = """
[net]
width=96
height=64
channels=1
[convolutional]
filters=2
size=3
dilation=2
pad=1
activation=leaky
[convolutional]
filters=2
size=5
dilation=3
stride=2
pad=1
activation=linear
[convolutional]
filters=2
size=3
stride_x=2
stride_y=1
pad=1
activation=leaky
[convolutional]
filters=2
size=2
padding=0
activation=leaky
[convolutional]
filters=2
size=2
dilation=2
padding=1
activation=leaky
"""

POOLS = """
[net]
width=160
height=128
channels=1
[maxpool]
size=2
stride=2
[maxpool]
size=3
stride=2
[convolutional]
filters=2
size=1
activation=linear
[maxpool]
size=2
stride=1
[maxpool]
size=3
stride=1
padding=0
[local_avgpool]
size=3
stride=2
[maxpool]
size=4
stride_x=1
stride_y=2
"""

# Branches whose windows are not centred alike: a join covers both, wider than either.
JOINS = """
[net]
width=64
height=64
channels=1
[convolutional]
filters=2
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=1
[maxpool]
size=2
stride=1
[route]
layers=0
[convolutional]
filters=2
size=3
pad=1
activation=leaky
[shortcut]
from=2
[route]
layers=2,5
[convolutional]
filters=2
size=1
activation=linear
[sam]
from=-3
[shortcut]
from=1,3
weights_type=per_channel
weights_normalization=relu
"""

UPSAMPLE = """
[net]
width=64
height=64
channels=1
[convolutional]
filters=2
size=3
stride=2
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[upsample]
stride=2
[convolutional]
filters=2
size=2
padding=0
activation=linear
[upsample]
stride=4
[convolutional]
filters=2
size=3
pad=1
activation=leaky
[route]
layers=2,0
[upsample]
stride=-2
[convolutional]
filters=2
size=3
pad=1
activation=leaky
"""

MISC = """
[net]
width=96
height=96
channels=1
[convolutional]
filters=4
size=3
stride=2
pad=1
antialiasing=1
activation=leaky
[maxpool]
size=2
stride=2
antialiasing=2
[reorg3d]
stride=2
[local]
filters=2
size=3
stride=1
pad=1
activation=leaky
[crop]
crop_height=6
crop_width=5
noadjust=1
"""

XNOR = """
[net]
width=64
height=64
channels=1
[convolutional]
filters=2
size=3
dilation=2
pad=1
xnor=1
activation=linear
"""

# pjreddie's shortcut between maps of different sizes: 32 -> 64 adds at every other pixel only
STRIDED_SHORTCUT = """
[net]
width=64
height=64
channels=1
[convolutional]
filters=2
size=3
pad=1
activation=leaky
[convolutional]
filters=2
size=3
stride=2
pad=1
activation=leaky
[shortcut]
from=0
[upsample]
stride=2
[route]
layers=0
[maxpool]
size=6
stride=2
[route]
layers=3
[shortcut]
from=5
"""

RECURRENT = """
[net]
width=48
height=48
channels=1
[crnn]
size=3
pad=1
output=2
hidden=2
activation=leaky
[conv_lstm]
size=3
pad=1
output=2
peephole=1
"""

# cfg, neighbouring output pixels measured (after x4 upsampling of a x2 one the windows repeat
# every 8 pixels: 9 pixels see every phase and one whole step)
RF_CASES = {"dilation": (DILATION, 5), "pools": (POOLS, 5), "joins": (JOINS, 5),
            "upsample": (UPSAMPLE, 9), "misc": (MISC, 5), "xnor": (XNOR, 5),
            "strided_shortcut": (STRIDED_SHORTCUT, 5)}


@pytest.mark.parametrize("name", sorted(RF_CASES))
def test_receptive_field_and_stride_are_measured_ones(name: str) -> None:
    text, count = RF_CASES[name]
    _check(_parse(text), count=count)


def test_recurrent_conv_layers_per_step() -> None:
    # the peephole conv_lstm reads its new cell through vo: the measurement needs a cell that
    # is not 0 at the base input, hence positive biases
    net = _parse(RECURRENT)
    _check(net, bias=0.1)
    g = geometry(net)
    assert (g[0].rf_x, g[1].rf_x) == (5, 9)  # crnn: 2 convs; conv_lstm with peephole: 2 more


def test_what_the_joins_and_upsampling_cases_exercise() -> None:
    """The cases above are only worth something if the simple rules would get them wrong."""
    g = geometry(_parse(JOINS))
    assert (g[0].rf_x, g[2].rf_x, g[4].rf_x, g[5].rf_x) == (3, 5, 5, 6)  # 6 > max(5, 5)
    g = geometry(_parse(UPSAMPLE))
    assert g[4].stride_x == Fraction(1, 2)
    assert g[3].rf_x == g[2].rf_x + 4  # size 2 after x2 upsampling: 2 source pixels at most
    g = geometry(_parse(XNOR))
    assert g[0].rf_x == 3  # Darknet's XNOR path ignores dilation


def _thin(text: str) -> str:
    """The same cfg with 2 filters per conv: the geometry does not depend on filter counts."""
    return re.sub(r"(?m)^filters\s*=\s*\d+", "filters=2", text)


@pytest.mark.parametrize("cfg,layers", [("darknet53-tiny.cfg", [1, 5, 9, 11, 12]),
                                        ("cspdarknet53-tiny.cfg", [8, 16, 24, 26])])
def test_shipped_backbones_receptive_fields(cfg: str, layers: list[int]) -> None:
    _check(_parse(_thin((CFGS / cfg).read_text()), width=512, height=32), layers, "x")


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("name,heads", [("yolov3-tiny", [16, 23]), ("yolov4-tiny", [30, 37])])
def test_detector_heads_receptive_fields(name: str, heads: list[int]) -> None:
    text = net_case(name).cfg_path.read_text()
    text = re.sub(r"(?m)^classes\s*=\s*\d+", "classes=1", text)
    text = re.sub(r"(?m)^filters\s*=\s*255\b", "filters=18", text)
    text = re.sub(r"(?m)^filters\s*=\s*(?!18\b)\d+", "filters=2", text)
    _check(_parse(text, width=768, height=64), heads, "x", count=3)


SE_BLOCK = """
[net]
width=64
height=64
channels=1
[convolutional]
filters=4
size=3
pad=1
activation=leaky
[avgpool]
[convolutional]
filters=4
size=1
activation=logistic
[scale_channels]
from=0
[convolutional]
filters=2
size=3
pad=1
activation=leaky
[softmax]
"""


def test_global_layers_read_the_whole_input() -> None:
    net = _parse(SE_BLOCK)
    g = geometry(net)
    assert [x.scope for x in g] == ["local", "all", "all", "all", "all", "all"]
    assert g[1].stride_x is None and g[3].stride_x == 1  # [avgpool] is flat; the SE output is not
    # the middle pixel changes whatever edge column is set
    assert _support(net, [(3, "x", 32), (4, "y", 32)], bias=0.1) == [(0, 63), (0, 63)]


def test_yolov2_reorg_reads_rows_far_apart() -> None:
    # Darknet's reorg_cpu reads the buffer with the input's dims: at yolov2's 26x26 some output
    # pixels read every input row, so the geometry says "all" (a space-to-depth would read 2)
    net = _parse("[net]\nwidth=26\nheight=26\nchannels=1\n[convolutional]\nfilters=64\nsize=1\n"
                 "activation=leaky\n[reorg]\nstride=2\n")
    assert geometry(net)[1].scope == "all" and geometry(net)[1].stride_y == 2
    spans = _support(net, [(1, "y", o) for o in range(13)])
    assert (0, 25) in spans


# --- strides of detector heads and feature maps --------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name,heads", [("yolov4-tiny", {30: 32, 37: 16}),
                                        ("yolov4", {139: 8, 150: 16, 161: 32}),
                                        ("yolov3-tiny", {16: 32, 23: 16})])
def test_head_strides(name: str, heads: dict[int, int]) -> None:
    for size in (416, 608):
        net = _parse(net_case(name).cfg_path, width=size, height=size)
        assert net.output_layers == list(heads)
        g = geometry(net)
        for i, stride in heads.items():
            assert size // net[i].out_shape.w == stride  # the shapes agree with the expected
            assert g[i].stride_x == g[i].stride_y == stride


def test_every_stride_matches_the_shapes_of_the_shipped_cfgs() -> None:
    """Where a map's size is the input's divided by an integer, that integer is its stride."""
    for cfg in sorted(CFGS.glob("*.cfg")):
        net = _parse(cfg, width=512, height=256)
        for spec, g in zip(net, geometry(net)):
            out = spec.out_shape
            assert g.stride_x == Fraction(512, out.w) and g.stride_y == Fraction(256, out.h)


# --- parameters -----------------------------------------------------------------------------------

def _torch_params(model: darkcfg.DarknetModel) -> list[int]:
    """Per layer, parameters torch holds that no earlier layer holds (share_index: the owner)."""
    seen: set[int] = set()
    counts = []
    for layer in model.layers:
        n = 0
        for p in layer.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        counts.append(n)
    return counts


DONTLOAD = """
[net]
width=16
height=16
channels=3
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
dontload=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
dontloadscales=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
share_index=1
activation=leaky
[local]
filters=2
size=3
pad=1
dontload=1
[batchnorm]
dontload=1
[crnn]
size=3
pad=1
output=2
hidden=3
batch_normalize=1
dontload=1
[conv_lstm]
size=3
pad=1
output=2
peephole=1
dontload=1
[implicit]
filters=4
dontload=1
[connected]
output=5
batch_normalize=1
dontload=1
[rnn]
output=4
hidden=3
dontload=1
[gru]
output=3
dontload=1
[lstm]
output=3
batch_normalize=1
dontload=1
[shortcut]
from=-2
weights_type=per_channel
weights_normalization=softmax
"""


@pytest.mark.parametrize("cfg", [*sorted(p.name for p in CFGS.glob("*.cfg")), "dontload"])
def test_params_are_torchs(cfg: str) -> None:
    net = _parse(DONTLOAD if cfg == "dontload" else CFGS / cfg)
    model = _build(net, init=False)
    assert [layer_params(s) for s in net] == _torch_params(model)
    assert sum(layer_params(s) for s in net) == sum(p.numel() for p in model.parameters())


def test_params_are_the_weights_without_batchnorm_statistics() -> None:
    net = _parse(CFGS / "darknet53-tiny.cfg")
    for spec in net:
        stats = sum(s.count for s in spec.segments if s.kind in ("mean", "variance"))
        assert layer_params(spec) == spec.weight_count - stats
    model = _build(net, init=False)
    buffers = sum(b.numel() for name, b in model.state_dict().items()
                  if name.endswith(("running_mean", "running_var")))
    assert net.weight_count - buffers == sum(p.numel() for p in model.parameters())


@needs_shared
def test_params_are_torchs_on_every_micro_cfg() -> None:
    checked = 0
    for case in micro_cases():
        try:
            net = _parse(case.cfg_path)
        except darkcfg.CfgError:
            continue
        assert [layer_params(s) for s in net] == _torch_params(_build(net, init=False)), case.name
        checked += 1
    assert checked >= 150


# --- BFLOPs against torch's FlopCounterMode -------------------------------------------------------

def _counted_flops(net: darkcfg.Network) -> dict[int, int]:
    """FLOPs torch counts in each layer's module (2 per multiply-add, convolutions and matmuls)."""
    model = _build(net, out_indices=range(len(net)))
    s = net.net.input_shape
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, s.c, s.h, s.w))
    counts = counter.get_flop_counts()
    return {i: sum(counts.get(f"DarknetModel.layers.{i}", {}).values()) for i in range(len(net))}


def _expected_conv_flops(spec) -> float:
    """Darknet's BFLOPs of a conv layer, as torch counts the same work (see the exceptions)."""
    o = spec.options
    flops = spec.bflops * 1e9
    if spec.type == "convolutional" and o.xnor and o.xnor_bit_path:
        flops *= 32  # Darknet divides an XNOR layer's figure by 32; torch runs it as a float conv
    if spec.type == "convolutional" and o.antialiasing:
        # the blur is a depthwise conv Darknet does not count: 3x3 (or 2x2) per output value
        k = 2 if o.antialiasing == 2 else 3
        flops += 2 * k * k * spec.out_shape.size
    if spec.type == "conv_lstm":
        # Darknet adds 9 (12 with peephole) elementwise operations per output value
        flops -= (12 if o.peephole else 9) * spec.out_shape.size
    return flops


CONV_TYPES = ("convolutional", "crnn", "conv_lstm")


def _check_flops(net: darkcfg.Network) -> int:
    counted = _counted_flops(net)
    checked = 0
    for spec in net:
        if spec.type in CONV_TYPES:
            expected = _expected_conv_flops(spec)
            assert counted[spec.index] == pytest.approx(expected, rel=1e-6), spec.index
            checked += 1
    return checked


@pytest.mark.parametrize("cfg", sorted(p.name for p in CFGS.glob("*.cfg")))
def test_conv_bflops_are_what_torch_counts(cfg: str) -> None:
    assert _check_flops(_parse(CFGS / cfg, width=128, height=128)) >= 7


def test_conv_bflops_exceptions() -> None:
    for text in (MISC, XNOR, RECURRENT, DONTLOAD, DILATION):
        assert _check_flops(_parse(text)) >= 1


# grouped and depthwise convs (enet-coco, efficientnet_b0, resnext152), xnor (tiny-yolo_xnor),
# SPP, PANet, CSP
CORPUS_FLOPS = ["yolov4.cfg", "yolov4-tiny.cfg", "yolov3-spp.cfg", "enet-coco.cfg",
                "resnext152-32x4d.cfg", "tiny-yolo_xnor.cfg", "efficientnet_b0.cfg",
                "csdarknet53-omega.cfg"]


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("name", CORPUS_FLOPS)
def test_conv_bflops_are_what_torch_counts_on_corpus_cfgs(name: str) -> None:
    path = SHARED / "darknet-cfgs" / name
    assert _check_flops(_parse(path, width=64, height=64)) >= 9


@needs_shared
def test_conv_bflops_are_what_torch_counts_on_micro_cfgs() -> None:
    checked = 0
    for case in micro_cases():
        if case.folder.parent.name not in ("conv", "recurrent"):
            continue
        try:
            net = _parse(case.cfg_path)
        except darkcfg.CfgError:
            continue
        checked += _check_flops(net)
    assert checked >= 40


# --- the table and its JSON -----------------------------------------------------------------------

def _rows(text: str) -> list[list[str]]:
    return [l.split() for l in text.splitlines() if re.match(r"^\s+\d+\s+\w", l)]


def test_table_and_json_agree() -> None:
    net = _parse(CFGS / "cspdarknet53-tiny.cfg")
    d = json.loads(json.dumps(summary_dict(net)))
    table = format_summary(net)
    rows = _rows(table)
    assert len(rows) == len(d["layers"]) == len(net)
    for row, layer in zip(rows, d["layers"]):
        assert int(row[0]) == layer["index"]
        params, bflops, rf, stride = row[-1], row[-2], row[-3], row[-4]
        assert int(params.replace(",", "")) == layer["params"]
        assert float(bflops) == pytest.approx(layer["bflops"], abs=5e-4)
        assert rf == str(layer["receptive_field"][0])  # square
        assert stride == str(layer["out_stride"][0])
        assert f"{layer['output_shape'][2]} x {layer['output_shape'][1]} x " \
               f"{layer['output_shape'][0]}" in " ".join(row)
    t = d["totals"]
    assert t["layers"] == 27 and t["outputs"] == [26]
    model = _build(net, init=False)
    assert t["params"] == sum(p.numel() for p in model.parameters())
    assert f"{t['params']:,} params" in table
    assert table.splitlines()[-1] == f"Total BFLOPS {t['bflops']:5.3f}"


def test_json_layer_fields() -> None:
    d = summary_dict(_parse(DILATION))
    conv = d["layers"][1]
    assert (conv["filters"], conv["size"], conv["stride"], conv["dilation"]) == (2, 5, 2, 3)
    assert d["layers"][2]["stride"] == [2, 1] and d["layers"][2]["out_stride"] == [4, 2]
    assert conv["inputs"] == [0] and d["layers"][0]["inputs"] == [-1]
    assert conv["input_shape"] == [2, 64, 96] and conv["output_shape"] == [2, 32, 48]
    g = summary_dict(_parse(SE_BLOCK))["layers"]
    assert g[1]["receptive_field"] == "all" and g[1]["out_stride"] is None
    up = summary_dict(_parse(UPSAMPLE))["layers"][4]
    assert up["out_stride"] == [0.5, 0.5]


# --- features for your own head -------------------------------------------------------------------

def _measured(model: darkcfg.DarknetModel, size: int) -> list[tuple[int, int]]:
    """(channels, reduction) of what the model really returns for a size x size input."""
    with torch.no_grad():
        outs = model(torch.rand(1, 3, size, size))
    return [(y.shape[1], size // y.shape[-1]) for y in outs]


def test_feature_info_of_a_backbone_with_out_indices() -> None:
    model = _build(_parse(CFGS / "cspdarknet53.cfg", width=256, height=256),
                   out_indices=[54, 85, -1])
    info = model.feature_info
    assert info.indices() == [54, 85, 116]
    assert list(zip(info.channels(), info.reduction())) == _measured(model, 256) \
        == [(256, 8), (512, 16), (512, 32)]
    assert info.channels(1) == 512 and info.reduction([0, 2]) == [8, 32]
    assert info[2].shape == (512, 8, 8)
    assert info.get_dicts(keys=("index", "channels")) == [
        {"index": 54, "channels": 256}, {"index": 85, "channels": 512},
        {"index": 116, "channels": 512}]


@needs_shared
def test_feature_info_of_a_detector() -> None:
    model = _build(_parse(net_case("yolov4-tiny").cfg_path, width=416, height=416))
    info = model.feature_info
    assert info.indices() == [30, 37] == model.out_indices
    assert list(zip(info.channels(), info.reduction())) == _measured(model, 416) \
        == [(255, 32), (255, 16)]


def test_feature_info_function() -> None:
    net = _parse(CFGS / "darknet53-tiny.cfg")
    info = feature_info(net, [8, 12])
    assert len(info) == 2 and info.channels() == [256, 1024] and info.reduction() == [16, 32]
    assert info[1].receptive_field == (254, 254)
    assert feature_info(net).indices() == net.output_layers == [12]
    with pytest.raises(IndexError):
        feature_info(net, [13])
    flat = feature_info(_parse(SE_BLOCK), [1, 3])
    assert flat.reduction() == [64, 1] and flat[0].receptive_field == "all"


# --- command line ---------------------------------------------------------------------------------

def _run(capsys, *args: str) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_table(capsys) -> None:
    cfg = str(CFGS / "darknet53-tiny.cfg")
    code, out, _ = _run(capsys, "summary", cfg, "--width", "320", "--height", "256")
    assert code == 0
    assert out.rstrip("\n") == format_summary(_parse(cfg, width=320, height=256))
    rows = _rows(out)
    assert [int(r[0]) for r in rows] == list(range(13))
    assert rows[12][-4:-2] == ["32", "254"]  # stride, RF
    assert "outputs: 12 (stride 32)" in out


def test_cli_json(capsys) -> None:
    cfg = str(CFGS / "darknet53-tiny.cfg")
    code, out, _ = _run(capsys, "summary", cfg, "--json", "--width", "320")
    assert code == 0
    d = json.loads(out)
    assert d == json.loads(json.dumps(summary_dict(_parse(cfg, width=320))))
    assert d["input"] == {"width": 320, "height": 416, "channels": 3}
    assert d["layers"][12]["output_shape"] == [1024, 13, 10]


def test_cli_errors_are_one_line(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=0\n")
    code, out, err = _run(capsys, "summary", str(bad))
    assert code == 1 and out == ""
    assert err.startswith("darkcfg: error: filters=0 must be positive") and err.count("\n") == 1


# --- what has no rule ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Opts:
    pass


def _parse_own(opts, ctx) -> darkcfg.Parsed:
    return darkcfg.Parsed(_Opts(), out_shape=ctx.in_shape)


OWN = """
[net]
width=64
height=32
channels=1
[convolutional]
filters=2
size=3
stride=2
pad=1
[summary_test_own]
[convolutional]
filters=2
size=3
pad=1
"""


def test_section_types_without_a_rule_are_unknown() -> None:
    darkcfg.register_section("summary_test_own", _parse_own, replace=True)
    net = _parse(OWN)
    assert [g.scope for g in geometry(net)] == ["local", "unknown", "unknown"]
    assert _rows(format_summary(net))[2][-4:-2] == ["?", "?"]
    layer = summary_dict(net)["layers"][2]
    assert layer["receptive_field"] is None and layer["out_stride"] is None
    info = feature_info(net, [2])
    assert info.reduction() == [2] and info[0].receptive_field is None  # from the shapes


def test_joining_maps_of_different_strides_is_unknown() -> None:
    # equal sizes, strides 2 and 1: the windows drift apart along the map, no single figure
    net = _parse("[net]\nwidth=64\nheight=64\nchannels=1\n"
                 "[convolutional]\nfilters=2\nsize=1\n"
                 "[convolutional]\nfilters=2\nsize=3\nstride=2\npad=1\n"
                 "[route]\nlayers=0\n"
                 "[convolutional]\nfilters=2\nsize=33\npadding=0\n"
                 "[route]\nlayers=1,3\n")
    g = geometry(net)
    assert (g[1].stride_x, g[3].stride_x, g[3].rf_x) == (2, 1, 33)
    assert g[4].scope == "unknown"
