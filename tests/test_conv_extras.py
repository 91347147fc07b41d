"""Options of the core sections beyond the basics: xnor, antialiasing, maxpool_depth, weighted and
strided (pjreddie) shortcuts. Checked against independent numpy references, Darknet's oracle and
the public cfg corpus."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.layers.core import Blur, Convolutional, set_xnor_inverted_bits
from oracle import SHARED, micro_cases, needs_shared, rel_err

NET = "[net]\nwidth={w}\nheight={h}\nchannels={c}\n"


def cfg(*sections: str, w: int = 16, h: int = 16, c: int = 3) -> str:
    return NET.format(w=w, h=h, c=c) + "\n" + "\n".join(sections)


def conv(filters: int, size: int = 3, stride: int = 1, bn: int = 1, act: str = "leaky",
         extra: str = "") -> str:
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\n"
            f"stride={stride}\npad=1\nactivation={act}\n{extra}\n")


def parse_quiet(text: str) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(text)


def build_random(text: str, seed: int = 0, out_indices=None) -> darkcfg.DarknetModel:
    """A model with random parameters (BN variances positive, shortcut weights around 1)."""
    model = darkcfg.build(parse_quiet(text), out_indices)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            r = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(r.abs() + 0.5)
            elif name.endswith(".weight") and t.dim() == 2:  # shortcut weights
                t.copy_(r * 0.5 + 1)
            else:
                t.copy_(r * 0.5)
    return model


def run(model: darkcfg.DarknetModel, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(x)


def warnings_of(text: str) -> list[str]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        darkcfg.parse(text)
    return [str(w.message) for w in rec if issubclass(w.category, darkcfg.CfgWarning)]


def error_of(text: str) -> darkcfg.CfgError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        with pytest.raises(darkcfg.CfgError) as info:
            darkcfg.parse(text)
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


# --- error messages and accepted options ----------------------------------------------------------

WEIGHTED = cfg(conv(4), conv(4),
               "[shortcut]\nfrom=-2\nweights_type={wt}\nweights_normalization={wn}\n")


def test_weights_without_normalization_is_rejected_like_darknet() -> None:
    text = WEIGHTED.format(wt="per_feature", wn="none")
    err = error_of(text)
    assert err.msg == ("weights_type=per_feature needs weights_normalization=relu, avg_relu or "
                       "softmax; Darknet rejects weights_normalization=none")
    assert err.section == "shortcut" and err.layer_index == 2
    assert err.lineno == _line_of(text, "weights_normalization=none")


def test_weights_type_missing_normalization_points_at_the_section() -> None:
    text = cfg(conv(4), "[shortcut]\nfrom=-1\nweights_type=per_channel\n")
    err = error_of(text)
    assert "needs weights_normalization=relu, avg_relu or softmax" in err.msg
    assert err.lineno == _line_of(text, "[shortcut]")  # no such key: the section's line


def test_unknown_weights_type() -> None:
    err = error_of(WEIGHTED.format(wt="per_pixel", wn="relu"))
    assert err.msg == ("weights_type=per_pixel is not one of none, per_feature, per_layer, "
                       "per_channel")


def test_normalization_without_weights_is_ignored_with_a_warning() -> None:
    msgs = warnings_of(cfg(conv(4), conv(4), "[shortcut]\nfrom=-2\nweights_normalization=relu\n"))
    assert any("weights_normalization=relu has no effect without weights_type" in m for m in msgs)


@pytest.mark.parametrize("wt, count", [("per_feature", 2), ("per_layer", 2), ("per_channel", 8)])
def test_weighted_shortcut_segments_and_bflops(wt: str, count: int) -> None:
    net = parse_quiet(WEIGHTED.format(wt=wt, wn="avg_relu"))
    sc = net[2]
    assert [(s.name, s.kind, s.count) for s in sc.segments] == [("weight", "other", count)]
    assert sc.bflops == pytest.approx(2 * 16 * 16 * 4 / 1e9)
    assert sc.options.normalization == "relu"
    assert sc.options.weights_type == ("per_channel" if wt == "per_channel" else "per_feature")


def test_unequal_sizes_are_rejected_with_weights_or_several_sources() -> None:
    base = [conv(4), conv(4, stride=2), conv(4)]
    err = error_of(cfg(*base, "[shortcut]\nfrom=0\nweights_type=per_feature\n"
                                "weights_normalization=relu\n"))
    assert err.msg.startswith("shortcut from layer 0 (16x16) to a 8x8 map: Darknet needs "
                              "equal sizes")
    err = error_of(cfg(*base, "[shortcut]\nfrom=0,1\n"))
    assert "pjreddie's strided shortcut takes one from layer and no weights" in err.msg


def test_a_1x1_map_is_not_broadcast_by_a_shortcut() -> None:
    # yolor's implicit-add idea: Darknet asserts, and strided sampling would add one pixel.
    err = error_of(cfg(conv(4), "[avgpool]\n", "[shortcut]\nfrom=-2\n"))
    assert err.msg == ("shortcut from layer 0 (16x16) to a 1x1 map: Darknet needs equal sizes "
                       "(a 1x1 map is not broadcast)")
    assert err.layer_index == 2


def test_maxpool_depth_errors() -> None:
    err = error_of(cfg(conv(8), "[maxpool]\nmaxpool_depth=1\nout_channels=0\n"))
    assert err.msg == "out_channels=0 must be positive"
    err = error_of(cfg(conv(8), "[maxpool]\nmaxpool_depth=1\nout_channels=2\nantialiasing=1\n"))
    assert "antialiasing with maxpool_depth=1 is not supported" in err.msg


def test_deform_options_follow_darknet() -> None:
    err = error_of(cfg(conv(4, extra="sway=1\nrotate=1")))
    assert err.msg.startswith("only one of sway=1, rotate=1, stretch=1 or stretch_sway=1")
    err = error_of(cfg(conv(4, size=1, extra="stretch=1")))
    assert err.msg == "stretch=1 needs size >= 3 (Darknet rejects it with size=1)"
    # Training-only options: accepted without a word.
    text = cfg(conv(4, extra="stretch_sway=1\nassisted_excitation=4000\nstopbackward=1\n"
                            "train_only_bn=1\ncoordconv=1\ngrad_centr=1"))
    assert warnings_of(text) == []
    net = darkcfg.parse(text)
    ref = darkcfg.parse(cfg(conv(4)))
    assert net[0].options == ref[0].options


def test_binary_alone_changes_nothing() -> None:
    net = darkcfg.parse(cfg(conv(4, extra="binary=1")))
    assert net[0].options == darkcfg.parse(cfg(conv(4)))[0].options


def test_antialiasing_values() -> None:
    msgs = warnings_of(cfg(conv(4, stride=2, extra="antialiasing=3")))
    assert any("antialiasing=3: Darknet uses the 3x3 blur" in m for m in msgs)


def test_xnor_forces_groups_to_one() -> None:
    text = cfg(conv(8), conv(8, extra="xnor=1\ngroups=2"))
    msgs = warnings_of(text)
    assert any("groups=2 is ignored: Darknet disables groups for xnor=1 layers" in m for m in msgs)
    spec = parse_quiet(text)[1]
    assert spec.options.groups == 1 and spec.segments[-1].count == 8 * 8 * 9
    assert spec.bflops == pytest.approx(2 * 8 * 8 * 9 * 16 * 16 / 1e9 / 32)


# --- antialiasing ---------------------------------------------------------------------------------

def _blur_ref(x: np.ndarray, kind: int, stride: int) -> np.ndarray:
    """Independent depthwise blur (zero padding), Darknet's fixed kernels."""
    k = np.full((2, 2), 0.25) if kind == 2 else np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    pad = 0 if kind == 2 else 1
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    n = k.shape[0]
    oh = (xp.shape[1] - n) // stride + 1
    ow = (xp.shape[2] - n) // stride + 1
    out = np.zeros((x.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * stride:i * stride + n, j * stride:j * stride + n]
            out[:, i, j] = (win * k).sum((1, 2))
    return out


@pytest.mark.parametrize("kind, stride, size", [(1, 2, 16), (2, 2, 16), (1, 1, 15), (2, 1, 9),
                                                 (2, 2, 13)])
def test_antialiased_conv_and_maxpool_match_a_reference(kind: int, stride: int, size: int) -> None:
    text = cfg(conv(4), conv(6, stride=stride, extra=f"antialiasing={kind}"),
               f"[maxpool]\nsize=2\nstride={stride}\nantialiasing={kind}\n", w=size, h=size)
    net = parse_quiet(text)
    model = build_random(text, out_indices=[0, 1, 2])
    # the blur is fixed: nothing of it in the state_dict or the weights layout
    assert not any("blur" in k for k in model.state_dict())
    plain = parse_quiet(cfg(conv(4), conv(6, stride=stride), w=size, h=size))
    assert net[1].segments == plain[1].segments
    x = torch.rand(1, 3, size, size)
    y0, y1, y2 = run(model, x)
    # conv at stride 1, activation, then the blur with the layer's stride
    host = model.layers[1]
    with torch.no_grad():
        pre = host.act(host.bn(host.conv(y0)))
    ref1 = _blur_ref(pre[0].double().numpy(), kind, stride)
    assert y1.shape[1:] == tuple(net[1].out_shape.__dict__.values()) == ref1.shape
    assert rel_err(y1[0].numpy().reshape(-1), ref1.reshape(-1)) < 1e-6
    # maxpool: size 2 stride 1 with padding 1 (right/bottom), then the blur
    a = y1[0].double().numpy()
    ap = np.pad(a, ((0, 0), (0, 1), (0, 1)), constant_values=-np.inf)
    mx = np.maximum.reduce([ap[:, :-1, :-1], ap[:, 1:, :-1], ap[:, :-1, 1:], ap[:, 1:, 1:]])
    ref2 = _blur_ref(mx, kind, stride)
    assert y2.shape[1:] == ref2.shape == tuple(net[2].out_shape.__dict__.values())
    assert rel_err(y2[0].numpy().reshape(-1), ref2.reshape(-1)) < 1e-6
    assert net[2].bflops == pytest.approx(2 * 2 * 6 * mx.shape[1] * mx.shape[2] / 1e9)


def test_blur_module_is_depthwise() -> None:
    x = torch.zeros(1, 3, 5, 5)
    x[0, 1, 2, 2] = 16.0
    y = Blur(3, 1, 1, 1)(x)
    assert y.shape == (1, 3, 5, 5) and y[0, 0].abs().sum() == 0 and y[0, 2].abs().sum() == 0
    assert y[0, 1, 1:4, 1:4].tolist() == [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    assert y[0, 1].sum() == 16.0
    y = Blur(3, 2, 2, 2)(x)  # 2x2 box, stride 2, no padding: 5 -> 2
    assert y.shape == (1, 3, 2, 2) and y[0, 1].tolist() == [[0.0, 0.0], [0.0, 4.0]]


# --- maxpool_depth --------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 3, 4, 8, 10])
def test_maxpool_depth_matches_a_reference(groups: int) -> None:
    text = cfg(conv(8), f"[maxpool]\nmaxpool_depth=1\nout_channels={groups}\n")
    net = parse_quiet(text)
    assert net[1].out_shape == darkcfg.Shape(groups, 16, 16)
    assert net[1].bflops == pytest.approx(8 * 16 * 16 / 1e9)
    model = build_random(text, out_indices=[0, 1])
    a, y = run(model, torch.rand(2, 3, 16, 16))
    a = a.numpy()
    ref = np.full((2, groups, 16, 16), -np.finfo(np.float32).max, np.float32)
    for g in range(groups):
        for k in range(g, 8, groups):
            ref[:, g] = np.maximum(ref[:, g], a[:, k])
    assert np.array_equal(y.numpy(), ref)


# --- shortcuts ------------------------------------------------------------------------------------

def _pjreddie_ref(prev: np.ndarray, add: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """pjreddie/darknet blas.c shortcut_cpu, loop for loop (one image)."""
    c2, h2, w2 = prev.shape
    c1, h1, w1 = add.shape
    stride, sample = max(1, w1 // w2), max(1, w2 // w1)
    out = prev.copy()
    for k in range(min(c1, c2)):
        for j in range(min(h1, h2)):
            for i in range(min(w1, w2)):
                out[k, j * sample, i * sample] = (alpha * out[k, j * sample, i * sample]
                                                  + beta * add[k, j * stride, i * stride])
    return out


STRIDED = [
    # from a larger map (resnet downsampling), more channels in `from`
    (cfg(conv(8), conv(4, stride=2), "[shortcut]\nfrom=-2\nalpha=0.5\nbeta=2\nactivation=leaky\n"),
     0.5, 2.0, "leaky"),
    # from a smaller map (sample > 1), fewer channels in `from`, odd size
    (cfg(conv(3, stride=2), "[upsample]\nstride=2\n", conv(6, size=1),
         "[shortcut]\nfrom=0\nalpha=-1\n", w=14, h=14), -1.0, 1.0, "linear"),
    # from an odd-sized map: 13 -> 7 gives stride 1 (top-left part), as pjreddie computed
    (cfg(conv(4), conv(4, size=1, stride=2, extra="pad=0"), "[shortcut]\nfrom=-2\n", w=13, h=13),
     1.0, 1.0, "linear"),
]


@pytest.mark.parametrize("text, alpha, beta, act", STRIDED)
def test_strided_shortcut_matches_pjreddie(text: str, alpha: float, beta: float, act: str) -> None:
    msgs = warnings_of(text)
    strided = [m for m in msgs if "Darknet (AlexeyAB) rejects unequal sizes" in m]
    assert len(strided) == 1 and "pjreddie/darknet's strided shortcut" in strided[0]
    assert f"[shortcut] #{len(parse_quiet(text)) - 1}" in strided[0]  # names the layer
    net = parse_quiet(text)
    sc = net[len(net) - 1]
    assert sc.options.strided and (sc.options.alpha, sc.options.beta) == (alpha, beta)
    assert sc.out_shape == net[sc.index - 1].out_shape
    model = build_random(text, seed=3, out_indices=range(len(net)))
    outs = run(model, torch.rand(2, 3, net.net.height, net.net.width))
    src = outs[sc.options.sources[0]].double().numpy()
    prev = outs[sc.index - 1].double().numpy()
    for b in range(2):
        ref = _pjreddie_ref(prev[b], src[b], alpha, beta)
        if act == "leaky":
            ref = np.where(ref > 0, ref, 0.1 * ref)
        assert rel_err(outs[-1][b].numpy().reshape(-1), ref.reshape(-1)) < 1e-6


def test_equal_sizes_keep_the_plain_add_and_ignore_alpha_beta() -> None:
    text = cfg(conv(4), conv(4), "[shortcut]\nfrom=-2\nalpha=3\nbeta=3\n")
    msgs = warnings_of(text)
    assert any("unused option 'alpha'" in m for m in msgs)
    assert any("unused option 'beta'" in m for m in msgs)
    model = build_random(text, out_indices=[0, 1, 2])
    a, b, y = run(model, torch.rand(1, 3, 16, 16))
    assert torch.equal(y, a + b)


def _weighted_ref(prev, sources, w, norm):
    """blas.c shortcut_multilayer_cpu in float64; w has shape (n+1, 1 or C)."""
    w = w.astype(np.float64)
    if norm == "relu":
        r = np.maximum(w, 0)
        wn = r / (1e-4 + r.sum(0))
    else:
        e = np.exp(w - w.max(0))
        wn = e / (1e-4 + e.sum(0))
    col = lambda v, m: v[:m, None, None] if v.size > 1 else v[0]  # noqa: E731
    c = prev.shape[0]
    out = prev * col(wn[0], c)
    for i, s in enumerate(sources, 1):
        m = min(c, s.shape[0])
        out[:m] += s[:m] * col(wn[i], m)
    return out


@pytest.mark.parametrize("wt", ["per_feature", "per_channel"])
@pytest.mark.parametrize("wn", ["relu", "softmax"])
def test_weighted_shortcut_with_unequal_channels(wt: str, wn: str) -> None:
    text = cfg(conv(6), conv(2), conv(4),
               f"[shortcut]\nfrom=0,1\nweights_type={wt}\nweights_normalization={wn}\n")
    model = build_random(text, seed=5, out_indices=range(4))
    w = model.layers[3].weight
    assert w.shape == (3, 4 if wt == "per_channel" else 1)
    with torch.no_grad():
        w[0, 0] = -1.0  # relu clips it
    outs = [o.double().numpy() for o in run(model, torch.rand(1, 3, 16, 16))]
    ref = _weighted_ref(outs[2][0], [outs[0][0], outs[1][0]], w.detach().numpy(), wn)
    assert rel_err(outs[3][0].reshape(-1), ref.reshape(-1)) < 1e-6


def test_weighted_shortcut_weights_round_trip(tmp_path) -> None:
    text = cfg(conv(4), conv(4), conv(4),
               "[shortcut]\nfrom=-2,-3\nweights_type=per_channel\nweights_normalization=softmax\n",
               "[shortcut]\nfrom=-2\nweights_type=per_feature\nweights_normalization=relu\n")
    model = build_random(text, seed=7)
    assert model.state_dict()["layers.3.weight"].shape == (3, 4)
    assert model.state_dict()["layers.4.weight"].shape == (2, 1)
    path = tmp_path / "a.weights"
    model.save_darknet_weights(path)
    assert path.stat().st_size == 20 + 4 * model.network.weight_count
    fresh = darkcfg.build(parse_quiet(text))
    assert torch.equal(fresh.layers[3].weight, torch.ones(3, 4))  # Darknet's initial value
    fresh.load_darknet_weights(path)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    x = torch.rand(1, 3, 16, 16)  # another instance: the same within float rounding
    torch.testing.assert_close(run(model, x)[0], run(fresh, x)[0], rtol=1e-5, atol=1e-6)
    fresh.save_darknet_weights(tmp_path / "b.weights")
    assert (tmp_path / "b.weights").read_bytes() == path.read_bytes()


# --- xnor -----------------------------------------------------------------------------------------

def _xnor_ref(x: np.ndarray, layer: Convolutional, activation: str,
              inverted: bool = False) -> np.ndarray:
    """Darknet's fused XNOR inference in float64 numpy: one image (C, H, W)."""
    o = layer.opts
    w = layer.conv.weight.detach().double().numpy()
    if layer.bn is not None:
        bn = layer.bn
        scale, mean = bn.weight.detach().double().numpy(), bn.running_mean.double().numpy()
        inv = scale / np.sqrt(bn.running_var.double().numpy() + 1e-5)
        w = (w * inv[:, None, None, None]).astype(np.float32).astype(np.float64)
        bias = bn.bias.detach().double().numpy() - scale * mean / np.sqrt(
            bn.running_var.double().numpy() + 1e-5)
    else:
        bias = layer.conv.bias.detach().double().numpy()
    alpha = np.abs(w).reshape(w.shape[0], -1).mean(1)
    sw = np.where(w > 0, 1.0, -1.0)
    p, s, k = o.padding, o.stride_x, o.size
    xs = np.pad(np.where(x > 0, 1.0, -1.0), ((0, 0), (p, p), (p, p)), constant_values=-1.0)
    oh = (xs.shape[1] - k) // s + 1
    ow = (xs.shape[2] - k) // s + 1
    dot = np.zeros((w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xs[:, i * s:i * s + k, j * s:j * s + k]
            dot[:, i, j] = np.tensordot(sw, win, 3)
    if inverted and w.shape[1] % 32 == 0:
        kk = w[0].size
        dot = -(dot + 2 * ((64 - kk % 64) % 64))
    y = dot * alpha[:, None, None] + bias[:, None, None]
    return np.where(y > 0, y, 0.1 * y) if activation == "leaky" else y


XNOR_CASES = [
    (32, 3, 1, 1), (32, 3, 2, 1), (8, 3, 1, 1), (64, 1, 1, 1), (32, 5, 1, 1), (32, 3, 1, 0),
]


@pytest.mark.parametrize("c, size, stride, bn", XNOR_CASES + [(12, 3, 2, 0)])
@pytest.mark.parametrize("inverted", [False, True])
def test_xnor_matches_an_independent_reference(c: int, size: int, stride: int, bn: int,
                                               inverted: bool) -> None:
    text = cfg(conv(c, act="linear"), conv(16, size=size, stride=stride, bn=bn, extra="xnor=1"))
    net = parse_quiet(text)
    assert net[1].options.xnor and net[1].bflops == pytest.approx(
        2 * 16 * c * size * size * net[1].out_shape.h * net[1].out_shape.w / 1e9 / 32)
    model = build_random(text, seed=c + size, out_indices=[0, 1])
    if inverted:
        set_xnor_inverted_bits(model)
    x = torch.rand(2, 3, 16, 16)
    a, y = run(model, x)
    for b in range(2):  # every image, unlike Darknet's XNOR path which computes image 0 only
        ref = _xnor_ref(a[b].double().numpy(), model.layers[1], "leaky", inverted)
        assert rel_err(y[b].numpy().reshape(-1), ref.reshape(-1)) < 1e-5


def test_xnor_bin_output_is_linear_unless_a_shortcut_reads_it() -> None:
    alone = parse_quiet(cfg(conv(32), conv(32, extra="xnor=1\nbin_output=1"), conv(8)))
    assert alone[1].options.effective_activation == "linear"
    read = parse_quiet(cfg(conv(32), conv(32, extra="xnor=1\nbin_output=1"), conv(32),
                           "[shortcut]\nfrom=-2\n"))
    assert read[1].options.effective_activation == "leaky"  # Darknet resets use_bin_output
    prev = parse_quiet(cfg(conv(32), conv(32), conv(32, extra="xnor=1\nbin_output=1"),
                           "[shortcut]\nfrom=-3\n"))
    assert prev[2].options.effective_activation == "leaky"
    model = darkcfg.build(alone)
    assert model.layers[1].act.name == "linear"


def test_xnor_with_unequal_strides_is_a_float_conv() -> None:
    body = conv(32, act="linear") + "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\n" \
        "stride_x=1\nstride_y=2\npad=1\nactivation=leaky\n"
    msgs = warnings_of(cfg(body + "xnor=1\n"))
    assert any("skips its XNOR path and runs an ordinary float convolution" in m for m in msgs)
    xnor = build_random(cfg(body + "xnor=1\n"), seed=1)
    plain = build_random(cfg(body), seed=1)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(run(xnor, x)[0], run(plain, x)[0], rtol=1e-5, atol=1e-6)


def test_xnor_warns_where_darknet_cpu_path_breaks() -> None:
    msgs = warnings_of(cfg(conv(8), conv(8, size=1, extra="xnor=1\npad=0")))
    assert any("prints 'is no non-optimized version'" in m for m in msgs)
    assert not any("non-optimized" in m for m in warnings_of(cfg(conv(8), conv(8, extra="xnor=1"))))


def test_xnor_trains_with_straight_through_gradients() -> None:
    model = build_random(cfg(conv(32), conv(16, extra="xnor=1")), seed=2).train()
    y = model(torch.rand(2, 3, 16, 16))[0]
    y.square().mean().backward()
    g = model.layers[1].conv.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert model.layers[0].conv.weight.grad.abs().sum() > 0  # through the binarized input


def test_batch_of_two_equals_two_runs_of_one() -> None:
    text = cfg(conv(32), conv(32, stride=2, extra="xnor=1\nantialiasing=1"),
               "[maxpool]\nsize=2\nstride=2\nantialiasing=2\n", conv(16, stride=1, extra="xnor=1"),
               "[maxpool]\nmaxpool_depth=1\nout_channels=6\n", conv(8, stride=2),
               "[shortcut]\nfrom=-2\n",
               "[shortcut]\nfrom=-2\nweights_type=per_channel\nweights_normalization=softmax\n",
               w=32, h=32)
    model = build_random(text, seed=9, out_indices=range(8))
    x = torch.rand(2, 3, 32, 32)
    both = run(model, x)
    one = [run(model, x[i:i + 1]) for i in range(2)]
    for i, y in enumerate(both):
        for b in range(2):
            assert torch.allclose(y[b], one[b][i][0], rtol=1e-5, atol=1e-6), (i, b)


# --- Darknet's oracle -----------------------------------------------------------------------------

def _case(name: str):
    (case,) = [c for c in micro_cases() if c.name == name]
    return case


def _oracle_outputs(case, tmp_path, inverted: bool) -> tuple[darkcfg.Network, list[np.ndarray]]:
    net = parse_quiet(case.cfg_path.read_text())
    model = darkcfg.build(net, out_indices=range(len(net)))
    set_xnor_inverted_bits(model, inverted)
    model.load_darknet_weights(case.write_weights(tmp_path / "w.weights"))
    x = torch.from_numpy(case.input())[None]
    return net, [y[0].numpy().reshape(-1) for y in run(model, x)]


@needs_shared
@pytest.mark.parametrize("name", ["conv_xnor_c32", "conv_xnor_bin_output", "conv_xnor_stride2"])
def test_oracle_xnor_c32_ran_with_libdarknet_bit_order(name: str, tmp_path) -> None:
    """The oracle harness left gpu_index at libdarknet's 0: with inverted bits every layer matches,
    with the `darknet` CLI's bit order (the default) the xnor layer differs."""
    case = _case(name)
    stored = case.outputs()
    _, outs = _oracle_outputs(case, tmp_path, inverted=True)
    for i, ours in enumerate(outs):
        assert rel_err(ours, stored[f"layer_{i:03d}"].reshape(-1)) <= 1e-4, i
    _, default = _oracle_outputs(case, tmp_path, inverted=False)
    assert rel_err(default[1], stored["layer_001"].reshape(-1)) > 0.1


@needs_shared
def test_oracle_xnor_c8_needs_no_bit_order_choice(tmp_path) -> None:
    case = _case("conv_xnor_c8")
    stored = case.outputs()
    for inverted in (False, True):
        _, outs = _oracle_outputs(case, tmp_path, inverted)
        for i, ours in enumerate(outs):
            assert rel_err(ours, stored[f"layer_{i:03d}"].reshape(-1)) <= 1e-4, i


@needs_shared
@pytest.mark.parametrize("name", ["conv_antialiasing1_stride2", "conv_antialiasing2_stride2",
                                  "maxpool_antialiasing1", "maxpool_antialiasing2"])
def test_oracle_antialiasing_shapes_are_the_blurred_ones(name: str) -> None:
    case = _case(name)
    net = parse_quiet(case.cfg_path.read_text())
    for spec, ref in zip(net.layers, case.layout["layers"]):
        assert list(spec.out_shape.__dict__.values()) == ref.get("aa_out_chw", ref["out_chw"])
        assert spec.bflops == pytest.approx(ref["bflops"], rel=1e-6)


# --- the cfg corpus -------------------------------------------------------------------------------

CORPUS = [
    "yolov3-tiny_xnor.cfg", "tiny-yolo_xnor.cfg", "darknet53_448_xnor.cfg", "yolov1/xyolo.test.cfg",
    "extra/AlexeyAB__yolo2_light/bin/tiny-yolo-obj_xnor.cfg",
    "resnet50.cfg", "resnet101.cfg", "resnet152.cfg",
    "extra/pjreddie__darknet/cfg/resnet18.cfg", "extra/pjreddie__darknet/cfg/resnet34.cfg",
    "extra/pjreddie__darknet/cfg/resnext50.cfg",
    "extra/AlexeyAB__darknet/build/darknet/x64/resnet50_yolo.cfg",
    "extra/WongKinYiu__CrossStagePartialNetworks/cfg/resnet10.cfg",
    "extra/WongKinYiu__CrossStagePartialNetworks/cfg/resnet50.cfg",
]
STRIDED_CFGS = {"resnet50.cfg", "resnet101.cfg", "resnet152.cfg", "resnet18.cfg", "resnet34.cfg",
                "resnext50.cfg", "resnet50_yolo.cfg", "resnet10.cfg"}


@needs_shared
@pytest.mark.parametrize("rel", CORPUS)
def test_corpus_cfg_builds_and_runs(rel: str) -> None:
    path = SHARED / "darknet-cfgs" / rel
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            net = darkcfg.parse(path, width=64, height=64)
        except darkcfg.CfgError as e:
            if "unknown section type" in e.msg and e.section not in ("convolutional", "maxpool",
                                                                    "shortcut"):
                pytest.skip(f"needs [{e.section}] from another part of darkcfg")
            raise
    msgs = [str(w.message) for w in rec]
    strided = [m for m in msgs if "Darknet (AlexeyAB) rejects unequal sizes" in m]
    assert bool(strided) == (path.name in STRIDED_CFGS)
    assert all("[shortcut] #" in m for m in strided)
    if "xnor" in path.name:
        assert any(l.type == "convolutional" and l.options.xnor for l in net)
    model = darkcfg.build(net)
    with torch.no_grad():
        outs = model(torch.rand(2, net.net.channels, 64, 64))
    assert all(torch.isfinite(y).all() for y in outs)
