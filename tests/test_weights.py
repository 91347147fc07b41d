"""Darknet .weights reading and writing: headers, layout, strict accounting, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import darkcfg
from darkcfg.weights import WeightsHeader, read_header

CFG = """
[net]
width=8
height=8
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[convolutional]
filters=6
size=1
activation=linear

[maxpool]
size=2
stride=2

[connected]
output=5
activation=linear

[connected]
output=3
batch_normalize=1
activation=relu
"""
# conv0: 4 bias + 3*4 BN + 4*3*9 w = 124; conv1: 6 + 6*4 = 30; fc3: 5 + 5*96 = 485;
# fc4: 3 + 3*5 + 3*3 = 27
COUNTS = [124, 30, 0, 485, 27]
TOTAL = sum(COUNTS)


def _write(path, floats: np.ndarray, version=(0, 2, 5), seen=12345) -> bytes:
    header = WeightsHeader(*version, seen=seen).to_bytes()
    data = header + floats.astype("<f4").tobytes()
    path.write_bytes(data)
    return data


def _model() -> darkcfg.DarknetModel:
    return darkcfg.build(CFG)


def test_layout_counts() -> None:
    assert [l.weight_count for l in darkcfg.parse(CFG).layers] == COUNTS


@pytest.mark.parametrize("version", [(0, 1, 0), (0, 2, 5), (0, 2, 0), (1, 0, 0)])
def test_load_then_save_is_byte_identical(tmp_path, version) -> None:
    data = _write(tmp_path / "a.weights", np.random.default_rng(0).standard_normal(TOTAL), version)
    model = _model()
    model.load_darknet_weights(tmp_path / "a.weights")
    model.save_darknet_weights(tmp_path / "b.weights")
    assert (tmp_path / "b.weights").read_bytes() == data


def test_header_widths() -> None:
    assert read_header(WeightsHeader(0, 1, 0, 7).to_bytes()).nbytes == 16
    assert read_header(WeightsHeader(0, 2, 0, 7).to_bytes()).nbytes == 20
    assert read_header(WeightsHeader(0, 2, 0, 2**40).to_bytes()).seen == 2**40
    assert len(WeightsHeader(0, 1, 0, 7).to_bytes()) == 16


def test_segments_land_in_the_right_tensors(tmp_path) -> None:
    values = np.arange(TOTAL, dtype=np.float32)
    _write(tmp_path / "a.weights", values)
    model = _model()
    model.load_darknet_weights(tmp_path / "a.weights")
    l0 = model.layers[0]
    assert l0.bn.bias.tolist() == [0, 1, 2, 3]
    assert l0.bn.weight.tolist() == [4, 5, 6, 7]
    assert l0.bn.running_mean.tolist() == [8, 9, 10, 11]
    assert l0.bn.running_var.tolist() == [12, 13, 14, 15]
    assert l0.conv.weight.flatten().tolist() == list(range(16, 124))
    l1 = model.layers[1]
    assert l1.conv.bias.tolist() == list(range(124, 130))
    # [connected]: biases, weights [out][in], then BN (scales, mean, variance) after the weights
    fc = model.layers[3]
    assert fc.fc.bias.tolist() == list(range(154, 159))
    assert fc.fc.weight[1, 0].item() == 159 + 96
    fc2 = model.layers[4]
    start = 154 + 485
    assert fc2.bn.bias.tolist() == [start, start + 1, start + 2]
    assert fc2.fc.weight.flatten().tolist() == list(range(start + 3, start + 18))
    assert fc2.bn.weight.tolist() == [start + 18, start + 19, start + 20]
    assert fc2.bn.running_var.tolist() == [start + 24, start + 25, start + 26]


def test_transpose_flag_transposes_connected_weights(tmp_path) -> None:
    values = np.arange(TOTAL, dtype=np.float32)
    data = _write(tmp_path / "t.weights", values, version=(0, 1001, 0))
    model = _model()
    report = model.load_darknet_weights(tmp_path / "t.weights")
    assert report.header.transpose
    fc = model.layers[3].fc.weight  # file holds [in][out] = 96 x 5
    assert fc[1, 0].item() == 159 + 1 and fc[0, 1].item() == 159 + 5
    model.save_darknet_weights(tmp_path / "t2.weights")
    assert (tmp_path / "t2.weights").read_bytes() == data


def test_never_loaded_model_writes_version_0_2_5(tmp_path) -> None:
    model = _model()
    model.save_darknet_weights(tmp_path / "n.weights")
    raw = (tmp_path / "n.weights").read_bytes()
    assert np.frombuffer(raw[:12], "<i4").tolist() == [0, 2, 5]
    assert np.frombuffer(raw[12:20], "<u8").tolist() == [0]
    assert len(raw) == 20 + 4 * TOTAL
    again = _model()
    again.load_darknet_weights(tmp_path / "n.weights")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_truncated_file_names_the_layer_and_counts(tmp_path) -> None:
    _write(tmp_path / "short.weights", np.zeros(TOTAL - 10))
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(darkcfg.WeightsError) as info:
        model.load_darknet_weights(tmp_path / "short.weights")
    assert info.value.msg == (
        "weights file ends inside layer 4 ([connected] at line 27): it needs 27 floats, "
        "17 are left (639 read for layers 0-3)")
    assert info.value.path == str(tmp_path / "short.weights")
    # nothing was changed by the failed load
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_oversized_file_is_an_error_unless_not_strict(tmp_path) -> None:
    _write(tmp_path / "long.weights", np.ones(TOTAL + 7))
    model = _model()
    with pytest.raises(darkcfg.WeightsError) as info:
        model.load_darknet_weights(tmp_path / "long.weights")
    assert info.value.msg == (
        "weights file has 7 floats left over after layer 4 (666 of 673 read): it does not fit "
        "this cfg; pass strict=False to load the first 666 floats anyway")
    with pytest.warns(darkcfg.CfgWarning, match="7 floats were left unread"):
        report = model.load_darknet_weights(tmp_path / "long.weights", strict=False)
    assert (report.floats_read, report.floats_left) == (TOTAL, 7)
    assert torch.all(model.layers[4].bn.running_var == 1)


def test_cutoff_loads_only_earlier_layers(tmp_path) -> None:
    _write(tmp_path / "c.weights", np.full(124 + 30, 2.0))
    model = _model()
    report = model.load_darknet_weights(tmp_path / "c.weights", cutoff=2)
    assert report.layers_loaded == 2 and report.floats_left == 0
    assert torch.all(model.layers[1].conv.weight == 2)
    model.save_darknet_weights(tmp_path / "c2.weights", cutoff=2)
    assert (tmp_path / "c2.weights").stat().st_size == 20 + 4 * 154


@pytest.mark.parametrize("data,message", [
    (b"", "weights file is 0 bytes, shorter than its 12-byte version header"),
    (np.array([0, 2, 5], "<i4").tobytes(), "weights file is 12 bytes, shorter than its 20-byte header"),
    (np.array([-1, 2, 5, 0, 0], "<i4").tobytes(), "weights header version -1.2.5 is not valid"),
    (np.array([0, 2, 5, 0, 0], "<i4").tobytes() + b"\x00\x00", "weights file body is 2 bytes, not a whole number of float32 values"),
])
def test_bad_files(tmp_path, data, message) -> None:
    (tmp_path / "bad.weights").write_bytes(data)
    with pytest.raises(darkcfg.WeightsError) as info:
        _model().load_darknet_weights(tmp_path / "bad.weights")
    assert info.value.msg == message


def test_missing_file(tmp_path) -> None:
    with pytest.raises(darkcfg.WeightsError, match="cannot read weights file"):
        _model().load_darknet_weights(tmp_path / "nope.weights")


@settings(max_examples=25, deadline=None)
@given(version=st.sampled_from([(0, 1, 0), (0, 2, 5), (0, 1001, 0)]),
       seen=st.integers(0, 2**32 - 1),
       values=arrays(np.float32, TOTAL, elements=st.floats(width=32),
                     fill=st.floats(width=32, allow_nan=False)))
def test_round_trip_property(tmp_path_factory, version, seen, values) -> None:
    d = tmp_path_factory.mktemp("rt")
    data = _write(d / "a.weights", values, version, seen)
    model = _model()
    model.load_darknet_weights(d / "a.weights")
    model.save_darknet_weights(d / "b.weights")
    assert (d / "b.weights").read_bytes() == data


def test_share_index_reads_nothing_and_shares_tensors(tmp_path) -> None:
    cfg = CFG.split("[maxpool]")[0].replace("filters=6\nsize=1", "filters=4\nsize=3\npad=1") + \
        "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\nshare_index=-1\n"
    net = darkcfg.parse(cfg)
    assert net[2].params == (1,) and net[2].weight_count == 0
    model = darkcfg.build(net)
    assert model.layers[2].conv.weight is model.layers[1].conv.weight
    assert model.layers[2].conv.bias is model.layers[1].conv.bias
    total = net.weight_count
    _write(tmp_path / "s.weights", np.arange(total, dtype=np.float32))
    model.load_darknet_weights(tmp_path / "s.weights")
    assert torch.equal(model.layers[2].conv.weight, model.layers[1].conv.weight)
    assert model.layers[2].conv.bias[0].item() == 124


# -- the two-thread read (files of 16 Mi floats and more): forced here with tiny chunks ------------

@pytest.fixture
def tiny_chunks(monkeypatch):
    import darkcfg.weights as w

    monkeypatch.setattr(w, "_CHUNK", 7)
    monkeypatch.setattr(w, "_PARALLEL", 20)


@pytest.mark.filterwarnings("error::darkcfg.CfgWarning")
def test_two_thread_read_loads_every_value(tmp_path, tiny_chunks) -> None:
    floats = np.abs(np.random.default_rng(3).standard_normal(TOTAL)).astype("<f4")  # variances >= 0
    path = tmp_path / "a.weights"
    _write(path, floats)
    model = _model()
    model.load_darknet_weights(path)
    out = tmp_path / "b.weights"
    model.save_darknet_weights(out)
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("where", [5, TOTAL // 2 - 1, TOTAL // 2, TOTAL - 1])
def test_two_thread_read_finds_nan_in_either_half(tmp_path, tiny_chunks, where) -> None:
    floats = np.ones(TOTAL, "<f4")
    floats[where] = np.nan
    path = tmp_path / "nan.weights"
    _write(path, floats)
    layer = next(i for i, end in enumerate(np.cumsum(COUNTS)) if where < end)
    with pytest.warns(darkcfg.CfgWarning, match=rf"layer {layer} .*1 of its {COUNTS[layer]} "
                                                 r"weights are NaN or infinite"):
        _model().load_darknet_weights(path)


def test_a_file_that_shrinks_while_read_is_an_error_and_changes_nothing(tmp_path, tiny_chunks,
                                                                        monkeypatch) -> None:
    import os

    path = tmp_path / "a.weights"
    _write(path, np.ones(TOTAL, "<f4"))
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = os.preadv

    def short(fd, buffers, offset):  # the file ends 100 floats early, seen by the second reader
        end = 20 + 4 * (TOTAL - 100)
        if offset >= end:
            return 0
        return real(fd, [memoryview(buffers[0])[:end - offset]], offset) if \
            offset + len(buffers[0]) > end else real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", short)
    with pytest.raises(darkcfg.WeightsError, match=rf"weights file changed while it was read "
                                                   rf"\({TOTAL - 100} of {TOTAL} floats\)"):
        model.load_darknet_weights(path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_huge_finite_weights_are_not_taken_for_inf(tmp_path, tiny_chunks) -> None:
    """The fast NaN/Inf check (a dot product) overflows on values like 1e30; it must then look
    at the values themselves and find them finite."""
    floats = np.full(TOTAL, 1e30, "<f4")
    path = tmp_path / "big.weights"
    _write(path, floats)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CfgWarning, and no numpy overflow warning either
        _model().load_darknet_weights(path)
