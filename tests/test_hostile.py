"""Hostile and broken input: every bad cfg or weights file is a located darkcfg error (never a bare
Python exception, a hang or an absurd allocation); Darknet's quirks are followed and warned about;
a failed weights load changes nothing. The big random run is tools/fuzz.py; here the corpus of
tests/invalid and modest hypothesis runs."""

from __future__ import annotations

import ast
import math
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st, target

import darkcfg
from darkcfg.cli import main
from darkcfg.layers._common import pad_or_crop
from darkcfg.limits import DEFAULT_LIMITS, Limits
from darkcfg.weights import WeightsHeader
from oracle import REPO

INVALID = REPO / "tests" / "invalid"
INVALID_CFGS = sorted(INVALID.glob("*.cfg"))
NET = "[net]\nwidth=16\nheight=16\nchannels=3\n"


def _expected(cfg: Path) -> str:
    return cfg.with_suffix(".txt").read_text(encoding="utf-8").removesuffix("\n")


# --- the invalid corpus ---------------------------------------------------------------------------

def test_invalid_corpus_is_complete() -> None:
    assert len(INVALID_CFGS) >= 70
    assert sorted(p.stem for p in INVALID.glob("*.txt")) == [p.stem for p in INVALID_CFGS]


@pytest.mark.parametrize("cfg", INVALID_CFGS, ids=lambda p: p.stem)
def test_invalid_cfg_gives_its_exact_error(cfg: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        with pytest.raises(darkcfg.CfgError) as info:
            darkcfg.parse(cfg)
    err = info.value
    assert type(err) is darkcfg.CfgError
    assert str(err) == _expected(cfg)
    assert err.path == str(cfg)
    if cfg.stem not in ("empty", "only_comments"):
        assert err.lineno is not None  # every message names the line


@pytest.mark.parametrize("cfg", INVALID_CFGS, ids=lambda p: p.stem)
def test_cli_prints_the_error_as_one_line(cfg: Path, capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        code = main(["build", str(cfg)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == f"darkcfg: error: {_expected(cfg)}\n"


# --- Darknet's quirks: do what Darknet does, and warn naming the line ----------------------------

def _warnings_of(text: str) -> tuple[darkcfg.Network, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = darkcfg.parse(text)
    return net, [str(w.message) for w in caught if issubclass(w.category, darkcfg.CfgWarning)]


def test_unknown_activation_is_relu_with_a_warning() -> None:
    net, msgs = _warnings_of(NET + "[convolutional]\nfilters=4\nactivation=lekay\n")
    assert net[0].options.activation == "relu"
    assert msgs == ["unknown activation 'lekay': Darknet uses relu (at line 7, in [convolutional] #0)"]


def test_first_of_duplicate_keys_wins_with_a_warning() -> None:
    net, msgs = _warnings_of(NET + "[convolutional]\nfilters=4\nsize=3\nfilters=8\n")
    assert net[0].out_shape.c == 4
    assert msgs == ["duplicate option 'filters': Darknet uses the first value '4' from line 6 "
                    "(at line 8, in [convolutional] #0)"]


def test_empty_value_keeps_the_default_with_a_warning() -> None:
    net, msgs = _warnings_of(NET + "[convolutional]\nfilters=\nsize=3\n")
    assert net[0].out_shape.c == 1  # Darknet's default filters=1
    assert msgs == ["option 'filters' has an empty value and is ignored (at line 6, in [convolutional])"]


def test_line_without_equals_is_ignored_with_a_warning() -> None:
    net, msgs = _warnings_of(NET + "[convolutional]\nfilters 4\n")
    assert net[0].out_shape.c == 1
    assert msgs == ["line 'filters4' has no '=' and is ignored (at line 6, in [convolutional])"]


def test_control_characters_in_values_are_escaped_in_messages() -> None:
    with pytest.raises(darkcfg.CfgError) as info:
        darkcfg.parse(NET + "[convolutional]\nfilters=4\n[shortcut]\nfrom=-1\n"
                      "weights_type=\x1b[2J\u2028x\n")
    text = str(info.value)
    assert text.isprintable() and "\\x1b" in text and "\\u2028" in text


def test_flood_of_warnings_is_summed_up() -> None:
    junk = "".join(f"junk{i}=1\n" for i in range(DEFAULT_LIMITS.max_warnings + 500))
    _, msgs = _warnings_of(NET + "[convolutional]\n" + junk)
    assert len(msgs) == DEFAULT_LIMITS.max_warnings + 1
    assert msgs[-1] == "500 more warnings were not shown (only the first 1,000 are)"


# --- limits: absurd sizes are refused before anything is allocated --------------------------------

def test_absurd_model_is_refused_by_build_before_allocating() -> None:
    cfg = INVALID / "filters_huge.cfg"
    t = time.perf_counter()
    with pytest.raises(darkcfg.CfgError, match=r"too many weights: this layer has 28,000,000,000 "
                                               r"\(112\.0 GB as float32\)"):
        darkcfg.build(cfg)
    assert time.perf_counter() - t < 30  # (no 112 GB were touched; the parse alone refuses it)


def test_limits_can_be_raised_and_lowered_by_the_caller() -> None:
    big = Limits(max_weights=10**11, max_activations=10**12)
    fc = "[net]\nwidth=416\nheight=416\nchannels=3\n[connected]\noutput=3000\n"
    with pytest.raises(darkcfg.CfgError, match="^too many weights: this layer has 1,557,507,000 "):
        darkcfg.parse(fc)
    assert darkcfg.parse(fc, limits=big).weight_count == 1_557_507_000  # parse allocates nothing
    wide = "[net]\nwidth=10000\nheight=10000\nchannels=3\n" + "[convolutional]\nfilters=16\n" * 3
    with pytest.raises(darkcfg.CfgError, match="^layer outputs too large: the output 16x10000x10000"):
        darkcfg.parse(wide)
    assert darkcfg.parse(wide, limits=big)[2].out_shape == darkcfg.Shape(16, 10000, 10000)
    # whatever the limits, Darknet's int cannot count more
    with pytest.raises(darkcfg.CfgError) as info:
        darkcfg.parse(INVALID / "filters_huge.cfg", limits=big)
    assert info.value.msg == ("this layer has 28,000,000,000 weights, more than Darknet's 32-bit "
                              "int can count (2,147,483,647)")
    tight = Limits(max_weights=100)
    cfg = NET + "[convolutional]\nfilters=16\nsize=3\n"
    with pytest.raises(darkcfg.CfgError, match=r"^too many weights: this layer has 448 \(1\.8 kB as "
                                               r"float32\), more than the limit of 100 \(400 bytes\)"):
        darkcfg.parse(cfg, limits=tight)
    for call in (lambda: darkcfg.build(cfg, limits=tight), lambda: darkcfg.load(cfg, limits=tight),
                 lambda: darkcfg.parse(darkcfg.parse(cfg), limits=tight)):
        with pytest.raises(darkcfg.CfgError, match="too many weights"):
            call()
    assert darkcfg.build(cfg, limits=Limits(max_weights=448)).network.weight_count == 448


def test_limits_are_checked_layer_by_layer_in_total() -> None:
    conv = "[convolutional]\nfilters=8\nsize=3\npad=1\n"
    tight = Limits(max_activations=16 * 16 * (3 + 8 + 8))
    darkcfg.parse(NET + conv * 2, limits=tight)
    with pytest.raises(darkcfg.CfgError) as info:
        darkcfg.parse(NET + conv * 3, limits=tight)
    assert info.value.msg.startswith("layer outputs too large: the output 8x16x16 has 2,048 values; "
                                     "with the input and the layers before it one image needs 6,912")
    assert info.value.layer_index == 2


def test_limits_are_validated() -> None:
    with pytest.raises(TypeError, match="max_weights"):
        Limits(max_weights=-1)
    with pytest.raises(TypeError, match="limits must be a darkcfg.Limits"):
        darkcfg.parse(NET + "[convolutional]\n", limits={"max_weights": 1})


def test_every_public_cfg_fits_the_default_limits() -> None:
    # the largest public cfgs (yolov4_p7, cspx-p7) need 288M weights, 1.56G output floats and
    # 1,637 BFLOPs per image (test_corpus parses all of them with the defaults)
    assert DEFAULT_LIMITS.max_weights >= 2 * 288_000_000
    assert DEFAULT_LIMITS.max_activations >= 2 * 1_561_016_448
    assert DEFAULT_LIMITS.max_bflops >= 10 * 1_637


@pytest.mark.parametrize("make,message", [
    (lambda: NET + "[convolutional]\nfilters=4#" + "x" * 70_000 + "\n",
     "line of 70,010 characters, more than the limit of 65,536 (Limits.max_line) (at line 6)"),
    (lambda: NET + "[empty]\n" * 20_001,
     "more than 20,000 layers (Limits.max_layers) (at line 20005, in [empty])"),
    (lambda: NET + "#" * 4 * 2**20 + "\n",
     "cfg text of 4,194,341 characters, more than the limit of 4,194,304 (Limits.max_cfg_bytes)"),
])
def test_oversized_text_is_refused(make, message) -> None:
    with pytest.raises(darkcfg.CfgError) as info:
        darkcfg.parse(make())
    assert str(info.value) == message


def test_files_that_are_not_cfgs(tmp_path) -> None:
    big = tmp_path / "yolov4.weights"
    with open(big, "wb") as fh:
        fh.truncate(250_000_000)  # sparse: nothing is written, and nothing must be read
    cases = [
        (big, "cfg file is 250.0 MB, more than the limit of 4.2 MB (Limits.max_cfg_bytes): a cfg is "
              "text of a few kB (is it a .weights file?)"),
        (tmp_path, "cannot read cfg file: it is a folder"),
        (tmp_path / "missing.cfg", "cannot read cfg file: No such file or directory"),
    ]
    if os.path.exists("/dev/zero"):
        cases.append((Path("/dev/zero"), "cannot read cfg file: it is not a regular file"))
    for path, message in cases:
        with pytest.raises(darkcfg.CfgError) as info:
            darkcfg.parse(path)
        assert info.value.msg == message, path


# --- weights files ---------------------------------------------------------------------------------

CFG = (NET.replace("16", "8") + "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\n"
       "activation=leaky\n[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=2\nsize=1\n"
       "activation=linear\n[connected]\noutput=3\nactivation=linear\n")
# conv0: 4 + 12 + 108 = 124 (line 5); conv2: 2 + 8 = 10 (line 14); fc3: 3 + 3*32 = 99 (line 18)
TOTAL = 233


def _file(path: Path, floats, version=(0, 2, 5), seen=7) -> Path:
    path.write_bytes(WeightsHeader(*version, seen=seen).to_bytes()
                     + np.asarray(floats, "<f4").tobytes())
    return path


def _good_values() -> np.ndarray:
    values = np.random.default_rng(1).uniform(0.5, 1.5, TOTAL).astype(np.float32)
    return values


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_layout_of_the_test_cfg() -> None:
    assert [l.weight_count for l in darkcfg.parse(CFG)] == [124, 0, 10, 99]


@pytest.mark.parametrize("data,message", [
    (b"", "weights file is 0 bytes, shorter than its 12-byte version header"),
    (WeightsHeader(0, 2, 5, 7).to_bytes(),
     "weights file holds only its 20-byte header (version 0.2.5, seen 7) and no weights; the cfg "
     "needs 233 floats, layer 0 ([convolutional] at line 5) the first 124"),
    (WeightsHeader(0, 1, 0, 7).to_bytes() + np.ones(100, "<f4").tobytes(),
     "weights file ends inside layer 0 ([convolutional] at line 5): it needs 124 floats, 100 are "
     "left"),
    (WeightsHeader(0, 2, 5, 7).to_bytes() + np.ones(200, "<f4").tobytes(),
     "weights file ends inside layer 3 ([connected] at line 18): it needs 99 floats, 66 are left "
     "(134 read for layers 0-2)"),
    (WeightsHeader(0, 2, 5, 7).to_bytes() + np.ones(240, "<f4").tobytes(),
     "weights file has 7 floats left over after layer 3 (233 of 240 read): it does not fit this "
     "cfg; pass strict=False to load the first 233 floats anyway"),
    (WeightsHeader(0, 2, 5, 7).to_bytes() + np.ones(233, "<f4").tobytes() + b"\0\0",
     "weights file body is 934 bytes, not a whole number of float32 values"),
    (np.array([0, -2, 5, 0, 0], "<i4").tobytes(), "weights header version 0.-2.5 is not valid"),
    (np.array([70000, 2, 5, 0, 0], "<i4").tobytes() + np.ones(233, "<f4").tobytes(),
     "weights header version 70000.2.5 is not valid: this does not look like a Darknet .weights "
     "file"),
    (b"PK\x03\x04" + bytes(400), "weights header version 67324752.0.0 is not valid: this is a zip "
                                 "archive (e.g. a PyTorch .pt checkpoint), not a Darknet .weights "
                                 "file"),
    (b"\x80\x02}q\x00(X\x05\x00\x00\x00" + bytes(100),
     "weights header version 1904018048.89663488.0 is not valid: this is a Python pickle, not a Darknet "
     ".weights file"),
    (b"[net]\nwidth=8\nheight=8\nchannels=3\n",
     "weights header version 1952804443.1769409117.1030255716 is not valid: this looks like a cfg "
     "(text) file, not a Darknet .weights file"),
], ids=["empty", "header-only", "ends-in-layer-0", "ends-in-layer-3", "left-over", "odd-bytes",
        "negative-version", "absurd-version", "zip", "pickle", "cfg-text"])
def test_bad_weights_files_have_exact_messages_and_change_nothing(tmp_path, data, message) -> None:
    model = darkcfg.build(CFG)
    model.load_darknet_weights(_file(tmp_path / "good.weights", _good_values()))
    before = _state(model)
    (tmp_path / "bad.weights").write_bytes(data)
    with pytest.raises(darkcfg.WeightsError) as info:
        model.load_darknet_weights(tmp_path / "bad.weights")
    assert info.value.msg == message
    assert info.value.path == str(tmp_path / "bad.weights")
    assert _same(before, _state(model))  # the previous weights are all still there
    assert model.last_load.floats_read == TOTAL


def test_weights_of_another_cfg(tmp_path) -> None:
    other = darkcfg.build(NET.replace("16", "8") + "[convolutional]\nfilters=16\nsize=3\n")
    other.save_darknet_weights(tmp_path / "other.weights")  # 16 + 432 floats
    model = darkcfg.build(CFG)
    with pytest.raises(darkcfg.WeightsError) as info:
        model.load_darknet_weights(tmp_path / "other.weights")
    assert info.value.msg == ("weights file has 215 floats left over after layer 3 (233 of 448 "
                              "read): it does not fit this cfg; pass strict=False to load the "
                              "first 233 floats anyway")


def test_misaligned_weights_warn_about_negative_variances(tmp_path) -> None:
    values = _good_values()
    values[12:16] = [-1, 2, -3, 4]  # layer 0's BN variances
    model = darkcfg.build(CFG)
    with pytest.warns(darkcfg.CfgWarning) as record:
        model.load_darknet_weights(_file(tmp_path / "w.weights", values))
    assert [str(w.message) for w in record] == [
        "layer 0 ([convolutional] at line 5): 2 of its 4 BN variances are negative, which makes "
        "its outputs NaN (does the weights file belong to this cfg?) (at w.weights)"]


def test_nan_and_inf_weights_load_with_a_warning_naming_the_layer(tmp_path) -> None:
    values = _good_values()
    values[[130, 131, 140]] = [np.nan, np.inf, -np.inf]  # layer 2 (130, 131) and layer 3 (140)
    model = darkcfg.build(CFG)
    path = _file(tmp_path / "w.weights", values)
    with pytest.warns(darkcfg.CfgWarning) as record:
        model.load_darknet_weights(path)
    assert [str(w.message) for w in record] == [
        "layer 2 ([convolutional] at line 14): 2 of its 10 weights are NaN or infinite; loaded as "
        "they are, its outputs will be NaN (at w.weights)",
        "layer 3 ([connected] at line 18): 1 of its 99 weights are NaN or infinite; loaded as "
        "they are, its outputs will be NaN (at w.weights)"]
    assert torch.isnan(model.layers[2].conv.weight).any()
    assert model.last_load.floats_read == TOTAL


def test_huge_weights_file_is_refused_from_its_size(tmp_path) -> None:
    path = _file(tmp_path / "huge.weights", _good_values())
    with open(path, "r+b") as fh:
        fh.truncate(20 + 4 * 2_000_000_000)  # 8 GB, sparse
    model = darkcfg.build(CFG)
    t = time.perf_counter()
    with pytest.raises(darkcfg.WeightsError, match="1,999,999,767|1999999767"):
        model.load_darknet_weights(path)
    with pytest.warns(darkcfg.CfgWarning, match="1999999767 floats were left unread"):
        report = model.load_darknet_weights(path, strict=False)  # reads only the 233 it uses
    assert report.floats_read == TOTAL
    assert time.perf_counter() - t < 10


def test_weights_path_that_is_not_a_file(tmp_path) -> None:
    model = darkcfg.build(CFG)
    with pytest.raises(darkcfg.WeightsError, match="cannot read weights file: Is a directory"):
        model.load_darknet_weights(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(darkcfg.WeightsError,
                           match="cannot read weights file: it is not a regular file"):
            model.load_darknet_weights("/dev/zero")


def test_writing_weights_to_a_folder_is_a_weights_error(tmp_path) -> None:
    with pytest.raises(darkcfg.WeightsError, match="cannot write weights file: Is a directory"):
        darkcfg.build(CFG).save_darknet_weights(tmp_path)


# --- no code from files -----------------------------------------------------------------------------

def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            yield name, node


def test_nothing_evaluates_text_and_checkpoints_load_weights_only() -> None:
    """darkcfg never evaluates cfg text, and loads .pt files only with torch.load(weights_only=True)."""
    for path in sorted((REPO / "darkcfg").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for name, node in _calls(tree):
            builtin = isinstance(node.func, ast.Name)
            assert not (builtin and name in ("eval", "exec", "compile", "__import__")), \
                f"{path.name}:{node.lineno} calls {name}"
            assert name != "literal_eval", f"{path.name}:{node.lineno}"
            if name == "load" and isinstance(node.func, ast.Attribute) and \
                    getattr(node.func.value, "id", "") == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and \
                    kw["weights_only"].value is True, f"{path.name}:{node.lineno}"
        source = path.read_text()
        assert not re.search(r"^\s*import pickle|^\s*from pickle|import marshal", source, re.M), path


# --- properties: random damage gives a Network or a CfgError, never anything else -------------------

BASE_CFGS = [p.read_text(encoding="utf-8") for p in sorted((REPO / "cfgs").glob("*.cfg"))] + \
    [p.read_text(encoding="utf-8") for p in INVALID_CFGS if p.stat().st_size < 4000] + [CFG]
EDGE_VALUES = ["0", "-1", "1", "-3", "2", "7", "2147483647", "2147483648", "-2147483649",
               "1000000000", "100000", "9" * 40, "3.5", "1e40", "nan", "", "1,2", "-1,-2", "x",
               "4#c"]
GARBAGE = "[]=#;,- .0123456789ax\x00\x1b\u2028\r\t"


@st.composite
def damaged_cfgs(draw) -> str:
    lines = draw(st.sampled_from(BASE_CFGS)).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "garble", "number", "number", "truncate"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif op == "garble":
            k = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:k] + draw(st.text(GARBAGE, min_size=1, max_size=3)) + lines[i][k:]
        elif op == "number":
            spans = [(n, m.span()) for n, l in enumerate(lines)
                     for m in re.finditer(r"-?\d+(?:\.\d*)?", l)]
            if spans:
                n, (a, b) = draw(st.sampled_from(spans))
                value = draw(st.sampled_from(EDGE_VALUES) | st.integers(-10**12, 10**12).map(str))
                lines[n] = lines[n][:a] + value + lines[n][b:]
        else:
            text = "\n".join(lines)
            lines = text[:draw(st.integers(0, len(text)))].split("\n")
    return "\n".join(lines)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_cfgs())
def test_damaged_cfgs_give_a_network_or_a_cfg_error(text: str) -> None:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        try:
            net = darkcfg.parse(text)
        except darkcfg.CfgError as e:
            assert "\n" not in str(e) and str(e).isprintable()
            net = None
    target(time.perf_counter() - t, label="parse seconds")  # steers towards slow inputs; see fuzz.py
    if net is not None:
        assert len(net) > 0
        assert all(l.out_shape.size > 0 and l.weight_count >= 0 for l in net)
        assert net.weight_count <= DEFAULT_LIMITS.max_weights
        assert math.isfinite(net.total_bflops)


def _graph(net: darkcfg.Network) -> list[tuple]:
    return [(net.net.width, net.net.height, net.net.channels)] + [
        (l.type, l.inputs, l.out_shape, l.options, l.segments) for l in net]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_cfgs(), st.data())
def test_parse_dump_parse_is_stable_and_edits_are_atomic(text: str, data) -> None:
    """Whatever parses dumps to text that parses to the same graph; an edit either gives such a
    network or a CfgError/ValueError and leaves the network as it was."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        try:
            net = darkcfg.parse(text)
        except darkcfg.CfgError:
            return
        assert _graph(darkcfg.parse(darkcfg.dump(net))) == _graph(net)
        before, source = _graph(net), darkcfg.dump(net)
        i = data.draw(st.integers(0, len(net) - 1))
        key = data.draw(st.sampled_from(["filters", "size", "stride", "layers", "from", "groups",
                                         "activation", "mask", "pad", "classes"]))
        value = data.draw(st.sampled_from(EDGE_VALUES[:8] + ["linear", "-1,0", None]))
        edit = data.draw(st.sampled_from(["set", "insert", "delete"]))
        try:
            if edit == "set":
                net.set(i, {key: value})
            elif edit == "insert":
                net.insert(i, data.draw(st.sampled_from(["dropout", "maxpool", "route", "conv"])),
                           {} if value is None else {key: value})
            else:
                net.delete(i)
        except (darkcfg.CfgError, ValueError):
            assert _graph(net) == before and darkcfg.dump(net) == source
            return
        assert _graph(darkcfg.parse(darkcfg.dump(net))) == _graph(net)


_MODEL = None


def _model() -> darkcfg.DarknetModel:
    global _MODEL
    if _MODEL is None:
        _MODEL = darkcfg.build(CFG)
    return _MODEL


def _good_file_bytes() -> bytes:
    return WeightsHeader(0, 2, 5, 7).to_bytes() + _good_values().astype("<f4").tobytes()


@st.composite
def damaged_weights(draw) -> bytes:
    good = _good_file_bytes()
    kind = draw(st.sampled_from(["random", "truncate", "extend", "flip"]))
    if kind == "random":
        return draw(st.binary(max_size=2 * len(good)))
    if kind == "truncate":
        return good[:draw(st.integers(0, len(good)))]
    if kind == "extend":
        return good + draw(st.binary(min_size=1, max_size=64))
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged_weights(), st.booleans())
def test_damaged_weights_load_or_raise_weights_error(tmp_path, data: bytes, strict: bool) -> None:
    model = _model()
    with torch.no_grad():  # start every example from the same finite parameters
        for t in model.state_dict().values():
            t.fill_(0.25)
    before = _state(model)
    path = tmp_path / "d.weights"
    path.write_bytes(data)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            report = model.load_darknet_weights(path, strict=strict)
        except darkcfg.WeightsError as e:
            assert "\n" not in str(e)
            assert _same(before, _state(model))
            report = None
    target(time.perf_counter() - t, label="load seconds")
    if report is not None:
        assert report.floats_read == TOTAL
        finite = all(torch.isfinite(v).all() for v in model.state_dict().values())
        assert finite or any("NaN or infinite" in str(w.message) for w in caught)


# --- windows far larger than the map: computed without padding the map to hold them ------------

def _run_one(cfg: str, x: torch.Tensor) -> tuple[darkcfg.DarknetModel, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        model = darkcfg.build(cfg)
    with torch.no_grad():
        return model, model(x)[0]


# Padding the 16x16 map for these windows would take hundreds of GB: the old code failed to
# allocate; now each runs on the map alone.
def test_huge_pool_windows_are_clipped_to_the_map() -> None:
    x = torch.randn(2, 4, 16, 16)
    net = NET.replace("channels=3", "channels=4")
    _, y = _run_one(net + "[maxpool]\nsize=200000\nstride=200000\n", x)
    assert torch.equal(y, x.amax((2, 3), keepdim=True))
    _, y = _run_one(net + "[maxpool]\nsize=20000\nstride=1\n", x)
    assert y.shape == (2, 4, 16, 16) and torch.equal(y, x.amax((2, 3), keepdim=True).expand_as(y))
    _, y = _run_one(net + "[local_avgpool]\nsize=200000\nstride=200000\n", x)
    torch.testing.assert_close(y, x.mean((2, 3), keepdim=True))


def test_conv_taps_that_only_read_padding_are_skipped() -> None:
    x = torch.randn(1, 4, 16, 16)
    net = NET.replace("channels=4", "channels=4").replace("channels=3", "channels=4")
    model, y = _run_one(net + "[convolutional]\nfilters=8\nsize=3\npad=1\ndilation=100000\n"
                              "activation=linear\n", x)
    conv = model.layers[0].conv  # only the centre tap ever reads the map
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, conv.weight[:, :, 1:2, 1:2],
                                                             conv.bias))
    model, y = _run_one(net + "[convolutional]\nfilters=2\nsize=3\npadding=100000\n"
                              "stride=100000\nactivation=linear\n", x)
    assert y.shape == (1, 2, 3, 3)  # every tap reads padding but the centre window's
    conv = model.layers[0].conv
    bias = conv.bias.view(1, -1, 1, 1)
    assert torch.equal(y[..., [0, 0, 2, 2], [0, 2, 0, 2]], bias.expand(1, 2, 1, 4)[..., 0, :])


@st.composite
def windows(draw) -> tuple[int, ...]:
    size = draw(st.integers(1, 7))
    return (size, draw(st.integers(1, 40)), draw(st.integers(0, 3 * size + 20)),
            draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 12)),
            draw(st.integers(1, 12)))


def _darknet_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  stride: tuple[int, int], dilation: int, padding: int) -> torch.Tensor:
    """Darknet's dilated convolution, tap by tap: output (y, x) reads input (y*stride +
    i*dilation - padding*dilation, ...) where that is inside the map; out size (h + 2*padding -
    size)/stride + 1. (Where size != 2*padding+1 Darknet itself reads its buffer misaligned:
    this is what its output size implies, which darkcfg computes, with a warning.)"""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    out_h = (h + 2 * padding - k) // stride[0] + 1
    out_w = (w + 2 * padding - k) // stride[1] + 1
    y = bias.view(1, -1, 1, 1).repeat(n, 1, out_h, out_w).double()
    for i in range(k):
        for j in range(k):
            for oy in range(out_h):
                for ox in range(out_w):
                    r = oy * stride[0] + (i - padding) * dilation
                    q = ox * stride[1] + (j - padding) * dilation
                    if 0 <= r < h and 0 <= q < w:
                        y[:, :, oy, ox] += x[:, :, r, q].double() @ weight[:, :, i, j].double().T
    return y.float()


@settings(max_examples=150, deadline=None)
@given(windows())
def test_live_tap_conv_equals_the_padded_conv(params) -> None:
    size, dilation, padding, sy, sx, h, w = params
    cfg = (f"[net]\nwidth={w}\nheight={h}\nchannels=2\n[convolutional]\nfilters=3\nsize={size}\n"
           f"padding={padding}\nstride_y={sy}\nstride_x={sx}\ndilation={dilation}\n"
           f"activation=linear\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", darkcfg.CfgWarning)
            layer = darkcfg.build(cfg).layers[0]
    except darkcfg.CfgError:
        return  # an empty output: refused at parse time
    x = torch.randn(1, 2, h, w)
    with torch.no_grad():
        reference = _darknet_conv(x, layer.conv.weight, layer.conv.bias, (sy, sx),
                                  layer.opts.dilation, padding)
        live = layer._live_taps(h, w)
        if live is not None:
            torch.testing.assert_close(layer._live_conv(x, *live), reference, rtol=1e-5,
                                       atol=1e-5)
        torch.testing.assert_close(layer(x), reference, rtol=1e-5, atol=1e-5)


@settings(max_examples=150, deadline=None)
@given(windows())
def test_clipped_pool_windows_equal_the_padded_ones(params) -> None:
    size, _, padding, sy, sx, h, w = params
    size = size * 7
    for section in ("maxpool", "local_avgpool"):
        cfg = (f"[net]\nwidth={w}\nheight={h}\nchannels=2\n[{section}]\nsize={size}\n"
               f"padding={padding}\nstride_y={sy}\nstride_x={sx}\n")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", darkcfg.CfgWarning)
                layer = darkcfg.build(cfg).layers[0]
        except darkcfg.CfgError:
            return
        x = torch.randn(1, 2, h, w)
        pads = layer.pads(h, w)
        if section == "maxpool":
            padded = pad_or_crop(x, pads, value=float("-inf"))
            ref = torch.nn.functional.max_pool2d(padded, size, layer.stride)
            ref = ref.clamp(min=torch.finfo(x.dtype).min)  # Darknet's max starts at -FLT_MAX
            got = layer._clipped_max(x)
        else:
            f = torch.nn.functional
            sums = f.avg_pool2d(pad_or_crop(x, pads), size, layer.stride, divisor_override=1)
            counts = f.avg_pool2d(pad_or_crop(torch.ones(1, 1, h, w), pads), size, layer.stride,
                                  divisor_override=1)
            ref, got = sums / counts, layer._clipped_mean(x)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
