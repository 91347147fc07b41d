"""Inference fast paths: fuse(), in-place activations, init-free builds for loading, Darknet's init."""

from __future__ import annotations

import math

import pytest
import torch

import darkcfg

NET = "[net]\nwidth=16\nheight=16\nchannels=3\n"
CONV_BN = "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"
CFG = (NET + CONV_BN + "[convolutional]\nfilters=3\nsize=1\nactivation=mish\n"
       "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nshare_index=0\n"
       "activation=leaky\n[connected]\nbatch_normalize=1\noutput=5\nactivation=linear\n")


def _randomize_bn(model: darkcfg.DarknetModel) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def test_fuse_keeps_outputs_and_drops_batchnorm() -> None:
    model = darkcfg.build(CFG, out_indices=[0, 1, 2, 3])
    _randomize_bn(model)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    assert model.fused
    assert not any("bn." in k for k in model.state_dict())
    for a, b in zip(after, before):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    # share_index: layer 2 uses layer 0's fused tensors, not a second fold of them.
    assert model.layers[2].conv.weight is model.layers[0].conv.weight
    assert model.layers[2].conv.bias is model.layers[0].conv.bias


def test_a_fused_model_cannot_read_or_write_darknet_weights(tmp_path) -> None:
    model = darkcfg.build(CFG).fuse()
    with pytest.raises(ValueError, match=r"cannot save a \.weights file from a fused model"):
        model.save_darknet_weights(tmp_path / "w.weights")
    with pytest.raises(ValueError, match=r"cannot load a \.weights file into a fused model"):
        model.load_darknet_weights(tmp_path / "w.weights")


def test_in_place_activation_only_without_autograd() -> None:
    model = darkcfg.build(CFG, out_indices=[0])
    conv = model.layers[0]
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    y = model(x)[0]
    y.sum().backward()  # autograd path: no in-place op broke the graph
    assert x.grad is not None and conv.act.fn_ is not None
    with torch.no_grad():
        assert torch.allclose(model(x)[0], y.detach())


def test_init_is_darknets_uniform_and_reproducible() -> None:
    torch.manual_seed(1)
    a = darkcfg.build(CFG)
    torch.manual_seed(1)
    b = darkcfg.build(CFG)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    w = a.layers[0].conv.weight
    bound = math.sqrt(2.0 / (3 * 3 * 3))
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert torch.equal(a.layers[1].conv.bias, torch.zeros(3))  # Darknet's biases start at 0
    fc = a.layers[3].fc.weight
    assert fc.abs().max() <= math.sqrt(2.0 / 8 / 16 / 16)
    c = darkcfg.build(CFG)
    c.init_weights(seed=5)
    d = darkcfg.build(CFG)
    d.init_weights(seed=5)
    assert torch.equal(c.layers[0].conv.weight, d.layers[0].conv.weight)


def test_load_initialises_what_the_file_does_not_fill(tmp_path) -> None:
    cfg = CFG.replace("filters=3\nsize=1\n", "filters=3\nsize=1\ndontload=1\n")
    src = darkcfg.build(cfg)
    path = tmp_path / "w.weights"
    src.save_darknet_weights(path)
    model = darkcfg.load(cfg, path)
    for key, value in src.state_dict().items():
        if not key.startswith("layers.1."):
            assert torch.equal(model.state_dict()[key], value), key
    w = model.layers[1].conv.weight  # dontload=1: Darknet's random init, not leftover memory
    assert torch.isfinite(w).all() and 0 < w.abs().max() <= math.sqrt(2.0 / 8)
    assert torch.equal(model.layers[1].conv.bias, torch.zeros(3))


# --- torch.export / torch.compile ----------------------------------------------------------------

def _max_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((p - q).abs().max() / max(1.0, float(q.abs().max()))) for p, q in zip(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["cfgs/darknet53-tiny.cfg", "cfgs/cspdarknet53-tiny.cfg",
                                 "yolov4-tiny.cfg"])
def test_one_export_runs_every_batch_and_size(cfg: str) -> None:
    from oracle import REPO, SHARED

    path = REPO / cfg if cfg.startswith("cfgs/") else (SHARED / "darknet-cfgs" / cfg if SHARED else None)
    if path is None:
        pytest.skip("../shared is not present (yolov4-tiny.cfg lives there)")
    model = darkcfg.build(path).fuse()
    assert model.stride == 32
    program = model.export()
    run = program.module()
    for shape in [(1, 3, 64, 96), (3, 3, 160, 128)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            ours, exported = model(x), run(x)
        assert [t.shape for t in exported] == [t.shape for t in ours]
        assert _max_rel(exported, ours) <= 1e-5


@pytest.mark.slow
def test_torch_compile_gives_the_same_outputs() -> None:
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile's CPU backend needs a C++ compiler, none is installed")
    from oracle import REPO

    model = darkcfg.build(REPO / "cfgs" / "darknet53-tiny.cfg", width=64, height=64).fuse()
    compiled = torch.compile(model)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert _max_rel(compiled(x), model(x)) <= 1e-4


def test_tune_malloc_on_glibc() -> None:
    import platform

    expected = platform.libc_ver()[0] == "glibc"
    assert darkcfg.tune_malloc() is expected
    model = darkcfg.build(CFG)
    with torch.no_grad():
        assert all(torch.isfinite(o).all() for o in model(torch.rand(1, 3, 16, 16)))


def test_export_of_a_network_whose_weights_fix_its_size_has_a_dynamic_batch_only() -> None:
    cfg = ("[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\nstride=2\n"
           "pad=1\nactivation=leaky\n[connected]\noutput=5\nactivation=linear\n")
    model = darkcfg.build(cfg)
    assert not model.accepts_other_sizes()
    assert set(model.dynamic_shapes()["x"]) == {0}
    program = model.export()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x)[0], model(x)[0])
    full = darkcfg.build(cfg.replace("[connected]\noutput=5\nactivation=linear\n",
                                     "[maxpool]\nsize=2\nstride=2\n"))
    assert full.accepts_other_sizes() and set(full.dynamic_shapes()["x"]) == {0, 2, 3}
