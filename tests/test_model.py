"""DarknetModel: layer indexing, state_dict keys, outputs, batching, memory plan, registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import darkcfg
from oracle import REPO

TINY = (REPO / "cfgs" / "darknet53-tiny.cfg").read_text()

MIXED = """
[net]
width=16
height=12
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=8
size=3
pad=1
activation=mish

[shortcut]
from=-2
activation=linear

[route]
layers=-1,1

[upsample]
stride=2

[connected]
output=4
batch_normalize=1
activation=linear

[softmax]
"""


def test_state_dict_keys_are_frozen() -> None:
    keys = list(darkcfg.build(MIXED).state_dict())
    assert keys == [
        "layers.0.conv.weight", "layers.0.bn.weight", "layers.0.bn.bias",
        "layers.0.bn.running_mean", "layers.0.bn.running_var",
        "layers.2.conv.weight", "layers.2.conv.bias",
        "layers.6.fc.weight", "layers.6.bn.weight", "layers.6.bn.bias",
        "layers.6.bn.running_mean", "layers.6.bn.running_var",
    ]


EXTENDED = ("[net]\nwidth=8\nheight=8\nchannels=2\n"
            "[convolutional]\nfilters=4\nsize=1\n"
            "[batchnorm]\n"
            "[shortcut]\nfrom=-2\nweights_type=per_channel\nweights_normalization=relu\n"
            "[local]\nfilters=2\nsize=3\npad=1\n"
            "[implicit]\nfilters=2\n"
            "[route]\nlayers=3\n"
            "[crnn]\nhidden=2\noutput=2\nsize=1\n"
            "[conv_lstm]\noutput=2\nsize=1\npeephole=1\n"
            "[avgpool]\n"
            "[rnn]\nhidden=2\noutput=2\n"
            "[gru]\noutput=2\n"
            "[lstm]\noutput=2\n")


def test_state_dict_keys_of_the_other_layer_types_are_frozen() -> None:
    keys = list(darkcfg.build(EXTENDED).state_dict())
    prefixes = sorted({k.rsplit(".", 1)[0] for k in keys})
    assert prefixes == [
        "layers.0.conv", "layers.1.bn",
        "layers.10.input_h_layer.fc", "layers.10.input_r_layer.fc", "layers.10.input_z_layer.fc",
        "layers.10.state_h_layer.fc", "layers.10.state_r_layer.fc", "layers.10.state_z_layer.fc",
        "layers.11.uf.fc", "layers.11.ug.fc", "layers.11.ui.fc", "layers.11.uo.fc",
        "layers.11.wf.fc", "layers.11.wg.fc", "layers.11.wi.fc", "layers.11.wo.fc",
        "layers.2", "layers.3", "layers.4",
        "layers.6.input_layer.conv", "layers.6.output_layer.conv", "layers.6.self_layer.conv",
        "layers.7.uf.conv", "layers.7.ug.conv", "layers.7.ui.conv", "layers.7.uo.conv",
        "layers.7.vf.conv", "layers.7.vi.conv", "layers.7.vo.conv",
        "layers.7.wf.conv", "layers.7.wg.conv", "layers.7.wi.conv", "layers.7.wo.conv",
        "layers.9.input_layer.fc", "layers.9.output_layer.fc", "layers.9.self_layer.fc"]
    assert [k for k in keys if k.count(".") == 2] == [
        "layers.2.weight", "layers.3.weight", "layers.3.bias", "layers.4.weight"]


def test_models_start_in_inference_mode() -> None:
    model = darkcfg.build(MIXED)
    assert not model.training and not model.layers[0].bn.training


def test_layer_i_is_darknet_layer_i() -> None:
    model = darkcfg.build(MIXED)
    types = [type(m).__name__ for m in model.layers]
    assert types == ["Convolutional", "Maxpool", "Convolutional", "Shortcut", "Route", "Upsample",
                     "Connected", "Softmax"]
    assert [l.type for l in model.network] == ["convolutional", "maxpool", "convolutional",
                                               "shortcut", "route", "upsample", "connected",
                                               "softmax"]


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    a, b = darkcfg.build(MIXED).eval(), darkcfg.build(MIXED).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 12, 16)  # two instances: the same within float rounding
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=1e-5, atol=1e-6)


def test_default_outputs_and_out_indices() -> None:
    model = darkcfg.build(MIXED).eval()
    x = torch.rand(1, 3, 12, 16)
    (out,) = model(x)
    assert out.shape == (1, 4, 1, 1)
    assert torch.allclose(out.sum(), torch.tensor(1.0))
    model.out_indices = [4, 0, -1]
    a, b, c = model(x)
    assert a.shape == (1, 16, 6, 8) and b.shape == (1, 8, 12, 16) and torch.equal(c, out)
    with pytest.raises(IndexError):
        model.out_indices = [8]


def test_batch_equals_single_images() -> None:
    torch.manual_seed(1)
    model = darkcfg.build(TINY, out_indices=[8, 12], width=96, height=64).eval()
    x = torch.rand(3, 3, 64, 96)
    with torch.no_grad():
        batched = model(x)
        singles = [model(x[i:i + 1]) for i in range(3)]
    for k, out in enumerate(batched):
        assert out.shape == (3, *((256, 4, 6) if k == 0 else (1024, 2, 3)))
        for i in range(3):
            torch.testing.assert_close(out[i:i + 1], singles[i][k], rtol=1e-5, atol=1e-5)


def test_only_needed_layers_run_and_outputs_are_freed() -> None:
    model = darkcfg.build(TINY, out_indices=[4]).eval()
    ran: list[int] = []
    for i, layer in enumerate(model.layers):
        layer.register_forward_hook(lambda m, inp, out, i=i: ran.append(i))
    model(torch.rand(1, 3, 32, 32))
    assert ran == [0, 1, 2, 3, 4]
    # In a plain chain every output is dropped as soon as the next layer has used it.
    assert all(free == ((i - 1,) if i else (-1,)) for i, _, _, free in model._steps)


def test_route_keeps_its_inputs_alive_until_used() -> None:
    model = darkcfg.build(MIXED, out_indices=[4]).eval()
    steps = {i: (keep, free) for i, _, keep, free in model._steps}
    assert steps[1] == (True, (0,))       # maxpool output 1 is kept for route 4
    assert steps[3] == (True, (2,))       # shortcut frees conv 2, keeps its own output
    assert steps[4] == (True, (1, 3))     # route frees both inputs, its output is returned
    assert 5 not in steps                 # upsample and later are not needed for output 4


def test_user_registered_section() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ScaleOpts:
        factor: float

    def parse_scale(opts, ctx):
        return darkcfg.Parsed(ScaleOpts(opts.float("factor", 1.0)), ctx.in_shape)

    class Scale(nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.factor = spec.options.factor

        def forward(self, x):
            return x * self.factor

    darkcfg.register_section("test_scale", parse_scale, lambda spec: Scale(spec),
                             aliases=("tscale",), replace=True)
    cfg = "[net]\nwidth=4\nheight=4\nchannels=1\n[tscale]\nfactor=3\n"
    model = darkcfg.build(cfg)
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(model(x)[0], 3 * x)
    assert model.network[0].type == "test_scale"
    with pytest.raises(ValueError, match="already registered"):
        darkcfg.register_section("other", parse_scale, aliases=("tscale",))


def test_maxpool_never_picks_padding() -> None:
    cfg = "[net]\nwidth=3\nheight=3\nchannels=1\n[maxpool]\nsize=3\nstride=1\n"
    x = -torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    (y,) = darkcfg.build(cfg)(x)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0].item() == -1.0 and y[0, 0, 2, 2].item() == -5.0  # not 0 from padding


def test_non_square_and_other_sizes_at_run_time() -> None:
    model = darkcfg.build(TINY, out_indices=[12]).eval()
    (y,) = model(torch.rand(1, 3, 160, 96))
    assert y.shape == (1, 1024, 5, 3)
    odd = darkcfg.build(TINY, out_indices=[12], width=100, height=70).eval()
    # 70 -> 35 -> 18 -> 9 -> 5 -> 3 (Darknet's maxpool rounds up on odd sizes)
    assert odd.network[12].out_shape == darkcfg.Shape(1024, 3, 4)
    assert odd(torch.rand(1, 3, 70, 100))[0].shape == (1, 1024, 3, 4)


def test_bn_is_darknets_formula() -> None:
    cfg = "[net]\nwidth=2\nheight=2\nchannels=1\n[conv]\nfilters=1\nbatch_normalize=1\nactivation=linear\n"
    model = darkcfg.build(cfg).eval()
    conv = model.layers[0]
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
        conv.bn.running_mean.fill_(0.5)
        conv.bn.running_var.fill_(0.25)
        conv.bn.weight.fill_(2.0)
        conv.bn.bias.fill_(0.1)
    x = torch.full((1, 1, 2, 2), 3.0)
    expected = (3.0 - 0.5) / np.sqrt(0.25 + 1e-5) * 2.0 + 0.1
    assert model(x)[0][0, 0, 0, 0].item() == pytest.approx(expected, rel=1e-6)
