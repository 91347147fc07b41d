"""The smaller section types (crop, reorg, reorg3d, scale_channels, sam, local_avgpool, batchnorm,
empty/silence, implicit, normalization, local) beyond the micro suite: independent references for
the cases it does not cover, error messages, batches, weights, and the public cfgs using them."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.graph import canonical_type
from darkcfg.lexer import lex
from oracle import SHARED, OracleCase, needs_shared, rel_err

MINE = {"crop", "reorg", "reorg3d", "scale_channels", "sam", "local_avgpool", "batchnorm", "empty",
        "implicit", "normalization", "local"}


def _net(body: str, w: int = 16, h: int = 16, c: int = 3) -> str:
    return f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n\n{body}"


def _conv(filters: int, size: int = 3, act: str = "leaky") -> str:
    return f"[convolutional]\nfilters={filters}\nsize={size}\npad=1\nactivation={act}\n\n"


def _parse(text: str, **size: int) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(text, **size)


def _run(net: darkcfg.Network, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output (float64 numpy) for input x, with random parameters (seeded)."""
    model = darkcfg.build(net, out_indices=range(len(net)))
    _randomize(model)
    with torch.no_grad():
        return [o.double().numpy() for o in model(torch.from_numpy(x).float())]


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not t.is_floating_point() or "window" in name:
                continue
            t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.25 if name.endswith("running_var")
                    else torch.randn(t.shape, generator=g) * 0.5)


def _error(text: str) -> darkcfg.CfgError:
    with pytest.raises(darkcfg.CfgError) as info:
        _parse(text)
    return info.value


# --- independent references ---------------------------------------------------------------------

def reorg_cpu_ref(x: np.ndarray, w: int, h: int, c: int, s: int, forward: bool) -> np.ndarray:
    """Darknet's reorg_cpu as its loops read (blas.c), one image, flat in and out."""
    out = np.zeros(c * h * w)
    oc = c // (s * s)
    for k, j, i in itertools.product(range(c), range(h), range(w)):
        in_index = i + w * (j + h * k)
        c2, offset = k % oc, k // oc
        w2, h2 = i * s + offset % s, j * s + offset // s
        out_index = w2 + w * s * (h2 + h * s * c2)
        if forward:
            out[out_index] = x[in_index]
        else:
            out[in_index] = x[out_index]
    return out


def lrn_ref(x: np.ndarray, size: int, alpha: float, beta: float, kappa: float) -> np.ndarray:
    """Darknet's forward_normalization_layer recurrence, literally (x: C,H,W)."""
    c = x.shape[0]
    sq = x * x
    norms = np.empty_like(x)
    norms[0] = kappa + alpha * sum(sq[k] for k in range(size // 2))
    for k in range(1, c):
        norms[k] = norms[k - 1]
        prev, nxt = k - (size - 1) // 2 - 1, k + size // 2
        if prev >= 0:
            norms[k] -= alpha * sq[prev]
        if nxt < c:
            norms[k] += alpha * sq[nxt]
    return x * norms ** -beta


def local_avgpool_ref(x: np.ndarray, size: int, sx: int, sy: int, pad: int) -> np.ndarray:
    c, h, w = x.shape
    oh, ow = (h + pad - size) // sy + 1, (w + pad - size) // sx + 1
    out = np.zeros((c, oh, ow))
    for k, i, j in itertools.product(range(c), range(oh), range(ow)):
        taps = [x[k, r, q] for r in range(i * sy - pad // 2, i * sy - pad // 2 + size)
                for q in range(j * sx - pad // 2, j * sx - pad // 2 + size)
                if 0 <= r < h and 0 <= q < w]
        out[k, i, j] = sum(taps) / len(taps)
    return out


def local_ref(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, size: int, stride: int,
              pad: int) -> np.ndarray:
    """Per location: a (filters, C*size*size) matrix times the zero-padded patch, plus bias."""
    c, h, w = x.shape
    f, oh, ow = bias.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((f, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        patch = xp[:, i * stride:i * stride + size, j * stride:j * stride + size].reshape(-1)
        out[:, i, j] = weight[i * ow + j].reshape(f, -1) @ patch + bias[:, i, j]
    return out


@pytest.mark.parametrize("c,size", [(8, 5), (8, 4), (6, 3), (3, 5), (4, 8), (10, 1), (12, 6)])
def test_lrn_follows_darknets_channel_recurrence(c: int, size: int) -> None:
    alpha, beta, kappa = 0.3, 0.75, 2.0
    net = _parse(_net(f"[lrn]\nsize={size}\nalpha={alpha}\nbeta={beta}\nkappa={kappa}\n", 5, 4, c))
    x = np.random.default_rng(c * 10 + size).normal(size=(1, c, 4, 5))
    (ours,) = _run(net, x)
    assert rel_err(ours[0], lrn_ref(x[0], size, alpha, beta, kappa)) <= 1e-5


def test_lrn_is_not_textbook_lrn() -> None:
    """The quirk is real: channel size/2 is left out of every window and later subtracted."""
    net = _parse(_net("[lrn]\nsize=3\nalpha=0.5\nbeta=1\nkappa=1\n", 1, 1, 6))
    x = np.ones((1, 6, 1, 1))
    (ours,) = _run(net, x)
    # Darknet's windows for size=3 over 6 channels (+ added, - subtracted though never added):
    # {0}, {0,2}, {2,3}, {2,3,4,-1}, {3,4,5,-1}, {4,5,-1,-3}... as sums of ones: 1, 2, 2, 2, 2, 1
    sums = np.array([1, 2, 2, 2, 2, 1])
    textbook = 1 / (1 + 0.5 * np.array([2, 3, 3, 3, 3, 2]))
    expect = 1 / (1 + 0.5 * sums)
    assert np.allclose(ours.reshape(-1), lrn_ref(x[0], 3, 0.5, 1, 1).reshape(-1))
    assert np.allclose(ours.reshape(-1), expect)
    assert not np.allclose(ours.reshape(-1), textbook)


@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("c,h,w", [(8, 4, 6), (16, 2, 2)])
def test_reorg_is_reorg_cpu_with_the_input_dims(reverse: int, c: int, h: int, w: int) -> None:
    net = _parse(_net(f"[reorg]\nstride=2\nreverse={reverse}\n", w, h, c))
    x = np.random.default_rng(1).normal(size=(1, c, h, w))
    (ours,) = _run(net, x)
    ref = reorg_cpu_ref(x.reshape(-1), w, h, c, 2, forward=bool(reverse))
    assert np.array_equal(ours.reshape(-1), ref.astype(np.float32))
    assert ours.shape[1:] == tuple(net[0].out_shape.__dict__.values())


@pytest.mark.parametrize("reverse", [0, 1])
def test_reorg3d_is_reorg_cpu_with_the_output_dims(reverse: int) -> None:
    c, h, w, s = 16, 4, 6, 2
    net = _parse(_net(f"[reorg3d]\nstride={s}\nreverse={reverse}\n", w, h, c))
    out = net[0].out_shape
    x = np.random.default_rng(2).normal(size=(1, c, h, w))
    (ours,) = _run(net, x)
    ref = reorg_cpu_ref(x.reshape(-1), out.w, out.h, out.c, s, forward=bool(reverse))
    assert np.array_equal(ours.reshape(-1), ref.astype(np.float32))


def test_reorg3d_forward_is_space_to_depth_with_offset_major_channels() -> None:
    net = _parse(_net("[reorg3d]\nstride=3\n", 6, 9, 2))
    x = np.random.default_rng(3).normal(size=(1, 2, 9, 6))
    (ours,) = _run(net, x)
    for dy, dx, ch in itertools.product(range(3), range(3), range(2)):
        expect = x[0, ch, dy::3, dx::3].astype(np.float32)
        assert np.array_equal(ours[0, (dy * 3 + dx) * 2 + ch], expect)


def test_reorg3d_on_odd_input_uses_the_top_left_part() -> None:
    """Darknet reads a 9x9 input with an 8-wide pitch (its bug); darkcfg crops to the 8x8 part."""
    net = _parse(_net("[reorg3d]\nstride=2\n", 9, 9, 4))
    x = np.random.default_rng(4).normal(size=(1, 4, 9, 9))
    (ours,) = _run(net, x)
    top_left = x[0, :, :8, :8]
    ref = np.stack([top_left[ch, dy::2, dx::2]
                    for dy, dx, ch in itertools.product(range(2), range(2), range(4))])
    assert ours.shape == (1, 16, 4, 4)
    assert np.array_equal(ours[0], ref.astype(np.float32))


@needs_shared
def test_reorg3d_odd_oracle_is_darknets_wrong_pitch_and_we_differ_only_there(tmp_path) -> None:
    case = OracleCase("reorg3d_odd", SHARED / "oracle" / "micro" / "reorg" / "reorg3d_odd")
    stored = case.outputs()
    prev = stored["layer_000"].reshape(-1).astype(np.float64)
    darknet = stored["layer_001"].reshape(-1)
    # Darknet: the first 4*8*8 floats of the 4x9x9 buffer read as 4x8x8, then space-to-depth.
    wrong_pitch = prev[:4 * 64].reshape(4, 4, 2, 4, 2).transpose(2, 4, 0, 1, 3).reshape(-1)
    assert rel_err(wrong_pitch, darknet) <= 1e-6
    with pytest.warns(darkcfg.CfgWarning, match="uses its top-left 8x8 part"):
        net = darkcfg.parse(case.cfg_path)
    model = darkcfg.load(net, case.write_weights(tmp_path / "w.weights"), out_indices=[0, 1])
    with torch.no_grad():
        l0, l1 = model(torch.from_numpy(case.input()).reshape(1, 3, 9, 9))
    assert rel_err(l0.numpy().reshape(-1), prev) <= 1e-4
    ours_ref = prev.reshape(4, 9, 9)[:, :8, :8].reshape(4, 4, 2, 4, 2).transpose(2, 4, 0, 1, 3)
    assert rel_err(l1.numpy().reshape(-1), ours_ref.reshape(-1)) <= 1e-5
    assert rel_err(l1.numpy().reshape(-1), darknet) > 0.1


@pytest.mark.parametrize("size,sx,sy,padding,hw", [
    (3, 2, 2, None, (7, 9)), (2, 1, 1, None, (5, 5)), (4, 3, 2, 3, (10, 11)), (3, 1, 2, 1, (6, 7)),
    (5, 1, 1, 4, (6, 6)),
])
def test_local_avgpool_averages_the_valid_taps(size, sx, sy, padding, hw) -> None:
    h, w = hw
    pad_line = "" if padding is None else f"padding={padding}\n"
    body = f"[local_avgpool]\nsize={size}\nstride_x={sx}\nstride_y={sy}\n{pad_line}"
    net = _parse(_net(body, w, h, 2))
    x = np.random.default_rng(5).normal(size=(1, 2, h, w))
    (ours,) = _run(net, x)
    ref = local_avgpool_ref(x[0], size, sx, sy, size - 1 if padding is None else padding)
    assert ours.shape[1:] == ref.shape
    assert rel_err(ours[0], ref) <= 1e-6


@pytest.mark.parametrize("size,stride,pad", [(3, 1, 1), (3, 2, 0), (1, 1, 0), (5, 2, 2), (2, 1, 0)])
def test_local_matches_a_per_location_matmul(size: int, stride: int, pad: int) -> None:
    net = _parse(_net(f"[local]\nfilters=3\nsize={size}\nstride={stride}\npad={pad}\n"
                      "activation=linear\n", 7, 6, 2))
    model = darkcfg.build(net)
    _randomize(model)
    x = torch.randn(1, 2, 6, 7)
    with torch.no_grad():
        (ours,) = model(x)
    layer = model.layers[0]
    ref = local_ref(x[0].double().numpy(), layer.weight.detach().double().numpy(),
                    layer.bias.detach().double().numpy(), size, stride, pad)
    assert rel_err(ours[0].numpy(), ref) <= 1e-5


def test_crop_is_centred_and_maps_values_unless_noadjust() -> None:
    net = _parse(_net("[crop]\ncrop_width=5\ncrop_height=4\n\n[crop]\ncrop_width=3\ncrop_height=3\n"
                      "noadjust=1\n", 10, 9, 2))
    x = np.random.default_rng(6).normal(size=(1, 2, 9, 10))
    first, second = _run(net, x)
    assert np.allclose(first[0], x[0, :, 2:6, 2:7] * 2 - 1, atol=1e-6)
    assert np.allclose(second[0], first[0, :, 0:3, 1:4], atol=1e-6)


def test_implicit_ignores_its_input_and_scale_channels_multiplies() -> None:
    net = _parse(_net(_conv(4) + "[implicit]\nfilters=4\natoms=1\n\n[scale_channels]\nfrom=0\n"
                      "activation=leaky\n"))
    model = darkcfg.build(net, out_indices=[0, 1, 2])
    _randomize(model)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        conv, imp, out = model(x)
        _, imp2, _ = model(x * 5)
    assert imp.shape == (3, 4, 1, 1) and torch.equal(imp, imp2)
    assert torch.equal(imp[0], model.layers[1].weight)
    y = conv * imp
    assert torch.allclose(out, torch.where(y > 0, y, 0.1 * y))


# --- batch, weights, names ------------------------------------------------------------------------

ALL_SECTIONS = _net(
    "[crop]\ncrop_width=12\ncrop_height=12\n\n"
    + _conv(8)
    + "[batchnorm]\n\n[local_avgpool]\nsize=3\nstride=1\n\n[local_avg]\nsize=2\nstride=2\n\n"
    "[lrn]\nsize=3\nalpha=0.5\n\n[silence]\n\n[reorg]\nstride=2\n\n[reorg]\nstride=2\nreverse=1\n\n"
    "[reorg3d]\nstride=2\n\n[reorg3d]\nstride=2\nreverse=1\n\n[avgpool]\n\n"
    "[scale_channels]\nfrom=-2\n\n" + _conv(1, 1, "logistic")
    + "[scale_channels]\nfrom=-2\nscale_wh=1\n\n[sam]\nfrom=-3\nactivation=leaky\n\n"
    "[local]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n\n"
    "[implicit]\nfilters=4\natoms=2\n\n[empty]\n")


def test_every_section_type_in_one_net() -> None:
    net = _parse(ALL_SECTIONS)
    assert [l.type for l in net] == [
        "crop", "convolutional", "batchnorm", "local_avgpool", "local_avgpool", "normalization",
        "empty", "reorg", "reorg", "reorg3d", "reorg3d", "avgpool", "scale_channels",
        "convolutional", "scale_channels", "sam", "local", "implicit", "empty"]
    assert [l.header for l in net][3:7] == ["local_avgpool", "local_avg", "lrn", "silence"]
    assert [str(l.out_shape) for l in net][7:11] == ["32x3x3", "8x6x6", "32x3x3", "8x6x6"]
    assert net[12].inputs == (11, 10) and net[15].inputs == (14, 12)
    model = darkcfg.build(net)
    keys = set(model.state_dict())
    assert {"layers.2.bn.bias", "layers.2.bn.weight", "layers.2.bn.running_mean",
            "layers.2.bn.running_var", "layers.16.weight", "layers.16.bias",
            "layers.17.weight"} <= keys
    assert model.layers[16].weight.shape == (36, 4, 8, 3, 3)
    assert model.layers[16].bias.shape == (4, 6, 6)
    assert model.layers[17].weight.shape == (4, 2, 1)


def test_batch_of_two_equals_two_single_runs() -> None:
    net = _parse(ALL_SECTIONS)
    model = darkcfg.build(net, out_indices=range(len(net)))
    _randomize(model)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        both = model(x)
        one = [model(x[i:i + 1]) for i in range(2)]
    for i, out in enumerate(both):
        assert out.shape[0] == 2, i
        assert not out.requires_grad, i
        if i < 17:  # [implicit] (17) and the [empty] after it ignore the images
            assert not torch.equal(out[0], out[1]), i  # the two images stay apart
        for b in range(2):
            # the same within float32 rounding (conv kernels may sum in another order)
            assert rel_err(out[b].numpy(), one[b][i][0].numpy()) <= 1e-5, (i, b)


def test_weights_round_trip_and_file_order(tmp_path) -> None:
    net = _parse(ALL_SECTIONS)
    model = darkcfg.build(net)
    _randomize(model, seed=3)
    path = tmp_path / "all.weights"
    model.save_darknet_weights(path)
    floats = np.fromfile(path, "<f4", offset=20)
    assert floats.size == net.weight_count
    fresh = darkcfg.load(net, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    # [batchnorm] (layer 2) reads biases, scales, mean, variance, after the conv's 4*8 + 8*27 floats
    start = net[1].weight_count
    bn = model.layers[2].bn
    expect = torch.cat([bn.bias, bn.weight, bn.running_mean, bn.running_var]).detach().numpy()
    assert np.array_equal(floats[start:start + 32], expect)
    # [local] (layer 16): biases [n][out_h][out_w] first, then weights [location][n][c][k][k]
    local = model.layers[16]
    offset = sum(l.weight_count for l in net.layers[:16])
    nb = local.bias.numel()
    assert np.array_equal(floats[offset:offset + nb], local.bias.detach().numpy().reshape(-1))
    assert np.array_equal(floats[offset + nb:offset + nb + local.weight.numel()],
                          local.weight.detach().numpy().reshape(-1))


def test_dontload_layers_read_nothing() -> None:
    text = _net(_conv(4) + "[batchnorm]\ndontload=1\n\n[implicit]\nfilters=3\ndontload=1\n\n"
                "[local]\nfilters=2\nsize=3\npad=1\ndontload=1\n")
    net = _parse(text)
    assert [l.weight_count for l in net][1:] == [0, 0, 0]


# --- errors and warnings --------------------------------------------------------------------------

@pytest.mark.parametrize("body,dims,message,key", [
    ("[crop]\ncrop_width=20\ncrop_height=8\n", (16, 16, 3),
     "crop_width=20 is larger than the input width 16", "crop_width"),
    ("[crop]\ncrop_width=8\ncrop_height=0\n", (16, 16, 3), "crop_height=0 must be positive",
     "crop_height"),
    ("[reorg]\nstride=2\n", (16, 16, 3),
     "[reorg] stride=2 needs input channels divisible by stride*stride=4, the input has 3 (Darknet "
     "would divide by zero or index outside its buffers)", "stride"),
    ("[reorg]\nstride=2\n", (9, 8, 4),
     "[reorg] stride=2 needs the input width and height divisible by the stride, the input is 9x8 "
     "(Darknet would write past its output buffer)", "stride"),
    ("[reorg3d]\nstride=2\nreverse=1\n", (8, 8, 8),
     "[reorg3d] reverse=1 stride=2 needs input channels divisible by stride^4=16 (Darknet divides "
     "the 2 output channels by stride*stride again), the input has 8", "reverse"),
    ("[reorg3d]\nstride=0\n", (8, 8, 8), "stride=0 must be positive", "stride"),
    ("[convolutional]\nfilters=4\nsize=1\n\n[scale_channels]\nfrom=-1\n", (8, 8, 4),
     "[scale_channels] needs a 1x1 previous layer with the 4 channels of the `from` layer 0, the "
     "previous layer gives 8x8x4", "from"),
    ("[convolutional]\nfilters=4\nsize=1\n\n[avgpool]\n\n[scale_channels]\nfrom=-2\nscale_wh=1\n",
     (8, 8, 4), "[scale_channels] scale_wh=1 needs a 1-channel previous layer of the `from` layer's "
     "size 8x8, the previous layer gives 1x1x4", "scale_wh"),
    ("[scale_channels]\nscale_wh=1\n", (8, 8, 1), "[scale_channels] needs from=", None),
    ("[convolutional]\nfilters=4\nsize=1\n\n[maxpool]\nsize=2\nstride=2\n\n[sam]\nfrom=-2\n",
     (8, 8, 4), "[sam] needs the previous layer and the `from` layer 0 of the same shape, got 4x4x4 "
     "and 8x8x4",
     "from"),
    ("[local]\nfilters=2\nsize=5\npad=1\n", (8, 8, 4),
     "[local] pad=1 with size=5: Darknet sizes the output as for padding (size-1)/2 but im2col pads "
     "by 1, so it would read its columns with the wrong pitch; use pad=0 or size=3", "pad"),
    ("[local]\nfilters=2\nsize=9\n", (8, 8, 4),
     "input height of 8 is too small for size=9 with pad=0", None),
    ("[lrn]\nsize=11\n", (8, 8, 4),
     "size=11 is too large for 4 channels: Darknet's LRN starts by summing size/2=5 channels and "
     "would read past its input", "size"),
    ("[local_avgpool]\nsize=2\nstride=1\npadding=4\n", (8, 8, 4),
     "padding=4 with size=2: a window would hold no input value (Darknet divides 0 by 0 there)",
     "padding"),
    ("[implicit]\nfilters=0\n", (8, 8, 4), "filters=0 must be positive", "filters"),
])
def test_bad_options_get_a_located_error(body: str, dims, message: str, key: str | None) -> None:
    w, h, c = dims
    text = _net(body, w, h, c)
    err = _error(text)
    assert err.msg == message
    last = lex(text)[-1]
    assert err.section == last.header and err.loc.index == len(lex(text)) - 2
    if key is not None:
        line = next(o.line for o in last.options if o.key == key)
        assert err.lineno == line
    else:
        assert err.lineno == last.line


@needs_shared
def test_darknets_reorg3d_crash_case_is_rejected() -> None:
    path = SHARED / "oracle" / "micro" / "cfg" / "reorg" / "reorg3d_reverse_c8.cfg"
    err = _error(path.read_text())
    assert err.msg.startswith("[reorg3d] reverse=1 stride=2 needs input channels divisible by "
                              "stride^4=16")


@pytest.mark.parametrize("body,dims,warning", [
    ("[reorg]\n", (8, 8, 4), "[reorg] without stride= uses Darknet's default stride=1, which passes "
                             "the input through unchanged"),
    ("[reorg3d]\nstride=2\n", (9, 8, 4), "[reorg3d] input 9x8 is not divisible by stride=2: darkcfg "
                                         "uses its top-left 8x8 part (Darknet reads the input with a "
                                         "wrong row pitch there)"),
    (_conv(4) + _conv(4) + "[sam]\nfrom=-1,-2\n", (8, 8, 3),
     "from= lists 2 layers: Darknet's [sam] uses only the first"),
    ("[empty]\nfoo=1\n", (8, 8, 3), "unused option 'foo' (Darknet ignores it too)"),
    ("[crop]\ncrop_width=4\ncrop_height=4\nflip=1\nangle=7\nsaturation=1.5\nexposure=1.5\n"
     "shift=.2\n\n"
     "[implicit]\nmean=1\nstd=0.5\n", (8, 8, 3), None),
])
def test_warnings(body: str, dims, warning: str | None) -> None:
    w, h, c = dims
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        darkcfg.parse(_net(body, w, h, c))
    messages = [str(wi.message) for wi in caught if issubclass(wi.category, darkcfg.CfgWarning)]
    if warning is None:
        assert messages == []  # training-only options are accepted silently
    else:
        assert any(m.startswith(warning) for m in messages), messages


def test_silence_is_darknets_empty_type() -> None:
    assert canonical_type("silence") == "empty"
    assert canonical_type("local_avg") == "local_avgpool"
    assert canonical_type("lrn") == "normalization"
    assert canonical_type("reorg") == "reorg" and canonical_type("reorg3d") == "reorg3d"


# --- the public cfgs using these sections ---------------------------------------------------------

CORPUS = SHARED / "darknet-cfgs" if SHARED else Path("/nonexistent")


def _uses_mine(path: Path) -> bool:
    try:
        return any(canonical_type(s.header) in MINE for s in lex(path.read_text(errors="replace")))
    except darkcfg.CfgError:
        return False


MINE_CFGS = sorted(p for p in CORPUS.rglob("*.cfg") if _uses_mine(p)) if SHARED else []


def _prefix_net(path: Path) -> tuple[darkcfg.Network, str]:
    """The cfg, or when a section outside this family is not supported (yet), the part before it."""
    text = path.read_text(errors="replace")
    while True:
        try:
            return _parse(text), text
        except darkcfg.CfgError as err:
            bad = err.loc.index
            if bad is None or canonical_type(err.section or "") in MINE:
                raise
            cut = lex(text)[bad + 1].line
            text = "\n".join(text.splitlines()[:cut - 1]) + "\n"


def _small(text: str, native: darkcfg.Network) -> darkcfg.Network:
    types = [l.type for l in native]
    for size in (64, 96, 128, 160, 224, 256, 320):
        if size >= max(native.net.width, native.net.height):
            break
        try:
            net = _parse(text, width=size, height=size)
        except darkcfg.CfgError:
            continue
        if [l.type for l in net] == types:
            return net
    return native


@needs_shared
def test_the_corpus_has_these_sections() -> None:
    names = {p.relative_to(CORPUS).as_posix() for p in MINE_CFGS}
    assert {"yolov4-sam-mish-csp-reorg-bfm.cfg", "enet-coco.cfg", "yolov2.cfg", "cifar.cfg",
            "yolov1/yolo.cfg", "yolov1/xyolo.test.cfg", "yolov4-tiny_contrastive.cfg"} <= names


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("path", MINE_CFGS, ids=lambda p: p.relative_to(CORPUS).as_posix())
def test_corpus_cfg_with_these_sections_builds_and_runs(path: Path) -> None:
    native, text = _prefix_net(path)
    assert MINE & {l.type for l in native}, "the supported part holds none of these sections"
    net = _small(text, native)
    model = darkcfg.build(net, out_indices=sorted({len(net) - 1} | {
        l.index for l in net if l.type in MINE}))
    s = net.net.input_shape
    x = torch.rand(2, s.c, s.h, s.w)
    with torch.no_grad():
        outs = model(x)
    for i, out in zip(model.out_indices, outs):
        assert out.shape[0] == 2 and out[0].numel() == net[i].out_shape.size, i
        assert torch.isfinite(out).all(), i
