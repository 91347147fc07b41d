"""Partial weights files, cutoff, `darkcfg partial`, and weights saved with another cfg
(another class count): what loads, what is initialised, and what is refused as misaligned."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.checkpoint import save_checkpoint
from darkcfg.cli import main
from darkcfg.weights import FitError, WeightsHeader
from oracle import SHARED, SKIP_REASON

OFFICIAL = SHARED / "official" if SHARED is not None else None
needs_official = pytest.mark.skipif(
    OFFICIAL is None or not (OFFICIAL / "yolov3-tiny.weights").is_file(),
    reason=SKIP_REASON or "../shared/official/yolov3-tiny.weights is not there")

ANCHORS = "anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319\nnum=6\n"
# layer (line): 0 conv (6), 1 maxpool (13), 2 conv (17), 3 conv (24), 4 yolo (29),
# 5 route (35), 6 conv (38), 7 conv (44), 8 yolo (49)
DETECTOR = f"""[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
pad=1
activation=leaky

[convolutional]
size=1
filters=24
activation=linear

[yolo]
mask=0,1,2
classes=3
{ANCHORS}
[route]
layers=2

[convolutional]
batch_normalize=1
filters=8
size=1
activation=leaky

[convolutional]
size=1
filters=24
activation=linear

[yolo]
mask=3,4,5
classes=3
{ANCHORS}"""
# floats per layer: 0: 8+24+216, 2: 16+48+1152, 3: 24+24*16, 6: 8+24+128, 7: 24+24*8
COUNTS = {0: 248, 2: 1216, 3: 408, 6: 160, 7: 216}
TOTAL = sum(COUNTS.values())  # 2248


def _classes(text: str, classes: int) -> str:
    """The detector with another class count: classes in each [yolo], filters before each."""
    return (text.replace("classes=3", f"classes={classes}")
            .replace("filters=24", f"filters={3 * (classes + 5)}"))


def _randomise(model: darkcfg.DarknetModel, seed: int) -> darkcfg.DarknetModel:
    """Distinct values in every tensor; BN variances positive, as in a trained file."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            values = rng.normal(0, 1, t.shape) if "running_var" not in name \
                else rng.uniform(0.5, 1.5, t.shape)
            t.copy_(torch.from_numpy(values.astype(np.float32)))
    return model


def _saved(text: str, path, seed: int = 1) -> darkcfg.DarknetModel:
    model = _randomise(darkcfg.build(text), seed)
    model.save_darknet_weights(path)
    return model


def _layer_equal(a: darkcfg.DarknetModel, b: darkcfg.DarknetModel, i: int) -> bool:
    sa, sb = a.layers[i].state_dict(), b.layers[i].state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def _is_darknet_init(model: darkcfg.DarknetModel, i: int) -> bool:
    """Darknet's initialisation: conv weights uniform in ±sqrt(2/fan_in), biases 0, BN scale 1,
    mean 0, variance 1."""
    layer = model.layers[i]
    w = layer.conv.weight
    bound = (2.0 / w[0].numel()) ** 0.5
    ok = bool(w.abs().max() <= bound) and w.std() > 0
    if getattr(layer, "bn", None) is not None:
        bn = layer.bn
        ok = ok and all(torch.equal(t, torch.full_like(t, v)) for t, v in
                        [(bn.weight, 1), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 1)])
    else:
        ok = ok and bool((layer.conv.bias == 0).all())
    return ok


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- partial files ------------------------------------------------------------------------------
def test_partial_file_loads_without_strict_and_names_the_initialised_layers(tmp_path) -> None:
    source = _saved(DETECTOR, tmp_path / "full.weights")
    source.save_darknet_weights(tmp_path / "d.conv.3", cutoff=3)
    assert (tmp_path / "d.conv.3").stat().st_size == 20 + 4 * (248 + 1216)
    with pytest.warns(darkcfg.CfgWarning) as record:
        model = darkcfg.load(DETECTOR, tmp_path / "d.conv.3", strict=False)
    assert [str(w.message) for w in record] == [
        f"{tmp_path / 'd.conv.3'} ends after layer 2 (a partial weights file): it has no weights "
        f"for layers 3, 6-7"]
    report = model.last_load
    assert (report.layers_loaded, report.floats_read, report.floats_left) == (3, 1464, 0)
    assert report.initialised == (3, 6, 7)
    assert _layer_equal(model, source, 0) and _layer_equal(model, source, 2)
    assert all(_is_darknet_init(model, i) for i in (3, 6, 7))


def test_partial_file_is_an_error_when_strict(tmp_path, capsys) -> None:
    source = _saved(DETECTOR, tmp_path / "full.weights")
    source.save_darknet_weights(tmp_path / "d.conv.3", cutoff=3)
    with pytest.raises(FitError) as info:
        darkcfg.load(DETECTOR, tmp_path / "d.conv.3")
    assert info.value.msg == (
        "weights file ends after layer 2: it holds the 1,464 floats of layers 0-2, the cfg's "
        "layers 0-8 need 2,248; pass strict=False to load it as a partial file (the later layers "
        "keep Darknet's initialisation), or cutoff=3")
    cfg = tmp_path / "d.cfg"
    cfg.write_text(DETECTOR)
    code, out, err = _cli(capsys, "build", cfg, "--weights", tmp_path / "d.conv.3")
    assert (code, out) == (1, "")
    assert err == ("darkcfg: error: weights file ends after layer 2: it holds the 1,464 floats "
                   "of layers 0-2, the cfg's layers 0-8 need 2,248; pass --no-strict to load it "
                   "as a partial file (the later layers keep Darknet's initialisation), or "
                   "--cutoff 3 (at d.conv.3)\n")


def test_file_that_ends_inside_a_layer_stays_an_error(tmp_path) -> None:
    _saved(DETECTOR, tmp_path / "full.weights")
    data = (tmp_path / "full.weights").read_bytes()
    (tmp_path / "cut.weights").write_bytes(data[:20 + 4 * (248 + 100)])
    with pytest.raises(darkcfg.WeightsError) as info:
        darkcfg.load(DETECTOR, tmp_path / "cut.weights", strict=False)
    assert info.value.msg == ("weights file ends inside layer 2 ([convolutional] at line 17): it "
                              "needs 1216 floats, 100 are left (248 read for layers 0-1)")


# -- cutoff -------------------------------------------------------------------------------------
def test_cutoff_loads_the_first_layers_of_a_full_or_partial_file(tmp_path) -> None:
    source = _saved(DETECTOR, tmp_path / "full.weights")
    source.save_darknet_weights(tmp_path / "d.conv.3", cutoff=3)
    for name in ("full.weights", "d.conv.3"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # either file is exactly what the cutoff asks for
            model = darkcfg.load(DETECTOR, tmp_path / name, cutoff=3)
        report = model.last_load
        assert (report.layers_loaded, report.floats_read) == (3, 1464)
        assert report.floats_left == (TOTAL - 1464 if name == "full.weights" else 0)
        assert report.initialised == (3, 6, 7)
        assert _layer_equal(model, source, 2) and not _layer_equal(model, source, 3)
        assert all(_is_darknet_init(model, i) for i in (3, 6, 7))


def test_cutoff_into_a_longer_file_of_another_cfg_needs_no_strict(tmp_path) -> None:
    longer = DETECTOR + "\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
    _saved(longer, tmp_path / "longer.weights")  # 4 + 4*24 more floats
    with pytest.raises(FitError) as info:
        darkcfg.load(DETECTOR, tmp_path / "longer.weights", cutoff=3)
    assert info.value.msg == (
        "weights file has 884 floats left over after layer 2 (1464 of 2348 read): it does not "
        "fit this cfg; pass strict=False to load the first 1464 floats anyway")


def test_cutoff_arguments(tmp_path) -> None:
    _saved(DETECTOR, tmp_path / "full.weights")
    with pytest.raises(ValueError, match=r"^cutoff must be 0 or more \(the number of layers to "
                                         r"load\), got -1$"):
        darkcfg.load(DETECTOR, tmp_path / "full.weights", cutoff=-1)
    with pytest.raises(ValueError, match="^cutoff and weights_cfg apply to a weights file; none "
                                         "was given$"):
        darkcfg.load(DETECTOR, cutoff=3)
    model = darkcfg.load(DETECTOR, tmp_path / "full.weights", cutoff=100)  # all layers
    assert model.last_load.initialised == ()


def test_cutoff_of_a_checkpoint(tmp_path) -> None:
    source = _saved(DETECTOR, tmp_path / "full.weights")
    save_checkpoint(source, tmp_path / "d.safetensors")
    model = darkcfg.load(DETECTOR, tmp_path / "d.safetensors", cutoff=3)
    assert model.last_load.initialised == (3, 6, 7)
    assert _layer_equal(model, source, 0) and _layer_equal(model, source, 2)
    assert all(_is_darknet_init(model, i) for i in (3, 6, 7))


def test_cli_cutoff(tmp_path, capsys) -> None:
    _saved(DETECTOR, tmp_path / "full.weights")
    cfg = tmp_path / "d.cfg"
    cfg.write_text(DETECTOR)
    code, out, err = _cli(capsys, "build", cfg, "--weights", tmp_path / "full.weights",
                          "--cutoff", "3")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (
        f"weights {tmp_path / 'full.weights'}: version 0.2.5, seen 0, 1,464 floats loaded into 3 "
        f"layers, 784 left unread; layers 3, 6-7 have Darknet's initialisation")


# -- darkcfg partial -----------------------------------------------------------------------------
def test_partial_command_is_save_with_cutoff_under_darknets_header(tmp_path, capsys) -> None:
    cfg = tmp_path / "d.cfg"
    cfg.write_text(DETECTOR)
    path = tmp_path / "full.weights"
    _randomise(darkcfg.build(DETECTOR), 3).save_darknet_weights(path)
    data = bytearray(path.read_bytes())
    data[:20] = WeightsHeader(0, 2, 0, seen=123456).to_bytes()  # a trained file's header
    path.write_bytes(bytes(data))
    code, out, err = _cli(capsys, "partial", cfg, path, tmp_path / "d.conv.3", "3")
    assert (code, err) == (0, "")
    assert out == (f"wrote {tmp_path / 'd.conv.3'}: layers 0-2 of 9, 1,464 floats; Darknet header "
                   f"0.2.5, seen 0\n")
    model = darkcfg.load(cfg, path)
    model.save_darknet_weights(tmp_path / "saved.3", cutoff=3)
    written = (tmp_path / "d.conv.3").read_bytes()
    # Darknet's partial writes its own version and resets seen, so training starts afresh; a
    # save with cutoff writes the same file
    assert (tmp_path / "saved.3").read_bytes() == written
    assert written[:20] == WeightsHeader(0, 2, 5, seen=0).to_bytes()
    assert written[20:] == bytes(data[20:20 + 4 * 1464])
    model.save_darknet_weights(tmp_path / "whole")  # without cutoff the loaded header stays
    assert (tmp_path / "whole").read_bytes()[:20] == bytes(data[:20])


@needs_official
def test_partial_command_on_the_official_weights(tmp_path, capsys) -> None:
    out_file = tmp_path / "yolov3-tiny.conv.15"
    code, out, err = _cli(capsys, "partial", OFFICIAL / "yolov3-tiny.cfg",
                          OFFICIAL / "yolov3-tiny.weights", out_file, "15")
    assert (code, err) == (0, "")
    model = darkcfg.load(OFFICIAL / "yolov3-tiny.cfg", OFFICIAL / "yolov3-tiny.weights")
    model.save_darknet_weights(tmp_path / "saved.15", cutoff=15)
    assert out_file.read_bytes() == (tmp_path / "saved.15").read_bytes()
    assert out_file.stat().st_size == 20 + 4 * 7_743_344


# -- another class count ------------------------------------------------------------------------
def test_another_class_count_is_refused_naming_the_layers(tmp_path, capsys) -> None:
    _saved(_classes(DETECTOR, 80), tmp_path / "coco.weights")
    message = (
        "weights file does not fit this cfg: it has 8,254 floats, the cfg needs 2,248; it fits "
        "with classes=80 instead of 3 in [yolo] layers 4 and 8 (filters=255 instead of 24 in "
        "layers 3 and 7); load it with weights_cfg=<the cfg it was saved with> to copy the "
        "layers whose shapes match (the others get Darknet's initialisation), or with cutoff=3 "
        "to load layers 0-2 only")
    for strict in (True, False):
        with pytest.raises(FitError) as info:
            darkcfg.load(DETECTOR, tmp_path / "coco.weights", strict=strict)
        assert info.value.msg == message
    cfg = tmp_path / "d.cfg"
    cfg.write_text(DETECTOR)
    for command in (["build", cfg, "--weights"], ["export", cfg, "--onnx", tmp_path / "x.onnx",
                                                  "--weights"]):
        code, out, err = _cli(capsys, *command, tmp_path / "coco.weights")
        assert err == (
            "darkcfg: error: weights file does not fit this cfg: it has 8,254 floats, the cfg "
            "needs 2,248; it fits with classes=80 instead of 3 in [yolo] layers 4 and 8 "
            "(filters=255 instead of 24 in layers 3 and 7); load it with --weights-cfg <the cfg "
            "it was saved with> to copy the layers whose shapes match (the others get Darknet's "
            "initialisation), or with --cutoff 3 to load layers 0-2 only (at coco.weights)\n"), \
            command[0]
    code, out, err = _cli(capsys, "convert", cfg, tmp_path / "coco.weights", tmp_path / "x.pt")
    assert code == 1 and "--weights-cfg <the cfg it was saved with>" in err
    assert "weights_cfg=" not in err and "strict=False" not in err


def test_fewer_classes_in_one_head_is_named_too(tmp_path) -> None:
    one_head = DETECTOR.replace("filters=24\nactivation=linear\n\n[yolo]\nmask=3,4,5\nclasses=3",
                                "filters=18\nactivation=linear\n\n[yolo]\nmask=3,4,5\nclasses=1")
    _saved(one_head, tmp_path / "one.weights")
    with pytest.raises(FitError) as info:
        darkcfg.load(DETECTOR, tmp_path / "one.weights", strict=False)
    assert info.value.msg.startswith(
        "weights file does not fit this cfg: it has 2,194 floats, the cfg needs 2,248; it fits "
        "with classes=1 instead of 3 in [yolo] layer 8 (filters=18 instead of 24 in layer 7); "
        "load it with weights_cfg=")
    model = darkcfg.load(DETECTOR, tmp_path / "one.weights", cutoff=7)  # before the change
    assert model.last_load.initialised == (7,)


def test_classifier_with_other_classes_is_named(tmp_path) -> None:
    classifier = ("[net]\nwidth=8\nheight=8\nchannels=3\n\n[convolutional]\nbatch_normalize=1\n"
                  "filters=4\nsize=3\npad=1\nactivation=leaky\n\n[convolutional]\nfilters={}\n"
                  "size=1\nactivation=linear\n\n[avgpool]\n\n[softmax]\n")
    _saved(classifier.format(10), tmp_path / "ten.weights")
    with pytest.raises(FitError) as info:
        darkcfg.load(classifier.format(5), tmp_path / "ten.weights", strict=False)
    assert info.value.msg.startswith(
        "weights file does not fit this cfg: it has 174 floats, the cfg needs 149; it fits with "
        "filters=10 instead of 5 in layer 1 ([convolutional] at line 13); ")
    model = darkcfg.load(classifier.format(5), tmp_path / "ten.weights",
                         weights_cfg=classifier.format(10))
    assert model.last_load.initialised == (1,)


def test_weights_cfg_copies_the_layers_whose_shapes_match(tmp_path) -> None:
    coco = _classes(DETECTOR, 80)
    source = _saved(coco, tmp_path / "coco.weights")
    data = bytearray((tmp_path / "coco.weights").read_bytes())
    data[:20] = WeightsHeader(0, 2, 0, seen=777).to_bytes()
    (tmp_path / "coco.weights").write_bytes(bytes(data))
    (tmp_path / "coco.cfg").write_text(coco)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = darkcfg.load(DETECTOR, tmp_path / "coco.weights",
                             weights_cfg=tmp_path / "coco.cfg")
    report = model.last_load
    assert report.initialised == (3, 7)
    assert report.weights_cfg == str(tmp_path / "coco.cfg")
    assert (report.layers_loaded, report.floats_read, report.floats_left) == (9, 8254, 0)
    assert all(_layer_equal(model, source, i) for i in (0, 2, 6))
    assert all(_is_darknet_init(model, i) for i in (3, 7))
    assert model.weights_header == WeightsHeader(0, 2, 0, seen=777)  # saved back as it came
    # the features the heads read are the source's
    model.out_indices = source.out_indices = [2, 6]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model(x), source(x)):
            assert torch.equal(a, b)


def test_weights_cfg_from_a_checkpoint_and_with_cutoff(tmp_path) -> None:
    coco = _classes(DETECTOR, 80)
    source = _saved(coco, tmp_path / "coco.weights")
    save_checkpoint(source, tmp_path / "coco.pt")
    model = darkcfg.load(DETECTOR, tmp_path / "coco.pt", weights_cfg=coco)
    assert model.last_load.initialised == (3, 7)
    assert model.last_load.weights_cfg == "<cfg text>"
    assert _layer_equal(model, source, 6)
    model = darkcfg.load(DETECTOR, tmp_path / "coco.weights", weights_cfg=coco, cutoff=3)
    assert model.last_load.initialised == (3, 6, 7)
    assert _layer_equal(model, source, 2) and _is_darknet_init(model, 6)


def test_cli_weights_cfg(tmp_path, capsys) -> None:
    (tmp_path / "coco.cfg").write_text(_classes(DETECTOR, 80))
    (tmp_path / "d.cfg").write_text(DETECTOR)
    source = _saved(_classes(DETECTOR, 80), tmp_path / "coco.weights")
    code, out, err = _cli(capsys, "build", tmp_path / "d.cfg", "--weights",
                          tmp_path / "coco.weights", "--weights-cfg", tmp_path / "coco.cfg")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (
        f"weights {tmp_path / 'coco.weights'} (read with {tmp_path / 'coco.cfg'}): version 0.2.5, "
        f"seen 0, 8,254 floats loaded into 9 layers; layers 3, 7 have Darknet's initialisation")
    code, out, err = _cli(capsys, "convert", tmp_path / "d.cfg", tmp_path / "coco.weights",
                          tmp_path / "d.safetensors", "--weights-cfg", tmp_path / "coco.cfg")
    assert (code, err) == (0, "")
    converted = darkcfg.load(tmp_path / "d.cfg", tmp_path / "d.safetensors")
    assert _layer_equal(converted, source, 2) and _is_darknet_init(converted, 3)


# -- misalignment that sizes alone do not show ------------------------------------------------
BACKBONE = DETECTOR.split("[convolutional]\nsize=1\nfilters=24")[0]  # layers 0-2


def test_misaligned_prefix_is_refused_by_its_negative_variances(tmp_path) -> None:
    wider = DETECTOR.replace("filters=8\nsize=3", "filters=12\nsize=3")  # layer 0: 12 filters
    source = _saved(wider, tmp_path / "wider.weights")
    # this cfg's layer 0 reads its variances from where the file holds layer 0's means 0-7
    negative = int((source.layers[0].bn.running_mean[:8] < 0).sum())
    assert negative
    model = darkcfg.build(BACKBONE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FitError) as info:
        model.load_darknet_weights(tmp_path / "wider.weights", strict=False)
    assert info.value.msg == (
        f"weights file does not fit this cfg: this cfg's layers 0-2 use the first 1,464 of its "
        f"2,948 floats, and {negative} of the 8 BN variances of layer 0 ([convolutional] at line "
        f"6) come out negative, so its values do not line up with this cfg's layers at or before "
        f"layer 0; load it with weights_cfg=<the cfg it was saved with> to copy the layers whose "
        f"shapes match (the others get Darknet's initialisation)")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the same file loaded with its own cfg: nothing matches in layers 0 and 2 (other channels)
    model = darkcfg.load(BACKBONE, tmp_path / "wider.weights", weights_cfg=wider)
    assert model.last_load.initialised == (0, 2)


def test_aligned_prefix_still_loads_with_a_warning(tmp_path) -> None:
    source = _saved(DETECTOR, tmp_path / "full.weights")
    with pytest.warns(darkcfg.CfgWarning, match="784 floats were left unread"):
        model = darkcfg.load(BACKBONE, tmp_path / "full.weights", strict=False)
    assert model.last_load.initialised == ()
    assert _layer_equal(model, source, 0) and _layer_equal(model, source, 2)


# -- the official yolov3-tiny weights, edited for 3 classes ----------------------------------
def _three_classes() -> darkcfg.Network:
    net = darkcfg.parse(OFFICIAL / "yolov3-tiny.cfg")
    with net.batch():
        for spec in [s for s in net if s.type == "yolo"]:
            net.set(spec.index, classes=3)
            net.set(spec.index - 1, filters=(3 + 5) * len(spec.options.mask))
    return net


@needs_official
def test_official_weights_into_a_three_class_cfg(capsys, tmp_path) -> None:
    cfg, weights = OFFICIAL / "yolov3-tiny.cfg", OFFICIAL / "yolov3-tiny.weights"
    message = (
        "weights file does not fit this cfg: it has 8,858,734 floats, the cfg needs 8,680,864; "
        "it fits with classes=80 instead of 3 in [yolo] layers 16 and 23 (filters=255 instead of "
        "24 in layers 15 and 22); load it with weights_cfg=<the cfg it was saved with> to copy "
        "the layers whose shapes match (the others get Darknet's initialisation), or with "
        "cutoff=15 to load layers 0-14 only")
    for strict in (True, False):
        with pytest.raises(FitError) as info:
            darkcfg.load(_three_classes(), weights, strict=strict)
        assert info.value.msg == message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = darkcfg.load(_three_classes(), weights, weights_cfg=cfg)
    full = darkcfg.load(cfg, weights)
    assert model.last_load.initialised == (15, 22)
    assert model.last_load.weights_cfg == str(cfg)
    assert all(_layer_equal(model, full, i) for i in range(24) if i not in (15, 22))
    assert _is_darknet_init(model, 15) and _is_darknet_init(model, 22)
    assert model.layers[15].conv.weight.shape == (24, 512, 1, 1)
    dumped = tmp_path / "3c.cfg"
    darkcfg.dump(_three_classes(), dumped)
    code, out, err = _cli(capsys, "build", dumped, "--weights", weights)
    assert code == 1 and err.startswith("darkcfg: error: weights file does not fit this cfg: ")
    assert ("load it with --weights-cfg <the cfg it was saved with> to copy the layers whose "
            "shapes match (the others get Darknet's initialisation), or with --cutoff 15 to load "
            "layers 0-14 only (at yolov3-tiny.weights)\n") in err
    code, out, err = _cli(capsys, "build", dumped, "--weights", weights, "--weights-cfg", cfg)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].endswith("; layers 15, 22 have Darknet's initialisation")
