"""ONNX export (darkcfg.onnx_export, `darkcfg export`) and in-graph box decoding (darkcfg.boxes).

Every exported graph is run in onnxruntime and compared with the unfused PyTorch model (the file
holds the BatchNorm-fused network), at two input sizes and two batch sizes from one file where the
export is dynamic. Raw outputs: max |onnx - torch| <= 1e-4 * max |torch| per output. Decoded boxes:
against darkcfg.detection.decode (itself checked against Darknet's get_network_boxes) without its
threshold, elementwise within rtol 1e-4, with an atol of 1e-6 for entries near 0 (probabilities
are products of float32 values, ~1e-7 apart after fusion and float32 instead of double exp).
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import darkcfg
from darkcfg.boxes import BoxDecoder
from darkcfg.cli import main
from darkcfg.detection import decode
from darkcfg.onnx_export import MISH_OPSET, export_onnx
from oracle import REPO, SHARED, micro_cases, needs_shared

_EXTRA = "ONNX tests need the test extra: pip install -e '.[test]'"
onnx = pytest.importorskip("onnx", reason=_EXTRA)
ort = pytest.importorskip("onnxruntime", reason=_EXTRA)

REL = 1e-4
NO_THRESH = float("-inf")


# --- helpers -----------------------------------------------------------------------------------

def _lively(model: darkcfg.DarknetModel, seed: int = 0) -> darkcfg.DarknetModel:
    """Seeded Darknet init, scaled to He's variance (Darknet's uniform ±sqrt(2/fan_in) shrinks
    activations ~3x per layer, to ~1e-7 at the end of a backbone), plus random BatchNorm
    statistics so that fusing BN changes every weight."""
    model.init_weights(seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(math.sqrt(3))
                if m.bias is not None:
                    m.bias.uniform_(-0.2, 0.2, generator=g)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.8, 1.2, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.8, 1.2, generator=g)
    return model


def _build(cfg, seed: int = 0, **size) -> darkcfg.DarknetModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return _lively(darkcfg.build(cfg, **size), seed)


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _input(b: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _assert_raw_outputs_match(model, session, b: int, h: int, w: int) -> None:
    x = _input(b, h, w)
    with torch.no_grad():
        ref = model(x)
    got = session.run(None, {"images": x.numpy()})
    assert len(got) == len(ref)
    for r, o in zip(ref, got):
        r = r.numpy()
        assert o.shape == r.shape
        err = np.abs(o - r).max() / np.abs(r).max()
        assert err <= REL, (b, h, w, err)


def _reference_rows(model, x: torch.Tensor) -> torch.Tensor:
    """decode() without threshold, as (N, boxes, 5 + classes) boxes relative to the input."""
    w, h = x.shape[-1], x.shape[-2]
    with torch.no_grad():
        raws = decode(model, model(x), thresh=NO_THRESH, input_size=(w, h))
    rows = []
    for r in raws:
        boxes = r.boxes.clone()
        boxes[r.pixels] /= torch.tensor([w, h, w, h], dtype=boxes.dtype)  # [detection]: pixels
        rows.append(torch.cat((boxes, r.objectness[:, None], r.probs), 1))
    return torch.stack(rows)


def _assert_rows_match(got, ref: torch.Tensor) -> None:
    torch.testing.assert_close(torch.as_tensor(got), ref, rtol=REL, atol=1e-6)


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n"

# three heads: [yolo] with scale_x_y, [yolo] with new_coords, [Gaussian_yolo] with yolo_point
YOLO_HEADS = NET + """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish

[convolutional]
filters=24
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=3
num=6
scale_x_y=1.05

[route]
layers=-3

[maxpool]
size=2
stride=2

[convolutional]
filters=16
size=1
activation=logistic

[yolo]
mask=3,4
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=3
num=6
new_coords=1
scale_x_y=2.0

[route]
layers=-3

[convolutional]
filters=24
size=1
activation=linear

[Gaussian_yolo]
mask=0,1
anchors=10,14, 23,27, 37,58
classes=3
num=3
yolo_point=left_top
"""

REGION = NET + """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=16
size=1
activation=linear

[region]
anchors=1.08,1.19, 3.42,4.41
classes=3
coords=4
num=2
softmax=1
"""

# coords=5: Darknet reads each anchor with a stride of classes + 5, across the entries
REGION_COORDS5 = REGION.replace("filters=16", "filters=18").replace("coords=4",
                                                                    "coords=5\nclassfix=-1")

# yolov1: a [connected] layer fixes the input size
DETECTION = NET + """
[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky

[connected]
output=52
activation=linear

[detection]
classes=3
coords=4
num=2
side=2
softmax=1
sqrt=1
"""

MISH = NET + """
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=mish

[convolutional]
filters=4
size=1
activation=mish
"""

HEAD_CFGS = {"yolo": (YOLO_HEADS, [(64, 64), (96, 32)]),
             "region": (REGION, [(64, 64), (32, 96)]),
             "region_coords5": (REGION_COORDS5, [(64, 64), (128, 32)]),
             "detection": (DETECTION, [(8, 8)])}


# --- raw outputs: shipped cfgs and yolov4-tiny -------------------------------------------------

SHIPPED = [pytest.param("darknet53-tiny.cfg"), pytest.param("cspdarknet53-tiny.cfg"),
           pytest.param("cspdarknet53.cfg", marks=pytest.mark.slow)]


def _export_and_compare_at_two_sizes(cfg, tmp_path: Path) -> None:
    """Build at 64x64, export once with dynamic shapes, run at 64 (batch 2) and 96 (batch 1)."""
    model = _build(cfg, width=64, height=64)
    path = tmp_path / "model.onnx"
    done = export_onnx(model, path, dynamic=True)
    assert not model.fused  # the export fused a copy
    session = _session(path)
    _assert_raw_outputs_match(model, session, 2, 64, 64)
    _assert_raw_outputs_match(model, session, 1, 96, 96)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert _dims(graph.input[0]) == ["batch", 3, "height", "width"]
    assert [o.name for o in graph.output] == [f"out_{i}" for i in model.out_indices]
    for o, i in zip(graph.output, model.out_indices):
        k = 64 // model.network[i].out_shape.h
        assert _dims(o) == ["batch", model.network[i].out_shape.c, f"height/{k}", f"width/{k}"]
    assert done.outputs == tuple((o.name, tuple(_dims(o))) for o in graph.output)
    assert "BatchNormalization" not in _ops(path)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cfg_matches_onnxruntime_at_two_sizes(name, tmp_path) -> None:
    _export_and_compare_at_two_sizes(REPO / "cfgs" / name, tmp_path)


@needs_shared
@pytest.mark.slow
def test_yolov4_tiny_matches_onnxruntime_at_two_sizes(tmp_path) -> None:
    _export_and_compare_at_two_sizes(SHARED / "darknet-cfgs" / "yolov4-tiny.cfg", tmp_path)


def test_static_export_has_fixed_shapes(tmp_path) -> None:
    model = _build(REPO / "cfgs" / "darknet53-tiny.cfg", width=96, height=64)
    path = tmp_path / "static.onnx"
    export_onnx(model, path)
    graph = onnx.load(str(path)).graph
    assert _dims(graph.input[0]) == [1, 3, 64, 96]
    assert _dims(graph.output[0]) == [1, 1024, 2, 3]
    _assert_raw_outputs_match(model, _session(path), 1, 64, 96)
    with pytest.raises(Exception, match=r"invalid dimensions for input: images"):  # fixed size
        _session(path).run(None, {"images": _input(1, 96, 96).numpy()})


# --- activations: Mish as one node -------------------------------------------------------------

@pytest.mark.parametrize("opset", [None, MISH_OPSET, 17])
def test_mish_is_one_onnx_node_from_opset_18(opset, tmp_path) -> None:
    model = _build(MISH.format(w=16, h=16))
    path = tmp_path / "mish.onnx"
    done = export_onnx(model, path, opset=opset, dynamic=True)
    proto = onnx.load(str(path))
    written = {o.domain: o.version for o in proto.opset_import}[""]
    assert written == done.opset and (opset is None or written == opset)
    ops = _ops(path)
    if written >= MISH_OPSET:
        assert ops.count("Mish") == 2 and "Softplus" not in ops
    else:  # x * tanh(softplus(x))
        assert "Mish" not in ops and ops.count("Softplus") == 2 and ops.count("Tanh") == 2
    session = _session(path)
    _assert_raw_outputs_match(model, session, 1, 16, 16)
    _assert_raw_outputs_match(model, session, 2, 32, 48)


@pytest.mark.slow
def test_every_activation_exports_and_matches_onnxruntime(tmp_path) -> None:
    from darkcfg.activations import ACTIVATIONS

    text = NET.format(w=8, h=8) + "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n"
    text += "".join(f"[activation]\nactivation={a}\n[route]\nlayers=0\n" for a in ACTIVATIONS)
    model = darkcfg.build(text, out_indices=[1 + 2 * i for i in range(len(ACTIVATIONS))])
    with torch.no_grad():  # the conv passes the input on x10: values in [-30, 30]
        model.layers[0].conv.weight.copy_(torch.eye(3)[:, :, None, None] * 10)
    path = tmp_path / "acts.onnx"
    export_onnx(model, path, dynamic=True)
    x = torch.linspace(-3, 3, 2 * 3 * 16 * 16).reshape(2, 3, 16, 16)
    got = _session(path).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    for name, r, o in zip(ACTIVATIONS, ref, got):
        r = r.numpy()
        assert np.abs(o - r).max() <= REL * max(np.abs(r).max(), 1e-6), name


# --- box decoding ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(HEAD_CFGS))
def test_box_decoder_is_decode_without_threshold(name) -> None:
    text, sizes = HEAD_CFGS[name]
    for w, h in sizes:
        model = _build(text.format(w=w, h=h), seed=3)
        x = _input(2, h, w)
        with torch.no_grad():
            got = BoxDecoder(model)(x)
        assert got.shape[-1] == 5 + 3
        _assert_rows_match(got, _reference_rows(model, x))


def _micro_head_cases():
    return [c for c in micro_cases() if any(c.folder.glob("boxes_letterbox*.json"))]


@needs_shared
@pytest.mark.parametrize("case", _micro_head_cases(), ids=lambda c: c.name)
def test_box_decoder_on_darknets_micro_heads(case, tmp_path) -> None:
    """The oracle's head nets with their Darknet weights and input."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        net = darkcfg.parse(case.cfg_path, width=case.meta["input_w"],
                            height=case.meta["input_h"])
    model = darkcfg.build(net)
    model.load_darknet_weights(case.write_weights(tmp_path / "w.weights"))
    s = net.net.input_shape
    x = torch.from_numpy(case.input()).reshape(1, s.c, s.h, s.w)
    with torch.no_grad():
        got = BoxDecoder(model)(x)
    _assert_rows_match(got, _reference_rows(model, x))


@pytest.mark.parametrize("name", [pytest.param("yolo", marks=pytest.mark.slow)]  # 3 heads: ~7 s
                         + [n for n in HEAD_CFGS if n != "yolo"])
def test_decoded_graph_matches_decode_at_two_sizes(name, tmp_path) -> None:
    text, sizes = HEAD_CFGS[name]
    w0, h0 = sizes[0]
    model = _build(text.format(w=w0, h=h0), seed=3)
    path = tmp_path / "decoded.onnx"
    done = export_onnx(model, path, dynamic=True, decode=True)
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["detections"]
    free = name != "detection"  # [connected] fixes yolov1's input size: only the batch varies
    assert _dims(graph.input[0]) == ["batch", 3] + (["height", "width"] if free else [h0, w0])
    assert _dims(graph.output[0])[::2] == ["batch", 8]
    assert done.decoded
    session = _session(path)
    for w, h in sizes:
        for b in (1, 2):
            x = _input(b, h, w)
            _assert_rows_match(session.run(None, {"images": x.numpy()})[0],
                               _reference_rows(model, x))


@needs_shared
@pytest.mark.slow
def test_yolov4_tiny_decoded_graph_matches_decode(tmp_path) -> None:
    model = _build(SHARED / "darknet-cfgs" / "yolov4-tiny.cfg", width=96, height=96)
    path = tmp_path / "decoded.onnx"
    export_onnx(model, path, dynamic=True, decode=True)
    session = _session(path)
    for b, size in ((1, 96), (2, 128)):
        x = _input(b, size, size)
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (b, 3 * ((size // 32) ** 2 + (size // 16) ** 2), 85)
        _assert_rows_match(got, _reference_rows(model, x))


# --- errors ------------------------------------------------------------------------------------

def test_missing_exporter_packages_are_one_clear_error(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript raises ImportError
    model = darkcfg.build(MISH.format(w=16, h=16))
    with pytest.raises(ModuleNotFoundError, match=r'onnxscript .*pip install "darkcfg\[export\]"'):
        export_onnx(model, tmp_path / "m.onnx")
    cfg = tmp_path / "m.cfg"
    cfg.write_text(MISH.format(w=16, h=16))
    assert main(["export", str(cfg), "--onnx", str(tmp_path / "m.onnx")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("darkcfg: error: ONNX export needs the onnxscript package")
    assert 'pip install "darkcfg[export]"' in err
    assert not (tmp_path / "m.onnx").exists()


def test_decode_needs_detection_heads(tmp_path) -> None:
    model = darkcfg.build(MISH.format(w=16, h=16))
    with pytest.raises(ValueError, match=r"no \[yolo\], \[Gaussian_yolo\], \[region\] or "
                                         r"\[detection\] layer to decode"):
        export_onnx(model, tmp_path / "m.onnx", decode=True)
    yolo = darkcfg.build(YOLO_HEADS.format(w=32, h=32), out_indices=[2])
    with pytest.raises(ValueError, match=r"does not output detection head\(s\) \[6, 9\]"):
        BoxDecoder(yolo)
    from darkcfg.boxes import raw_detections

    with pytest.raises(ValueError, match=r"expected one image's rows .* got shape \(1, 10, 8\)"):
        raw_detections(torch.zeros(1, 10, 8))


def test_decode_rejects_the_yolo9000_tree_and_mixed_class_counts(tmp_path) -> None:
    (tmp_path / "t.tree").write_text("a -1\nb -1\nc 0\n")
    cfg = tmp_path / "tree.cfg"
    cfg.write_text(REGION.format(w=32, h=32).replace("softmax=1", "tree=t.tree"))
    with pytest.raises(darkcfg.CfgError, match=r"tree= \(yolo9000's hierarchy\) cannot be "
                                               r"decoded in the graph.*tree\.cfg line \d+"):
        BoxDecoder(darkcfg.build(cfg))
    mixed = YOLO_HEADS.replace("classes=3\nnum=3", "classes=2\nnum=3").replace(
        "filters=24\nsize=1\nactivation=linear\n\n[Gaussian_yolo]",
        "filters=22\nsize=1\nactivation=linear\n\n[Gaussian_yolo]")
    with pytest.raises(darkcfg.CfgError, match=r"predicts 2 classes, but layer 2 predicts 3"):
        BoxDecoder(darkcfg.build(mixed.format(w=32, h=32)))


def test_bad_opsets_are_errors(tmp_path) -> None:
    model = darkcfg.build(MISH.format(w=16, h=16))
    with pytest.raises(ValueError, match=r"opset 99 is outside what the installed onnx"):
        export_onnx(model, tmp_path / "m.onnx", opset=99)
    # Darknet's maxpool pads on one side: the exporter writes Pad-18, which ONNX's converter
    # cannot take below 18. The error says so instead of writing a file with another opset.
    pooled = darkcfg.build(MISH.format(w=16, h=16) + "[maxpool]\nsize=2\nstride=2\n")
    with pytest.raises(ValueError, match=r"could not write opset 17 .*use opset 18 or later"):
        export_onnx(pooled, tmp_path / "p.onnx", opset=17)
    assert not (tmp_path / "p.onnx").exists()


def test_recurrent_layers_are_refused(tmp_path) -> None:
    model = darkcfg.build("[net]\ninputs=4\n[rnn]\noutput=4\nhidden=4\nactivation=leaky\n")
    with pytest.raises(darkcfg.CfgError, match=r"\[rnn\] keeps a state between calls"):
        export_onnx(model, tmp_path / "r.onnx")


# --- command line ------------------------------------------------------------------------------

def test_cli_exports_with_weights_and_prints_the_shapes(capsys, tmp_path) -> None:
    cfg = tmp_path / "region.cfg"
    cfg.write_text(REGION.format(w=64, h=64))
    model = _build(cfg, seed=5)
    model.save_darknet_weights(tmp_path / "region.weights")
    out_path = tmp_path / "region.onnx"
    code = main(["export", str(cfg), "--weights", str(tmp_path / "region.weights"),
                 "--onnx", str(out_path), "--dynamic"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"wrote {out_path}: opset ")
    assert f"weights {tmp_path / 'region.weights'}, BatchNorm fused" in lines[0]
    assert lines[1:] == ["  input  images: batch x 3 x height x width",
                         "  output out_2: batch x 16 x height/2 x width/2"]
    session = _session(out_path)
    _assert_raw_outputs_match(model, session, 2, 64, 64)
    _assert_raw_outputs_match(model, session, 1, 32, 96)


def test_cli_decode_without_weights_says_random(capsys, tmp_path) -> None:
    cfg = tmp_path / "region.cfg"
    cfg.write_text(REGION.format(w=64, h=64))
    out_path = tmp_path / "region.onnx"
    code = main(["export", str(cfg), "--onnx", str(out_path), "--decode", "--width", "32",
                 "--height", "48", "--opset", "18"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"wrote {out_path}: opset 18, random weights (no --weights), "
                               f"BatchNorm fused, fixed to 32x48, ")
    assert lines[1:3] == ["  input  images: 1 x 3 x 48 x 32",
                          "  output detections: 1 x 768 x 8"]  # 16 x 24 cells x 2 anchors
    assert lines[3].startswith("  rows: x, y, w, h (box centre and size relative to the "
                               "network input), objectness, 3 class probabilities")
    meta = {p.key: p.value for p in onnx.load(str(out_path)).metadata_props}
    assert meta["darkcfg.cfg"] == "region.cfg" and meta["darkcfg.heads"] == "2"


def test_cli_errors_are_one_line(capsys, tmp_path) -> None:
    cfg = tmp_path / "m.cfg"
    cfg.write_text(MISH.format(w=16, h=16))
    code = main(["export", str(cfg), "--onnx", str(tmp_path / "m.onnx"), "--decode"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("darkcfg: error: the network has no [yolo]")


# --- end to end: the exported detector finds what `darkcfg detect` finds -----------------------

@needs_shared
@pytest.mark.slow
def test_official_yolov3_tiny_graph_detects_what_darkcfg_detect_prints(tmp_path) -> None:
    """Official weights, real images: the decoded graph's rows through nms and select give the
    lines `darkcfg detect` prints (which are Darknet's; see test_detect.py)."""
    from darkcfg.boxes import raw_detections
    from darkcfg.detection import nms, nms_settings, select
    from darkcfg.image import load_image, network_input

    root = SHARED / "official"
    model = darkcfg.load(root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights")
    path = tmp_path / "yolov3-tiny.onnx"
    export_onnx(model, path, dynamic=True, decode=True)
    session = _session(path)
    settings = nms_settings(model.network)
    for name in ("dog", "horses", "person"):
        image = load_image(root / "images" / f"{name}.jpg")
        size = (int(image.shape[-1]), int(image.shape[-2]))
        x = network_input(image, 416, 416, False)[None]
        rows = session.run(None, {"images": x.numpy()})[0][0]
        dets = nms(raw_detections(rows, 0.25), 0.45, kind=settings.kind, beta=settings.beta,
                   classes=settings.classes)
        found = select(dets, size, thresh=0.25)
        expected = darkcfg.detect(model, image, thresh=0.25, nms=0.45)
        assert [str(d) for d in found] == [str(d) for d in expected] != []
