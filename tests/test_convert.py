"""Checkpoints (.safetensors, .pt) and `darkcfg convert`: byte-identical .weights round trips,
metadata, share_index stored once, every error path, refusal of pickled code, atomic loads."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import darkcfg
from darkcfg.checkpoint import convert, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from darkcfg.cli import main
from darkcfg.weights import WeightsHeader
from oracle import REPO, SHARED, needs_shared

FORMATS = ["safetensors", "pt"]
# KINDS' dontloadscales=1 is meant (its BN tensors are in checkpoints, not in .weights files)
pytestmark = pytest.mark.filterwarnings("ignore:dontloadscales=1:darkcfg.CfgWarning")

SHARE = """[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
share_index=1

[convolutional]
filters=8
size=3
pad=1
activation=linear

[convolutional]
filters=8
size=3
pad=1
activation=linear
share_index=-1
"""

RECURRENT = """[net]
inputs=8

[rnn]
batch_normalize=1
output=6
hidden=8
activation=leaky

[lstm]
output=6

[gru]
output=5

[connected]
output=4
batch_normalize=1
activation=linear

[connected]
output=3
activation=linear
"""

CONV_RECURRENT = """[net]
width=8
height=8
channels=3

[crnn]
batch_normalize=1
size=3
pad=1
output=5
hidden=4
activation=leaky

[conv_lstm]
batch_normalize=0
size=3
pad=1
output=4
peephole=1
activation=linear
"""

# [local], [batchnorm], [shortcut] weights, [implicit], dontloadscales, [connected]
KINDS = """[net]
width=8
height=8
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
dontloadscales=1

[local]
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=4
size=3
pad=1
activation=linear

[batchnorm]

[shortcut]
from=-3,-4
weights_type=per_channel
weights_normalization=relu
activation=linear

[implicit]
filters=4

[maxpool]
size=2
stride=2

[connected]
output=6
activation=leaky

[connected]
output=3
batch_normalize=1
activation=linear
"""

TEXT_CFGS = {"share_index": SHARE, "recurrent": RECURRENT, "conv_recurrent": CONV_RECURRENT,
             "kinds": KINDS}
SHIPPED = sorted(p.name for p in (REPO / "cfgs").glob("*.cfg"))
# cspdarknet53 (27.6M weights, 110 MB per file) takes ~10 s per format here
ROUND_TRIP_CFGS = [pytest.param(n, marks=pytest.mark.slow) if n == "cspdarknet53.cfg" else n
                   for n in SHIPPED + list(TEXT_CFGS)]


# -- helpers ----------------------------------------------------------------------------------
def _cfg_file(tmp_path: Path, name: str) -> Path:
    """A shipped cfg, or one of the cfg texts above written to a file."""
    if name in TEXT_CFGS:
        path = tmp_path / f"{name}.cfg"
        path.write_text(TEXT_CFGS[name])
        return path
    return REPO / "cfgs" / name


def _randomise(model: darkcfg.DarknetModel, seed: int = 0) -> None:
    """Random values in every tensor (positive BN variances), so no two tensors are alike."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict(keep_vars=True).items():
            r = torch.rand(t.shape, generator=g)
            t.copy_(r + 0.5 if key.endswith("running_var") else (r - 0.5) * 0.4)


def _random_weights(tmp_path: Path, cfg: Path, header=(0, 2, 5, 123456789), seed: int = 0,
                    **overrides) -> Path:
    """A .weights file with random values for `cfg`, written by Darknet's layout."""
    model = darkcfg.build(cfg, **overrides)
    _randomise(model, seed)
    model.weights_header = WeightsHeader(*header)
    path = tmp_path / f"{cfg.stem}.weights"
    model.save_darknet_weights(path)
    return path


def _input(model: darkcfg.DarknetModel, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(model.example_input(batch).shape, generator=g)


def _outputs(model: darkcfg.DarknetModel, x: torch.Tensor, steps: int = 1) -> list[torch.Tensor]:
    """Outputs of `steps` calls (recurrent layers carry their state from one to the next)."""
    model.reset_state()
    with torch.no_grad():
        return [y for _ in range(steps) for y in model(x)]


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """The same outputs within float32 rounding: two model instances may get other kernel paths
    (weights read from a .weights file are views at other alignments than a checkpoint's)."""
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=1e-5, atol=1e-6)
                                    for x, y in zip(a, b, strict=True))


def _state(model: darkcfg.DarknetModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model: darkcfg.DarknetModel, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


def _error(fn, *args, **kwargs) -> darkcfg.WeightsError:
    with pytest.raises(darkcfg.WeightsError) as info:
        fn(*args, **kwargs)
    return info.value


def _saved(tmp_path: Path, fmt: str, cfg: str = SHARE, name: str = "a"
           ) -> tuple[Path, darkcfg.DarknetModel]:
    model = darkcfg.build(cfg)
    _randomise(model)
    path = tmp_path / f"{name}.{fmt}"
    save_checkpoint(model, path)
    return path, model


def _rewrite(path: Path, edit) -> Path:
    """The checkpoint at `path` with its tensors and metadata changed by `edit(tensors, meta)`,
    written independently of darkcfg (safetensors.save_file / torch.save)."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata())
        tensors = load_file(str(path))
        edit(tensors, meta)
        out = path.with_name("edited.safetensors")
        save_file(tensors, str(out), metadata=meta)
    else:
        obj = torch.load(path, weights_only=True)
        edit(obj["state_dict"], obj["metadata"])
        out = path.with_name("edited.pt")
        torch.save(obj, out)
    return out


# -- round trips ------------------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("fmt", FORMATS)
def test_official_weights_round_trip_byte_identical(tmp_path, fmt) -> None:
    cfg = SHARED / "official" / "yolov3-tiny.cfg"
    weights = SHARED / "official" / "yolov3-tiny.weights"
    ckpt, back = tmp_path / f"y.{fmt}", tmp_path / "back.weights"
    convert(cfg, weights, ckpt)
    convert(cfg, ckpt, back)
    assert back.read_bytes() == weights.read_bytes()
    # the checkpoint's model computes what the .weights model computes
    original = darkcfg.load(cfg, weights, width=96, height=96)
    model = darkcfg.build(cfg, init=False, width=96, height=96)
    load_checkpoint(model, ckpt)
    x = _input(model)
    assert _close(_outputs(model, x), _outputs(original, x))
    assert model.weights_header == original.weights_header == WeightsHeader(0, 2, 0, 32013312)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ROUND_TRIP_CFGS)
def test_random_weights_round_trip_byte_identical(tmp_path, name, fmt) -> None:
    cfg = _cfg_file(tmp_path, name)
    weights = _random_weights(tmp_path, cfg)
    ckpt, back = tmp_path / f"c.{fmt}", tmp_path / "back.weights"
    convert(cfg, weights, ckpt)
    convert(cfg, ckpt, back)
    assert back.read_bytes() == weights.read_bytes()
    small = {} if name in TEXT_CFGS else {"width": 64, "height": 64}
    original = darkcfg.load(cfg, weights, **small)
    model = darkcfg.build(cfg, init=False, **small)
    load_checkpoint(model, ckpt)
    x = _input(model)
    steps = 3 if "recurrent" in name else 1
    got, want = _outputs(model, x, steps), _outputs(original, x, steps)
    assert _close(got, want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_checkpoint_to_checkpoint_and_transposed_header(tmp_path, fmt) -> None:
    """A header with Darknet's transpose flag (minor > 1000) stores [connected] weights transposed
    in the .weights file; the checkpoint holds torch's layout and gives the same bytes back."""
    cfg = _cfg_file(tmp_path, "kinds")
    weights = _random_weights(tmp_path, cfg, header=(0, 1001, 0, 7))
    other = "pt" if fmt == "safetensors" else "safetensors"
    convert(cfg, weights, tmp_path / f"a.{fmt}")
    convert(cfg, tmp_path / f"a.{fmt}", tmp_path / f"b.{other}")
    convert(cfg, tmp_path / f"b.{other}", tmp_path / "back.weights")
    assert (tmp_path / "back.weights").read_bytes() == weights.read_bytes()


def test_pth_suffix_is_a_pt_file_and_darknet_names_are_weights(tmp_path) -> None:
    cfg = _cfg_file(tmp_path, "share_index")
    weights = _random_weights(tmp_path, cfg)
    darknet_name = tmp_path / "share_index.conv.5"  # as Darknet names partial weights
    darknet_name.write_bytes(weights.read_bytes())
    convert(cfg, darknet_name, tmp_path / "a.PTH")
    assert zipfile.is_zipfile(tmp_path / "a.PTH")
    convert(cfg, tmp_path / "a.PTH", tmp_path / "back.weights")
    assert (tmp_path / "back.weights").read_bytes() == weights.read_bytes()


@settings(max_examples=20, deadline=None)
@given(major=st.integers(0, 3), minor=st.sampled_from([0, 1, 2, 5, 1001]),
       revision=st.integers(0, 65535), seen=st.integers(0, 2**32 - 1),
       seed=st.integers(0, 2**31), fmt=st.sampled_from(FORMATS))
def test_round_trip_property(tmp_path_factory, major, minor, revision, seen, seed, fmt) -> None:
    d = tmp_path_factory.mktemp("prop")
    cfg = d / "k.cfg"
    cfg.write_text(KINDS)
    floats = np.random.default_rng(seed).standard_normal(darkcfg.parse(cfg).weight_count)
    wide = major * 10 + minor >= 2
    data = (np.array([major, minor, revision], "<i4").tobytes()
            + np.array([seen], "<u8" if wide else "<u4").tobytes() + floats.astype("<f4").tobytes())
    (d / "w.weights").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)  # negative BN variances
        convert(cfg, d / "w.weights", d / f"c.{fmt}")
        convert(cfg, d / f"c.{fmt}", d / "back.weights")
    assert (d / "back.weights").read_bytes() == data


# -- contents ---------------------------------------------------------------------------------
def test_safetensors_metadata_and_share_index_stored_once(tmp_path) -> None:
    cfg = _cfg_file(tmp_path, "share_index")
    weights = _random_weights(tmp_path, cfg, header=(0, 2, 5, 4242))
    convert(cfg, weights, tmp_path / "a.safetensors")
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["darkcfg.cfg"] == cfg.read_text()
    assert meta["darkcfg.cfg_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert meta["darkcfg.cfg_name"] == "share_index.cfg"
    assert meta["darkcfg.version"] == darkcfg.__version__
    assert [meta[f"darkcfg.header_{k}"] for k in ("major", "minor", "revision", "seen")] == \
        ["0", "2", "5", "4242"]
    assert read_checkpoint_metadata(tmp_path / "a.safetensors") == meta
    # layers 2 and 4 use layers 1 and 3's tensors: stored once, the dropped keys named as
    # safetensors.torch.save_model names them
    assert not any(k.startswith(("layers.2.", "layers.4.")) for k in keys)
    assert meta["layers.2.conv.weight"] == "layers.1.conv.weight"
    assert meta["layers.4.conv.bias"] == "layers.3.conv.bias"
    model = darkcfg.load(cfg, weights)
    assert keys == set(model.state_dict()) - {k for k in model.state_dict()
                                              if k.startswith(("layers.2.", "layers.4."))}
    stored = load_file(str(tmp_path / "a.safetensors"))
    assert all(torch.equal(stored[k], model.state_dict()[k]) for k in keys)


def test_pt_is_plain_tensors_and_strings(tmp_path) -> None:
    cfg = _cfg_file(tmp_path, "share_index")
    weights = _random_weights(tmp_path, cfg)
    convert(cfg, weights, tmp_path / "a.pt")
    obj = torch.load(tmp_path / "a.pt", weights_only=True)
    assert obj["format"] == "darkcfg"
    assert obj["metadata"]["darkcfg.cfg"] == cfg.read_text()
    assert obj["metadata"]["darkcfg.cfg_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    sd = obj["state_dict"]
    model = darkcfg.load(cfg, weights)
    assert list(sd) == list(model.state_dict())
    assert sd["layers.2.conv.weight"].data_ptr() == sd["layers.1.conv.weight"].data_ptr()
    plain = darkcfg.build(cfg)  # torch's own loader takes the state_dict as it is
    plain.load_state_dict(sd)
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_keeps_share_index_ties(tmp_path, fmt) -> None:
    path, saved = _saved(tmp_path, fmt)
    model = darkcfg.build(SHARE, init=False)
    report = load_checkpoint(model, path)
    assert model.layers[2].conv.weight is model.layers[1].conv.weight
    assert model.layers[4].conv.bias is model.layers[3].conv.bias
    assert _same_state(model, _state(saved))
    assert report.missing == report.unexpected == () and report.same_cfg is True
    assert report.tensors_loaded == len({id(t) for t in model.state_dict(keep_vars=True).values()})


def test_safetensors_load_model_reads_darkcfg_files(tmp_path) -> None:
    """The files follow safetensors.torch.save_model's convention for tied tensors."""
    from safetensors.torch import load_model

    path, saved = _saved(tmp_path, "safetensors")
    model = darkcfg.build(SHARE)
    with torch.no_grad():  # load_model wants every tensor in its own storage
        for p in model.parameters():
            p.data = p.data.clone()
    missing, unexpected = load_model(model, path)
    assert not missing and not unexpected
    assert _same_state(model, _state(saved))


def test_foreign_state_dict_files_load(tmp_path) -> None:
    """A plain torch.save(state_dict) and a safetensors file without darkcfg's metadata load;
    the model then has no Darknet header."""
    _, saved = _saved(tmp_path, "pt")
    sd = saved.state_dict()
    torch.save(sd, tmp_path / "plain.pt")
    unique = {k: v.clone() for k, v in sd.items() if not k.startswith(("layers.2.", "layers.4."))}
    save_file(unique, str(tmp_path / "plain.safetensors"))
    for name in ("plain.pt", "plain.safetensors"):
        model = darkcfg.build(SHARE, init=False)
        model.weights_header = WeightsHeader(0, 2, 5, 1)
        report = load_checkpoint(model, tmp_path / name)
        assert _same_state(model, _state(saved))
        assert model.weights_header is None and report.same_cfg is None


# -- strict=False -----------------------------------------------------------------------------
BACKBONE_EXTRA = """
[convolutional]
filters=5
size=1
activation=linear
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_strict_backbone_from_a_longer_checkpoint(tmp_path, fmt) -> None:
    detector = (REPO / "cfgs" / "darknet53-tiny.cfg").read_text() + BACKBONE_EXTRA
    path, saved = _saved(tmp_path, fmt, detector)
    backbone = darkcfg.build(REPO / "cfgs" / "darknet53-tiny.cfg", init=False)
    with pytest.warns(darkcfg.CfgWarning) as record:
        report = load_checkpoint(backbone, path, strict=False)
    messages = [str(w.message) for w in record]
    assert any("2 tensors of the checkpoint were not used, the first 'layers.13.conv.bias'" in m
               for m in messages), messages
    assert any("saved from a different cfg" in m for m in messages), messages
    assert report.unexpected == ("layers.13.conv.bias", "layers.13.conv.weight")
    assert report.same_cfg is False and report.missing == ()
    want = {k: v for k, v in saved.state_dict().items() if not k.startswith("layers.13.")}
    assert _same_state(backbone, want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_strict_missing_tensors_keep_their_values(tmp_path, fmt) -> None:
    path, saved = _saved(tmp_path, fmt)
    # (a .pt file holds the tied layers.4.conv.bias as well)
    edited = _rewrite(path, lambda t, m: [t.pop("layers.3.conv.bias"), t.pop("layers.0.bn.bias"),
                                          t.pop("layers.4.conv.bias", None)])
    model = darkcfg.build(SHARE)
    before = _state(model)
    with pytest.warns(darkcfg.CfgWarning, match=r"3 of the model's tensors are not in the "
                      r"checkpoint and keep their values, the first 'layers.0.bn.bias'"):
        report = load_checkpoint(model, edited, strict=False)
    # layer 4 shares layer 3's bias: both keys are missing
    assert report.missing == ("layers.0.bn.bias", "layers.3.conv.bias", "layers.4.conv.bias")
    assert report.missing_layers == (0, 3, 4)
    now = model.state_dict()
    for key in now:
        want = before[key] if key in report.missing else saved.state_dict()[key]
        assert torch.equal(now[key], want), key


def test_convert_no_strict_converts_the_prefix_of_a_longer_weights_file(tmp_path, capsys) -> None:
    detector = tmp_path / "detector.cfg"
    detector.write_text((REPO / "cfgs" / "darknet53-tiny.cfg").read_text() + BACKBONE_EXTRA)
    weights = _random_weights(tmp_path, detector)
    backbone = REPO / "cfgs" / "darknet53-tiny.cfg"
    with pytest.warns(darkcfg.CfgWarning, match="left unread"):
        report = convert(backbone, weights, tmp_path / "b.safetensors", strict=False)
    convert(backbone, tmp_path / "b.safetensors", tmp_path / "b.weights")
    data, prefix = weights.read_bytes(), (tmp_path / "b.weights").read_bytes()
    extra = 5 + 5 * 1024  # the extra layer: 5 biases, 5 x 1024 x 1 x 1 weights
    assert len(data) - len(prefix) == 4 * extra and data.startswith(prefix)
    assert report.floats_left == extra
    assert f"the last {extra:,} floats of detector.weights did not fit the cfg and were " \
           f"dropped" in report.describe()


# -- errors -----------------------------------------------------------------------------------
def _layer_line(cfg: str, index: int) -> int:
    return darkcfg.parse(cfg)[index].loc.line


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_tensor_message(tmp_path, fmt) -> None:
    path, _ = _saved(tmp_path, fmt)
    # (a .pt file holds the tied layers.4.conv.weight as well)
    one = _rewrite(path, lambda t, m: [t.pop("layers.3.conv.weight"),
                                       t.pop("layers.4.conv.weight", None)])
    e = _error(load_checkpoint, darkcfg.build(SHARE), one)
    line = _layer_line(SHARE, 3)
    assert str(e) == (f"the checkpoint lacks 2 of the model's 19 tensors, the first "
                      f"'layers.3.conv.weight' (cfg line {line}); pass strict=False to keep the "
                      f"current values of missing tensors (at edited.{fmt}, in [convolutional] #3)")
    assert (e.path, e.section, e.layer_index) == (str(one), "convolutional", 3)
    one = _rewrite(path, lambda t, m: t.pop("layers.0.bn.running_var"))
    e = _error(load_checkpoint, darkcfg.build(SHARE), one)
    assert str(e) == (f"the checkpoint lacks the model's tensor 'layers.0.bn.running_var' (cfg "
                      f"line {_layer_line(SHARE, 0)}); pass strict=False to keep the current "
                      f"values of missing tensors (at edited.{fmt}, in [convolutional] #0)")


@pytest.mark.parametrize("fmt", FORMATS)
def test_unexpected_tensor_messages(tmp_path, fmt) -> None:
    path, _ = _saved(tmp_path, fmt)
    one = _rewrite(path, lambda t, m: t.update({"layers.9.conv.weight": torch.zeros(2)}))
    e = _error(load_checkpoint, darkcfg.build(SHARE), one)
    assert str(e) == (f"the checkpoint has a tensor the model does not have, "
                      f"'layers.9.conv.weight' (the cfg has 5 layers); pass strict=False to "
                      f"ignore them (at edited.{fmt})")
    two = _rewrite(path, lambda t, m: t.update({"extra": torch.zeros(2),
                                                "layers.10.x": torch.zeros(1)}))
    e = _error(load_checkpoint, darkcfg.build(SHARE), two)
    assert str(e) == (f"the checkpoint has 2 tensors the model does not have, the first "
                      f"'extra'; pass strict=False to ignore them (at edited.{fmt})")


@pytest.mark.parametrize("fmt", FORMATS)
def test_shape_and_dtype_messages(tmp_path, fmt) -> None:
    path, _ = _saved(tmp_path, fmt)
    bad = _rewrite(path, lambda t, m: t.update({"layers.1.conv.weight": torch.zeros(8, 4, 3, 3)}))
    e = _error(load_checkpoint, darkcfg.build(SHARE), bad)
    assert str(e) == (f"tensor 'layers.1.conv.weight' is (8, 4, 3, 3) in the checkpoint, the "
                      f"model's is (8, 8, 3, 3) (cfg line {_layer_line(SHARE, 1)}) (at "
                      f"edited.{fmt}, in [convolutional] #1)")
    ints = _rewrite(path, lambda t, m: t.update(
        {"layers.0.bn.weight": torch.zeros(8, dtype=torch.int32)}))
    e = _error(load_checkpoint, darkcfg.build(SHARE), ints)
    dtype = "I32" if fmt == "safetensors" else "int32"
    assert str(e) == (f"tensor 'layers.0.bn.weight' is {dtype} in the checkpoint, the model's "
                      f"is floating-point (cfg line {_layer_line(SHARE, 0)}) (at "
                      f"edited.{fmt}, in [convolutional] #0)")
    # other float dtypes load, converted to the model's
    half_bn = torch.full((8,), 0.5, dtype=torch.half)
    half = _rewrite(path, lambda t, m: t.update({"layers.0.bn.weight": half_bn}))
    model = darkcfg.build(SHARE)
    load_checkpoint(model, half)
    assert torch.equal(model.layers[0].bn.weight, torch.full((8,), 0.5))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_different_cfg_is_named_in_errors_and_warned_about(tmp_path, fmt) -> None:
    path, saved = _saved(tmp_path, fmt)
    same_layout = "# a comment changes the text, not the tensors\n" + SHARE
    model = darkcfg.build(same_layout)
    with pytest.warns(darkcfg.CfgWarning) as record:
        load_checkpoint(model, path)
    ours = hashlib.sha256(same_layout.encode()).hexdigest()[:12]
    theirs = hashlib.sha256(SHARE.encode()).hexdigest()[:12]
    assert [str(w.message) for w in record] == [
        f"the checkpoint was saved from a different cfg (cfg text, sha256 {theirs}...) than "
        f"this model's (cfg text, sha256 {ours}...); loaded anyway, the shapes fit (at a.{fmt})"]
    assert _same_state(model, _state(saved))
    wider = SHARE.replace("size=3", "size=5", 1)
    e = _error(load_checkpoint, darkcfg.build(wider), path)
    assert str(e) == (f"tensor 'layers.0.conv.weight' is (8, 3, 3, 3) in the checkpoint, the "
                      f"model's is (8, 3, 5, 5) (cfg line {_layer_line(wider, 0)}); the "
                      f"checkpoint was saved from a different cfg (cfg text) (at a.{fmt}, in "
                      f"[convolutional] #0)")


def test_same_cfg_with_other_input_size_loads_without_warning(tmp_path) -> None:
    path, saved = _saved(tmp_path, "safetensors")
    model = darkcfg.build(SHARE, width=32, height=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", darkcfg.CfgWarning)
        assert load_checkpoint(model, path).same_cfg is True
    assert _same_state(model, _state(saved))


def test_not_a_checkpoint_messages(tmp_path) -> None:
    model = darkcfg.build(SHARE)
    weights = tmp_path / "w.weights"
    model.save_darknet_weights(weights)
    cases = {
        "w.safetensors": (weights.read_bytes(),
                          "not a safetensors file: it looks like a Darknet .weights file (name it "
                          ".weights) (safetensors: Error while deserializing header: header too "
                          "large) (at w.safetensors)"),
        "w.pt": (weights.read_bytes(),
                 "not a PyTorch .pt file (a zip archive or a pickle): it looks like a Darknet "
                 ".weights file (name it .weights) (at w.pt)"),
        "cfg.pt": (SHARE.encode(), "not a PyTorch .pt file (a zip archive or a pickle): it looks "
                                   "like a cfg (text) file (at cfg.pt)"),
        "junk.safetensors": (b"\x07" * 64,
                             "not a safetensors file: its contents are not a known format "
                             "(safetensors: Error while deserializing header: header too large) "
                             "(at junk.safetensors)"),
        "empty.pt": (b"", "checkpoint file is empty (at empty.pt)"),
        "empty.safetensors": (b"", "checkpoint file is empty (at empty.safetensors)"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert str(_error(load_checkpoint, model, tmp_path / name)) == message, name
    # a .pt and a safetensors file swapped
    save_checkpoint(model, tmp_path / "real.safetensors")
    (tmp_path / "s.pt").write_bytes((tmp_path / "real.safetensors").read_bytes())
    assert str(_error(load_checkpoint, model, tmp_path / "s.pt")) == (
        "not a PyTorch .pt file (a zip archive or a pickle): it looks like a safetensors file "
        "(name it .safetensors) (at s.pt)")
    save_checkpoint(model, tmp_path / "real.pt")
    (tmp_path / "p.safetensors").write_bytes((tmp_path / "real.pt").read_bytes())
    assert str(_error(load_checkpoint, model, tmp_path / "p.safetensors")).startswith(
        "not a safetensors file: it is a zip archive (a PyTorch .pt checkpoint?) (safetensors: ")


def test_unreadable_paths_and_suffixes(tmp_path) -> None:
    model = darkcfg.build(SHARE)
    assert str(_error(load_checkpoint, model, tmp_path / "none.pt")) == \
        "cannot read checkpoint: No such file or directory (at none.pt)"
    (tmp_path / "dir.safetensors").mkdir()
    assert str(_error(load_checkpoint, model, tmp_path / "dir.safetensors")) == \
        "cannot read checkpoint: it is a folder (at dir.safetensors)"
    os.mkfifo(tmp_path / "fifo.pt")  # would block a reader forever
    assert str(_error(load_checkpoint, model, tmp_path / "fifo.pt")) == \
        "cannot read checkpoint: it is not a regular file (at fifo.pt)"
    allowed = "name the file with one of .weights, .safetensors, .pt, .pth"
    assert str(_error(load_checkpoint, model, tmp_path / "m.bin")) == \
        f"cannot tell the file format from suffix '.bin': {allowed} (at m.bin)"
    assert str(_error(save_checkpoint, model, tmp_path / "m")) == \
        f"cannot tell the file format from no suffix: {allowed} (at m)"
    assert str(_error(convert, SHARE, tmp_path / "a.weights", tmp_path / "a.onnx")) == \
        f"cannot tell the file format from suffix '.onnx': {allowed} (at a.onnx)"
    assert str(_error(load_checkpoint, model, tmp_path / "w.weights")) == \
        "a .weights file is read by load_darknet_weights, not load_checkpoint (at w.weights)"
    assert str(_error(save_checkpoint, model, tmp_path / "w.weights")) == \
        "a .weights file is written by save_darknet_weights (or convert), not save_checkpoint " \
        "(at w.weights)"
    for name in ("a.pt", "a.safetensors"):
        assert str(_error(save_checkpoint, model, tmp_path / "no" / name)) == \
            f"cannot write checkpoint: its folder does not exist (at {name})"
    (tmp_path / "ro").mkdir(mode=0o500)
    if not os.access(tmp_path / "ro", os.W_OK):  # (root may write anywhere)
        for name in ("a.pt", "a.safetensors"):
            assert str(_error(save_checkpoint, model, tmp_path / "ro" / name)).startswith(
                "cannot write checkpoint: ")
    save_checkpoint(model, tmp_path / "a.pt")
    assert str(_error(convert, SHARE, tmp_path / "a.pt", tmp_path / "a.pt")) == \
        "the destination is the source file; write to another file (at a.pt)"


def test_pt_structure_messages(tmp_path) -> None:
    model = darkcfg.build(SHARE)
    cases = {
        "list.pt": ([torch.zeros(1)], "the .pt file holds a list, not a state_dict (a dict of "
                                      "tensors) or a darkcfg checkpoint (at list.pt)"),
        "tensor.pt": (torch.zeros(3), "the .pt file holds a Tensor, not a state_dict (a dict of "
                                      "tensors) or a darkcfg checkpoint (at tensor.pt)"),
        "int.pt": ({"layers.0.conv.weight": 3}, "the .pt file's state_dict entry "
                   "'layers.0.conv.weight' is of type int, not a tensor (at int.pt)"),
        "key.pt": ({1: torch.zeros(1)}, "the .pt file's state_dict has a key that is not a "
                                        "string: '1' (at key.pt)"),
        "meta.pt": ({"format": "darkcfg", "metadata": {"a": 1}, "state_dict": {}},
                    "the .pt file's metadata is not a dict of strings (at meta.pt)"),
        "nosd.pt": ({"format": "darkcfg", "metadata": {}},
                    "the .pt file holds a NoneType, not a state_dict (a dict of tensors) or a "
                    "darkcfg checkpoint (at nosd.pt)"),
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        assert str(_error(load_checkpoint, model, tmp_path / name)) == message, name


def test_damaged_pt_file(tmp_path) -> None:
    path, _ = _saved(tmp_path, "pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    message = str(_error(load_checkpoint, darkcfg.build(SHARE), tmp_path / "cut.pt"))
    assert re.fullmatch(r"damaged \.pt file: torch\.load failed with \w+: [^\n]+ \(at cut\.pt\)",
                        message), message


def test_damaged_safetensors_file(tmp_path) -> None:
    path, _ = _saved(tmp_path, "safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    model = darkcfg.build(SHARE)
    before = _state(model)
    message = str(_error(load_checkpoint, model, tmp_path / "cut.safetensors"))
    assert re.fullmatch(r"damaged safetensors file \(safetensors: [^\n]+\) \(at cut\.safetensors\)",
                        message), message
    assert _same_state(model, before)


def test_bad_header_metadata(tmp_path) -> None:
    path, _ = _saved(tmp_path, "safetensors")
    bad = _rewrite(path, lambda t, m: m.update({"darkcfg.header_seen": "-1"}))
    assert str(_error(load_checkpoint, darkcfg.build(SHARE), bad)) == \
        "checkpoint metadata darkcfg.header_seen='-1' is not a Darknet header value (at " \
        "edited.safetensors)"
    bad = _rewrite(path, lambda t, m: m.update({"darkcfg.header_major": "70000"}))
    assert str(_error(load_checkpoint, darkcfg.build(SHARE), bad)) == \
        "checkpoint metadata holds an invalid Darknet header (version 70000.2.5, seen 0) (at " \
        "edited.safetensors)"
    bad = _rewrite(path, lambda t, m: m.update({"darkcfg.header_minor": "1",
                                                "darkcfg.header_seen": str(2**32)}))
    assert str(_error(load_checkpoint, darkcfg.build(SHARE), bad)) == \
        f"checkpoint metadata holds an invalid Darknet header (version 0.1.5, seen {2**32}) (at " \
        f"edited.safetensors)"


class _RunsCode:
    """A pickle that would run a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_pt_is_refused_and_runs_nothing(tmp_path, how) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"layers.0.conv.weight": _RunsCode(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    model = darkcfg.build(SHARE)
    before = _state(model)
    e = _error(load_checkpoint, model, path)
    assert str(e).startswith("refused to load the .pt file: it holds Python objects other than "
                             "tensors, numbers and strings, which torch.load(weights_only=True) "
                             "does not allow (")
    assert "system" in str(e) and "\n" not in str(e) and str(e).endswith(" (at evil.pt)")
    assert not marker.exists()
    assert _same_state(model, before)
    e = _error(convert, SHARE, path, tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


# -- atomicity --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_load_changes_nothing(tmp_path, fmt) -> None:
    path, _ = _saved(tmp_path, fmt)
    model = darkcfg.build(SHARE)
    model.weights_header = WeightsHeader(0, 2, 5, 99)
    before = _state(model)
    edits = [
        lambda t, m: t.update({"layers.4.conv.bias": torch.zeros(3)}),  # the last tensor
        lambda t, m: t.update({"layers.3.conv.bias": torch.zeros(8, dtype=torch.int64)}),
        lambda t, m: t.pop("layers.3.conv.bias"),
        lambda t, m: t.update({"layers.99.conv.bias": torch.zeros(8)}),
    ]
    for edit in edits:
        bad = _rewrite(path, lambda t, m, edit=edit: [t.pop("layers.4.conv.bias", None),
                                                      edit(t, m)])
        _error(load_checkpoint, model, bad)
        assert _same_state(model, before)
        assert model.weights_header == WeightsHeader(0, 2, 5, 99)


def test_fused_models_are_refused(tmp_path) -> None:
    path, _ = _saved(tmp_path, "safetensors")
    model = darkcfg.build(SHARE).fuse()
    with pytest.raises(ValueError, match=r"^cannot save a checkpoint from a fused model \(fuse\(\) "
                       r"folded its BatchNorm layers away\); use the model before fuse\(\)$"):
        save_checkpoint(model, tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match=r"^cannot load a checkpoint into a fused model"):
        load_checkpoint(model, path)
    assert not (tmp_path / "f.safetensors").exists()


# -- darkcfg.load by suffix -------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pth"])
def test_darkcfg_load_accepts_checkpoints_by_suffix(tmp_path, fmt) -> None:
    cfg = _cfg_file(tmp_path, "share_index")
    weights = _random_weights(tmp_path, cfg, header=(0, 2, 5, 77))
    convert(cfg, weights, tmp_path / f"c.{fmt}")
    original = darkcfg.load(cfg, weights)
    model = darkcfg.load(cfg, tmp_path / f"c.{fmt}")
    assert model.weights_header == WeightsHeader(0, 2, 5, 77)
    assert _same_state(model, _state(original))
    x = _input(model)
    assert _close(_outputs(model, x), _outputs(original, x))


# -- command line -----------------------------------------------------------------------------
def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_convert_and_back(tmp_path, capsys) -> None:
    cfg = _cfg_file(tmp_path, "share_index")
    weights = _random_weights(tmp_path, cfg, header=(0, 2, 5, 31337))
    dst = tmp_path / "m.safetensors"
    code, out, err = _run(capsys, cfg, weights, dst)
    assert (code, err) == (0, "")
    with safe_open(str(dst), "pt") as f:
        stored = [f.get_tensor(k) for k in f.keys()]
    values = sum(t.numel() for t in stored)
    assert out == (f"wrote {dst}: safetensors, {len(stored)} tensors, {values:,} values, "
                   f"{dst.stat().st_size:,} bytes; Darknet header 0.2.5, seen 31337\n")
    back = tmp_path / "back.weights"
    code, out, err = _run(capsys, cfg, dst, back)
    assert (code, err) == (0, "")
    assert back.read_bytes() == weights.read_bytes()
    floats = (len(weights.read_bytes()) - 20) // 4
    assert out == (f"wrote {back}: Darknet .weights, 12 segments, {floats:,} values, "
                   f"{back.stat().st_size:,} bytes; Darknet header 0.2.5, seen 31337\n")


def test_cli_errors_and_no_strict(tmp_path, capsys) -> None:
    detector = tmp_path / "detector.cfg"
    detector.write_text(SHARE + BACKBONE_EXTRA)
    weights = _random_weights(tmp_path, detector)
    cfg = _cfg_file(tmp_path, "share_index")
    code, out, err = _run(capsys, cfg, weights, tmp_path / "a.pt")
    assert code == 1 and out == ""
    assert err.startswith("darkcfg: error: weights file has 45 floats left over after layer 4 ")
    assert err.count("\n") == 1
    code, out, err = _run(capsys, cfg, weights, tmp_path / "a.pt", "--no-strict")
    assert code == 0
    assert out.endswith("; the last 45 floats of detector.weights did not fit the cfg and were "
                        "dropped\n")
    assert "left unread" in err
    code, out, err = _run(capsys, cfg, weights, tmp_path / "a.txt")
    assert (code, out) == (1, "")
    assert err == ("darkcfg: error: cannot tell the file format from suffix '.txt': name the "
                   "file with one of .weights, .safetensors, .pt, .pth (at a.txt)\n")
