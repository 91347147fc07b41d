"""Each switch of darkcfg.train.semantics.Semantics on its own.

Every test starts from Darknet's CPU build (`Trainer(model, darknet="cpu")`), flips exactly one
switch to the GPU build's value, and checks both sides against an independent computation: the
CPU value still does what the CPU build does, and the flipped one does what the GPU build does
(notes/gpu_semantics.md, with file:line). The reference is a float64 forward written here with
torch.nn.functional and differentiated by autograd, and Darknet's update formulas written out by
hand. The last tests run the full GPU semantics, which on these nets is exactly autograd SGD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import darkcfg
from darkcfg.train import CPU, GPU, Semantics, Trainer
from darkcfg.train.batchnorm import DarknetBatchNormFunction

Params = dict[str, Tensor]

# The switch each test flips, so that a switch added to Semantics without a test fails below.
TESTED: set[str] = set()


def flips(name: str) -> Callable:
    """Marks the test of switch `name` (the test itself is unchanged)."""
    TESTED.add(name)
    return lambda f: f


# -- building and running ------------------------------------------------------------------------

def _cfg(body: str, *, batch: int = 2, subdivisions: int = 1, size: int = 4, channels: int = 2,
         **net: object) -> str:
    keys = dict(batch=batch, subdivisions=subdivisions, width=size, height=size,
                channels=channels, learning_rate=0.1, momentum=0, decay=0)
    keys.update(net)
    return "[net]\n" + "".join(f"{k}={v}\n" for k, v in keys.items()) + "\n" + body


def _model(cfg: str, seed: int = 0, scale: float = 0.4) -> darkcfg.DarknetModel:
    """A model with small seeded parameters (Darknet's init is not what is tested here)."""
    model = darkcfg.build(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.endswith("bn.weight"):
                p.copy_(1 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:
                p.copy_(scale * r)
    return model


def _trainer(model, switch: str | None = None) -> Trainer:
    """Darknet's CPU semantics with at most one switch set to the GPU build's value."""
    kw = {switch: getattr(GPU, switch)} if switch else {}
    trainer = Trainer(model, darknet="cpu", **kw)
    assert trainer.semantics.differences(CPU) == ([switch] if switch else [])
    return trainer


def _images(n: int, c: int = 2, size: int = 4, seed: int = 1) -> Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _onehot(n: int, k: int, seed: int = 2) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.one_hot(torch.randint(0, k, (n,), generator=g), k).float()


def _snapshot(model) -> Params:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_close(actual: Tensor, expected: Tensor, rel: float = 1e-4, what: str = "") -> None:
    """Within `rel` of the expected tensor's largest magnitude (a float32 engine against a
    float64 reference; an all-zero expectation means exactly unchanged)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    err = float((actual - expected).abs().max())
    scale = max(float(expected.abs().max()), 1e-12)
    assert err <= rel * scale, \
        f"{what}: off by {err:.3g}, {err / scale:.3g} of the largest {scale:.3g}"


def _assert_differs(actual: Tensor, other: Tensor, rel: float = 1e-2, what: str = "") -> None:
    actual, other = actual.detach().double(), other.detach().double()
    err = float((actual - other).abs().max())
    assert err > rel * float(other.abs().max()), f"{what}: expected a difference, got {err:.3g}"


# -- the independent reference: float64 functional forward, autograd, Darknet's formulas ---------

def _ref(model) -> Params:
    return {n: p.detach().double().clone().requires_grad_() for n, p in model.named_parameters()}


def _conv(P: Params, i: int, x: Tensor, *, pad: int = 0, bn: bool = False,
          leaky: bool = False) -> Tensor:
    """Darknet's conv (BN: the cuDNN training forward, biased variance), leaky .1 or linear."""
    y = F.conv2d(x, P[f"layers.{i}.conv.weight"], None if bn else P[f"layers.{i}.conv.bias"],
                 padding=pad)
    if bn:
        y = F.batch_norm(y, None, None, P[f"layers.{i}.bn.weight"], P[f"layers.{i}.bn.bias"],
                         training=True, eps=1e-5)
    return F.leaky_relu(y, 0.1) if leaky else y


def _xent(logits: Tensor, t: Tensor) -> Tensor:
    """[softmax]'s cost, sum of -t*log(p): its delta t - p is minus its gradient (one-hot t)."""
    return -(t.double() * torch.log_softmax(logits.reshape(len(t), -1), 1)).sum()


def _updates(loss: Tensor, P: Params) -> Params:
    """Darknet's `*_updates` of one pass: minus the gradient of the loss."""
    grads = torch.autograd.grad(loss, list(P.values()), allow_unused=True)
    return {n: -g if g is not None else torch.zeros_like(p)
            for (n, p), g in zip(P.items(), grads)}


def _decayed(name: str) -> bool:
    return name.endswith("conv.weight") or name.endswith("fc.weight")


# == zero_every_delta ==============================================================================

UPSAMPLE_ROUTE = """
[convolutional]
filters=2
size=3
pad=1
activation=linear

[upsample]
stride=2

[route]
layers=-1

[convolutional]
filters=3
size=8
activation=linear

[softmax]
"""


@flips("zero_every_delta")
@pytest.mark.parametrize("switch", [None, "zero_every_delta"])
def test_zero_every_delta_ends_stale_upsample_deltas(switch) -> None:
    """[upsample] before [route]: the CPU never zeroes the upsample's delta (network.c:276-278),
    so after two subdivisions it holds both passes' gradients; the GPU zeroes every delta
    (network_kernels.cu:79-81) and it holds the current pass's only."""
    cfg = _cfg(UPSAMPLE_ROUTE, subdivisions=2)
    model = _model(cfg)
    x, t = _images(2), _onehot(2, 3)
    P = _ref(model)
    grads = []
    for s in range(2):
        up = F.interpolate(_conv(P, 0, x[s:s + 1].double(), pad=1), scale_factor=2)
        grads.append(-torch.autograd.grad(_xent(_conv(P, 3, up), t[s:s + 1]), up)[0])
    trainer = _trainer(model, switch)
    trainer.engine.trace = True
    trainer.step(x, t)
    deltas = trainer.engine.traced_deltas
    _assert_close(deltas[2], grads[1], what="route delta (overwritten by the conv)")
    expected = grads[1] if switch else grads[0] + grads[1]
    _assert_close(deltas[1], expected, what="upsample delta")
    _assert_differs(deltas[1], grads[0] + grads[1] if switch else grads[1], what="upsample")


# == conv_input_delta_adds =========================================================================

CONV_AND_ROUTE = """
[convolutional]
filters=2
size=3
pad=1
activation=linear

[convolutional]
filters=2
size=3
pad=1
activation=linear

[route]
layers=-1,-2

[convolutional]
filters=3
size=4
activation=linear

[softmax]
"""


@flips("conv_input_delta_adds")
@pytest.mark.parametrize("switch", [None, "conv_input_delta_adds"])
def test_conv_input_delta_adds_keeps_the_route_gradient(switch) -> None:
    """Layer 0 feeds conv 1 and the route: the CPU conv's backward zero-fills layer 0's delta
    (col2im.c:65) after the route added to it; cuDNN adds (convolutional_kernels.cu:881-893),
    so layer 0 gets the whole gradient, and its weights learn from it."""
    model = _model(_cfg(CONV_AND_ROUTE))
    x, t = _images(2), _onehot(2, 3)
    P = _ref(model)

    def loss(through_route: bool) -> tuple[Tensor, Tensor]:
        a = _conv(P, 0, x.double(), pad=1)
        b = _conv(P, 1, a, pad=1)
        return a, _xent(_conv(P, 3, torch.cat([b, a if through_route else a.detach()], 1)), t)

    a, full = loss(True)
    a_conv, conv_only = loss(False)
    expected_delta = -torch.autograd.grad(full if switch else conv_only, a if switch else a_conv,
                                          retain_graph=True)[0]
    expected_w = _updates(full if switch else conv_only, P)["layers.0.conv.weight"] * 0.1 / 2
    before = _snapshot(model)
    trainer = _trainer(model, switch)
    trainer.engine.trace = True
    trainer.step(x, t)
    delta = trainer.engine.traced_deltas[0]
    _assert_close(delta, expected_delta, what="layer 0 delta")
    w = "layers.0.conv.weight"
    _assert_close(model.get_parameter(w) - before[w], expected_w, what="layer 0 update")
    other = -torch.autograd.grad(conv_only if switch else full, a_conv if switch else a)[0]
    _assert_differs(delta, other, what="layer 0 delta")


# == sam_from_delta_adds ===========================================================================

SAM_NET = """
[convolutional]
filters=2
size=3
pad=1
activation=linear

[maxpool]
size=1
stride=1

[convolutional]
filters=2
size=1
activation=linear

[sam]
from=-3
activation=linear

[route]
layers=-1,-4

[convolutional]
filters=3
size=4
activation=linear

[softmax]
"""


@flips("sam_from_delta_adds")
@pytest.mark.parametrize("switch", [None, "sam_from_delta_adds"])
def test_sam_from_delta_adds(switch) -> None:
    """Layer 0 is [sam]'s `from` and also in a later route: the CPU [sam] assigns the from
    layer's delta (sam_layer.c:92), wiping the route's part; the GPU adds
    (blas_kernels.cu:1705), so layer 0 gets the whole gradient."""
    model = _model(_cfg(SAM_NET))
    x, t = _images(2), _onehot(2, 3)
    P = _ref(model)
    a = _conv(P, 0, x.double(), pad=1)
    c = _conv(P, 2, a)  # [maxpool] size=1 stride=1 is the identity
    s = c * a
    full = _xent(_conv(P, 5, torch.cat([s, a], 1)), t)
    without_route = _xent(_conv(P, 5, torch.cat([s, a.detach()], 1)), t)
    g_full = -torch.autograd.grad(full, a, retain_graph=True)[0]
    g_cpu = -torch.autograd.grad(without_route, a)[0]
    trainer = _trainer(model, switch)
    trainer.engine.trace = True
    trainer.step(x, t)
    delta = trainer.engine.traced_deltas[0]
    _assert_close(delta, g_full if switch else g_cpu, what="from-layer delta")
    _assert_differs(delta, g_cpu if switch else g_full, what="from-layer delta")


# == connected_clips_delta =========================================================================

CONNECTED_COST = """
[convolutional]
filters=2
size=3
pad=1
activation=linear

[connected]
output=3
activation=linear

[cost]
"""


@flips("connected_clips_delta")
@pytest.mark.parametrize("switch", [None, "connected_clips_delta"])
def test_connected_clips_delta(switch) -> None:
    """A [connected] delta beyond [-1, 1] is clamped before its backward on the GPU
    (connected_layer.c:379), not on the CPU (213); the conv below learns from what passes. The
    connected layer itself never learns on either build (no l.train)."""
    model = _model(_cfg(CONNECTED_COST))
    x = _images(2)
    P = _ref(model)
    a = _conv(P, 0, x.double(), pad=1)
    y = F.linear(a.flatten(1), P["layers.1.fc.weight"], P["layers.1.fc.bias"])
    t = (y.detach() + torch.tensor([[2.0, 0.3, -1.5], [-0.4, 3.0, 0.1]])).float()
    delta = t.double() - y.detach()  # [cost] sse: t - x, added with scale 1
    assert (delta.abs() > 1).any() and (delta.abs() < 1).any()
    clamped = delta.clamp(-1, 1)
    w = "layers.0.conv.weight"
    expected = {k: torch.autograd.grad(y, P[w], d, retain_graph=True)[0] * 0.1 / 2
                for k, d in (("gpu", clamped), ("cpu", delta))}
    before = _snapshot(model)
    _trainer(model, switch).step(x, t)
    update = model.get_parameter(w) - before[w]
    _assert_close(update, expected["gpu" if switch else "cpu"], what="conv update")
    _assert_differs(update, expected["cpu" if switch else "gpu"], what="conv update")
    for name in ("layers.1.fc.weight", "layers.1.fc.bias"):
        assert torch.equal(model.get_parameter(name), before[name]), name


# == stopbackward_until_iteration ==================================================================

TWO_CONVS = """
[convolutional]
filters=2
size=3
pad=1
activation=linear
{first}

[convolutional]
filters=3
size=4
activation=linear
{second}

[softmax]
"""


def _two_convs(P: Params, x: Tensor) -> Tensor:
    return _conv(P, 1, _conv(P, 0, x.double(), pad=1))


@flips("stopbackward_until_iteration")
@pytest.mark.parametrize("switch", [None, "stopbackward_until_iteration"])
def test_stopbackward_until_iteration(switch) -> None:
    """stopbackward=2 on layer 1: the CPU stops the backward there in every iteration
    (network.c:355), so with decay 0 layers 0-1 never move; the GPU only while the iteration is
    below 2 (network_kernels.cu:172-173), then the update is plain SGD on the autograd gradient."""
    model = _model(_cfg(TWO_CONVS.format(first="", second="stopbackward=2")))
    trainer = _trainer(model, switch)
    t = _onehot(2, 3)
    for it in range(4):
        x = _images(2, seed=10 + it)
        P = _ref(model)
        u = _updates(_xent(_two_convs(P, x), t), P)
        before = _snapshot(model)
        trainer.step(x, t)
        learns = switch is not None and it >= 2
        for name, p in model.named_parameters():
            expected = u[name] * 0.1 / 2 if learns else torch.zeros_like(p)
            _assert_close(p - before[name], expected, what=f"iteration {it} {name}")
            assert bool((p != before[name]).any()) is learns, f"iteration {it} {name}"


# == adam ==========================================================================================

@flips("adam")
@pytest.mark.parametrize("switch", [None, "adam"])
def test_adam_is_adam_update_gpu(switch) -> None:
    """adam=1: the CPU build ignores it (its SGD with momentum runs); the GPU runs
    adam_update_gpu (blas_kernels.cu:192-222) on weights, biases alike: decay*B into the summed
    update, moments of that, a step of lr (not lr/B) with bias correction at t = i+1, then the
    update buffer is cleared ([net] momentum unused). Written out here for two iterations."""
    b1, b2, eps, lr, decay, momentum, batch = 0.8, 0.95, 1e-3, 0.01, 0.05, 0.5, 2
    cfg = _cfg(TWO_CONVS.format(first="", second=""), adam=1, B1=b1, B2=b2, eps=eps,
               learning_rate=lr, decay=decay, momentum=momentum)
    model = _model(cfg)
    trainer = _trainer(model, switch)
    t = _onehot(2, 3)
    ref = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    m = {n: torch.zeros_like(p) for n, p in ref.items()}
    v = {n: torch.zeros_like(p) for n, p in ref.items()}
    for it in range(2):
        x = _images(2, seed=20 + it)
        P = {n: p.clone().requires_grad_() for n, p in ref.items()}
        u = _updates(_xent(_two_convs(P, x), t), P)
        step = it + 1
        for n in ref:
            if switch:
                d = u[n] - decay * batch * ref[n]
                m[n] = b1 * m[n] + (1 - b1) * d
                v[n] = b2 * v[n] + (1 - b2) * d * d
                mhat, vhat = m[n] / (1 - b1 ** step), v[n] / (1 - b2 ** step)
                ref[n] = ref[n] + lr * mhat / (vhat.sqrt() + eps)
            else:  # Darknet's SGD: m holds the momentum buffer
                m[n] = m[n] + u[n] - (decay * batch * ref[n] if _decayed(n) else 0)
                ref[n] = ref[n] + lr / batch * m[n]
                m[n] = m[n] * momentum
        before = _snapshot(model)
        trainer.step(x, t)
        for n, p in model.named_parameters():
            _assert_close(p - before[n], ref[n] - before[n].double(), rel=1e-3,
                          what=f"iteration {it} {n}")


# == layer_train_options ===========================================================================

def _sgd_reference(model, batches, *, lr: Callable[[int], float], decay: float,
                   waits: Callable[[str, int], bool]) -> list[Params]:
    """Darknet's update with momentum 0, a parameter waiting (accumulating its `*_updates`, no
    decay) in the iterations where `waits` says so. The parameters after each iteration."""
    ref = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    acc = {n: torch.zeros_like(p) for n, p in ref.items()}
    out = []
    for it, (x, t) in enumerate(batches):
        P = {n: p.clone().requires_grad_() for n, p in ref.items()}
        u = _updates(_xent(_two_convs(P, x), t), P)
        for n in ref:
            acc[n] += u[n]
            if waits(n, it):
                continue
            if _decayed(n):
                acc[n] -= decay * len(t) * ref[n]
            ref[n] = ref[n] + lr(it) / len(t) * acc[n]
            acc[n].zero_()
        out.append({n: p.clone() for n, p in ref.items()})
    return out


def _run(trainer: Trainer, batches) -> list[Params]:
    out = []
    for x, t in batches:
        trainer.step(x, t)
        out.append(_snapshot(trainer.model))
    return out


@flips("layer_train_options")
@pytest.mark.parametrize("switch", [None, "layer_train_options"])
def test_dont_update_accumulates_then_applies_the_sum(switch) -> None:
    """dont_update=2 (GPU only, network_kernels.cu:294): no update while batch_num <= 2, the
    gradients keep summing, and iteration 2 applies all three (decay once)."""
    decay = 0.01
    model = _model(_cfg(TWO_CONVS.format(first="dont_update=2", second=""), decay=decay))
    batches = [(_images(2, seed=30 + i), _onehot(2, 3, seed=i)) for i in range(3)]
    expected = _sgd_reference(model, batches, lr=lambda it: 0.1, decay=decay,
                              waits=lambda n, it: bool(switch) and n.startswith("layers.0.")
                              and it < 2)
    start = _snapshot(model)
    got = _run(_trainer(model, switch), batches)
    for it in range(3):
        for n in start:
            _assert_close(got[it][n] - start[n], expected[it][n] - start[n].double(),
                          what=f"iteration {it} {n}")
    moved = not torch.equal(got[0]["layers.0.conv.weight"], start["layers.0.conv.weight"])
    assert moved is (switch is None)


@pytest.mark.parametrize("switch", [None, "layer_train_options"])
def test_burnin_update_waits_for_burn_in(switch) -> None:
    """burnin_update=1 with burn_in=2 (GPU only, network_kernels.cu:291): the layer waits while
    1*2 > batch_num, i.e. iteration 0, and iteration 1 applies both gradients; the rate follows
    the burn-in (lr*(batch_num/2)^4)."""
    model = _model(_cfg(TWO_CONVS.format(first="burnin_update=1", second=""), burn_in=2))
    batches = [(_images(2, seed=40 + i), _onehot(2, 3, seed=i)) for i in range(2)]
    expected = _sgd_reference(model, batches, lr=lambda it: 0.1 * ((it + 1) / 2) ** 4, decay=0,
                              waits=lambda n, it: bool(switch) and n.startswith("layers.0.")
                              and it == 0)
    start = _snapshot(model)
    got = _run(_trainer(model, switch), batches)
    for it in range(2):
        for n in start:
            _assert_close(got[it][n] - start[n], expected[it][n] - start[n].double(),
                          what=f"iteration {it} {n}")


@pytest.mark.parametrize("switch", [None, "layer_train_options"])
def test_clip_clamps_the_weights_after_the_update(switch) -> None:
    """clip=0.05 (GPU only, convolutional_kernels.cu:1378-1380): weights clamped to +-clip after
    the update; the biases are not."""
    model = _model(_cfg(TWO_CONVS.format(first="clip=0.05", second="")))
    x, t = _images(2), _onehot(2, 3)
    (expected,) = _sgd_reference(model, [(x, t)], lr=lambda it: 0.1, decay=0,
                                 waits=lambda n, it: False)
    _trainer(model, switch).step(x, t)
    w, b = expected["layers.0.conv.weight"], expected["layers.0.conv.bias"]
    assert w.abs().max() > 0.1 and b.abs().max() > 0.05
    _assert_close(model.get_parameter("layers.0.conv.weight"),
                  w.clamp(-0.05, 0.05) if switch else w, rel=1e-5, what="weights")
    _assert_close(model.get_parameter("layers.0.conv.bias"), b, rel=1e-5, what="biases")
    _assert_close(model.get_parameter("layers.1.conv.weight"), expected["layers.1.conv.weight"],
                  rel=1e-5, what="layer 1 (no clip)")


BN_CONVS = """
[convolutional]
filters=2
size=3
pad=1
batch_normalize=1
activation=leaky

[convolutional]
filters=2
size=3
pad=1
batch_normalize=1
activation=leaky
{option}

[convolutional]
filters=3
size=4
activation=linear

[softmax]
"""


@pytest.mark.parametrize("switch", [None, "layer_train_options"])
def test_train_only_bn_freezes_that_layer_and_every_earlier_one(switch) -> None:
    """train_only_bn=1 on layer 1 (GPU only): set_train_only_bn (parser.c:1306-1337) extends it
    to every earlier layer and their whole update is skipped (network_kernels.cu:292): weights,
    BN scales and biases stay, rolling statistics move, the deltas still flow (layer 2 learns
    exactly as without the option)."""
    x, t = _images(4), _onehot(4, 3)
    plain = _model(_cfg(BN_CONVS.format(option=""), batch=4))
    _trainer(plain).step(x, t)
    model = _model(_cfg(BN_CONVS.format(option="train_only_bn=1"), batch=4))
    start = _snapshot(model)
    rolling = model.layers[0].bn.running_mean.clone()
    _trainer(model, switch).step(x, t)
    for n, p in model.named_parameters():
        if n.startswith("layers.2.") or not switch:
            _assert_close(p, plain.get_parameter(n), rel=1e-6, what=n)
        else:
            assert torch.equal(p, start[n]), n
    assert not torch.equal(model.layers[0].bn.running_mean, rolling)
    _assert_close(model.layers[1].bn.running_var, plain.layers[1].bn.running_var, rel=1e-6,
                  what="rolling variance")
    assert not torch.equal(plain.get_parameter("layers.0.conv.weight"),
                           start["layers.0.conv.weight"])


# == loss_scale ====================================================================================

@flips("loss_scale")
@pytest.mark.parametrize("switch", [None, "loss_scale"])
@pytest.mark.parametrize("head", ["softmax", "cost"])
def test_loss_scale(switch, head) -> None:
    """[net] loss_scale=4 (GPU only): the rate is divided by it and decay multiplied
    (convolutional_kernels.cu:1300, 1343), [softmax] adds 4x its delta (softmax_layer.c:122), so
    a softmax net trains as without it; [cost] is not scaled, so its rate is a quarter."""
    ls, lr, decay, batch = 4.0, 0.1, 0.01, 2
    body = TWO_CONVS.format(first="", second="")
    if head == "cost":
        body = body.replace("[softmax]", "[cost]")
    model = _model(_cfg(body, loss_scale=ls, decay=decay))
    x = _images(2)
    t = _onehot(2, 3) if head == "softmax" else torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.5, -1]])
    P = _ref(model)
    logits = _two_convs(P, x)
    loss = _xent(logits, t) if head == "softmax" else 0.5 * ((t - logits.flatten(1)) ** 2).sum()
    delta = -torch.autograd.grad(loss, logits, retain_graph=True)[0]
    u = _updates(loss, P)
    before = _snapshot(model)
    trainer = _trainer(model, switch)
    trainer.engine.trace = True
    trainer.step(x, t)
    head_scale = ls if switch and head == "softmax" else 1.0
    _assert_close(trainer.engine.traced_deltas[1], head_scale * delta, what="delta into layer 1")
    rate = lr / ls if switch else lr
    for n, p in model.named_parameters():
        g = u[n] * head_scale
        if _decayed(n):
            g = g - decay * batch * (ls if switch else 1) * before[n].double()
        _assert_close(p - before[n], rate / batch * g, what=n)


YOLO_HEAD = """
[convolutional]
filters={filters}
size=1
activation=linear

[{head}]
mask=0
anchors=2,2
classes=1
num=1
delta_normalizer=3
"""


@pytest.mark.parametrize("head,filters,scale", [("yolo", 6, 6.0), ("Gaussian_yolo", 10, 3.0)])
def test_loss_scale_scales_detector_deltas(head, filters, scale) -> None:
    """With the switch, [yolo] adds loss_scale * delta_normalizer times its delta
    (yolo_layer.c:1225), [Gaussian_yolo] delta_normalizer times (gaussian_yolo_layer.c:894)."""
    cfg = _cfg(YOLO_HEAD.format(filters=filters, head=head), size=8, loss_scale=2)
    assert _trainer(darkcfg.build(cfg)).losses[1].backward_scale == 1.0
    assert _trainer(darkcfg.build(cfg), "loss_scale").losses[1].backward_scale == scale


# == batchnorm =====================================================================================

def _darknet_bn_backward(x: Tensor, g: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """backward_batchnorm_layer (batchnorm_layer.c:91-147, 211-221) in float64, as the notes
    write it: unbiased variance, eps outside the sqrt in the main term, 1/N elsewhere."""
    x, g, scale = x.double(), g.double(), scale.double()
    dims, eps = (0, 2, 3), 1e-5
    n = x.numel() // x.shape[1]
    ch = lambda v: v.view(1, -1, 1, 1)  # noqa: E731
    mean = x.mean(dims)
    var = ((x - ch(mean)) ** 2).sum(dims) / (n - 1)
    x_norm = (x - ch(mean)) / ch((var + eps).sqrt())
    scale_updates = (g * x_norm).sum(dims)
    d = g * ch(scale)
    mean_delta = d.sum(dims) * (-1 / (var + eps).sqrt())
    var_delta = (d * (x - ch(mean))).sum(dims) * (-0.5) * (var + eps) ** -1.5
    dx = d / ch(var.sqrt() + eps) + ch(var_delta) * 2 * (x - ch(mean)) / n + ch(mean_delta) / n
    return dx, scale_updates


def test_darknet_batchnorm_backward_is_darknets_formula() -> None:
    """DarknetBatchNormFunction's backward is Darknet's approximation, not the forward's
    gradient: checked in float64 on small maps with a tiny-variance channel (where eps outside
    the sqrt matters) and a normal one (where 1/N vs 1/(N-1) matters); no bias gradient."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 2, 2, generator=g)
    x[:, 0] *= 1e-3
    x.requires_grad_()
    scale = (1 + 0.2 * torch.randn(2, generator=g)).requires_grad_()
    bias = torch.zeros(2, requires_grad=True)
    delta = torch.randn(2, 2, 2, 2, generator=g)
    y, mean, var = DarknetBatchNormFunction.apply(x, scale, bias, False)
    y.backward(delta)
    dx, ds = _darknet_bn_backward(x.detach(), delta, scale.detach())
    _assert_close(x.grad, dx, rel=1e-5, what="input gradient")
    _assert_close(scale.grad, ds, rel=1e-5, what="scale gradient")
    assert bias.grad is None
    _assert_close(var, x.detach().double().var((0, 2, 3), unbiased=True), rel=1e-5,
                  what="unbiased variance")
    exact = torch.autograd.grad(F.batch_norm(x, None, None, scale, bias, training=True), x,
                                delta)[0]
    for c in range(2):  # both of Darknet's departures are visible
        _assert_differs(x.grad[:, c], exact[:, c], rel=1e-2, what=f"channel {c}")


ONE_BN_CONV = """
[convolutional]
filters=2
size=3
pad=1
batch_normalize=1
activation=leaky

[convolutional]
filters=3
size=4
activation=linear

[softmax]
"""


def _unbiased_bn_conv(P: Params, i: int, x: Tensor) -> Tensor:
    """Darknet's CPU BN forward (blas.c:269-292): normalised with the unbiased variance."""
    y = F.conv2d(x, P[f"layers.{i}.conv.weight"], padding=1)
    mean, var = y.mean((0, 2, 3), keepdim=True), y.var((0, 2, 3), unbiased=True, keepdim=True)
    ch = lambda v: v.view(1, -1, 1, 1)  # noqa: E731
    y = (y - mean) / (var + 1e-5).sqrt() * ch(P[f"layers.{i}.bn.weight"]) \
        + ch(P[f"layers.{i}.bn.bias"])
    return F.leaky_relu(y, 0.1)


@flips("batchnorm")
@pytest.mark.parametrize("switch", [None, "batchnorm"])
def test_batchnorm_cudnn_is_autograd_of_torch_batch_norm(switch) -> None:
    """batchnorm="cudnn" (batchnorm_layer.c:296-315, 374-396): the update is the autograd
    gradient of F.batch_norm's training forward (biased variance), the BN biases learn, and the
    rolling statistics move .99/.01 with the unbiased variance. "darknet" (the CPU): the forward
    normalises with the unbiased variance, the backward is Darknet's approximation (the conv
    weights' update is near the gradient but not it), no bias gradient, rolling .9/.1."""
    batch = 4
    model = _model(_cfg(ONE_BN_CONV, batch=batch))
    x, t = _images(batch), _onehot(batch, 3)
    P = _ref(model)
    pre = F.conv2d(x.double(), P["layers.0.conv.weight"], padding=1).detach()
    hidden = _conv(P, 0, x.double(), pad=1, bn=True, leaky=True) if switch \
        else _unbiased_bn_conv(P, 0, x.double())
    u = _updates(_xent(_conv(P, 1, hidden), t), P)
    bn = model.layers[0].bn
    keep = 0.99 if switch else 0.9
    stats = pre.mean((0, 2, 3)), pre.var((0, 2, 3), unbiased=True)
    rolling = [keep * r.double() + (1 - keep) * s
               for r, s in zip((bn.running_mean, bn.running_var), stats)]
    before = _snapshot(model)
    _trainer(model, switch).step(x, t)
    _assert_close(bn.running_mean, rolling[0], rel=1e-5, what="rolling mean")
    _assert_close(bn.running_var, rolling[1], rel=1e-5, what="rolling variance")
    for n, p in model.named_parameters():
        update, expected = p - before[n], u[n] * 0.1 / batch
        if n == "layers.0.bn.bias" and not switch:
            assert torch.equal(update, torch.zeros_like(p)), n
        elif n == "layers.0.conv.weight" and not switch:
            _assert_close(update, expected, rel=0.1, what=n)
            _assert_differs(update, expected, rel=1e-3, what=n)
        else:
            _assert_close(update, expected, what=n)


# == the full GPU semantics is autograd SGD ========================================================

CLASSIFIER = """
[convolutional]
filters=4
size=3
pad=1
batch_normalize=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=4
size=3
pad=1
batch_normalize=1
activation=leaky

[convolutional]
filters=4
size=1
batch_normalize=1
activation=leaky

[shortcut]
from=-3
activation=linear

[route]
layers=-1,-4

[convolutional]
filters=4
size=1
batch_normalize=1
activation=leaky

[route]
layers=-1,-5

[convolutional]
filters=5
size=1
activation=linear

[avgpool]

[softmax]
"""


def _classifier(P: Params, x: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
    """CLASSIFIER in float64: logits and the BN convs' inputs (for the rolling statistics)."""
    pre: dict[int, Tensor] = {}

    def bn_conv(i: int, v: Tensor, pad: int) -> Tensor:
        pre[i] = F.conv2d(v, P[f"layers.{i}.conv.weight"], padding=pad).detach()
        return _conv(P, i, v, pad=pad, bn=True, leaky=True)

    l0 = bn_conv(0, x.double(), 1)
    l1 = F.max_pool2d(l0, 2, 2)
    l2 = bn_conv(2, l1, 1)
    l3 = bn_conv(3, l2, 0)
    l4 = l3 + l1
    l5 = torch.cat([l4, l1], 1)
    l6 = bn_conv(6, l5, 0)
    l7 = torch.cat([l6, l2], 1)
    l8 = _conv(P, 8, l7)
    return l8.mean((2, 3)), pre


@pytest.mark.parametrize("subdivisions", [1, 2])
def test_gpu_semantics_is_autograd_sgd(subdivisions: int) -> None:
    """With every switch at the GPU build's value, one iteration on a classifier with routes,
    a shortcut, maxpool and BN convs (momentum 0, decay 0) is plain autograd SGD on the
    summed cross-entropy, with cuDNN's BN per mini-batch: w += rate/batch * -grad, gradients
    summed over the subdivisions, rolling statistics r = .99 r + .01 stat per subdivision."""
    batch, lr = 4, 0.1
    model = _model(_cfg(CLASSIFIER, batch=batch, subdivisions=subdivisions, size=8, channels=3))
    x, t = _images(batch, c=3, size=8), _onehot(batch, 5)
    P = _ref(model)
    expected = {n: torch.zeros_like(p) for n, p in P.items()}
    rolling = {i: [model.layers[i].bn.running_mean.double(),
                   model.layers[i].bn.running_var.double()] for i in (0, 2, 3, 6)}
    mb = batch // subdivisions
    for s in range(subdivisions):
        logits, pre = _classifier(P, x[s * mb:(s + 1) * mb])
        for n, u in _updates(_xent(logits, t[s * mb:(s + 1) * mb]), P).items():
            expected[n] += u * lr / batch
        for i, v in pre.items():
            stats = v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=True)
            rolling[i] = [0.99 * r + 0.01 * st for r, st in zip(rolling[i], stats)]
    before = _snapshot(model)
    trainer = Trainer(model, darknet="gpu")
    assert trainer.semantics == GPU
    trainer.step(x, t)
    for n, p in model.named_parameters():
        assert float(expected[n].abs().max()) > 0, n  # every parameter learns on the GPU
        _assert_close(p - before[n], expected[n], rel=1e-4, what=n)
    for i, (mean, var) in rolling.items():
        _assert_close(model.layers[i].bn.running_mean, mean, rel=1e-5, what=f"layer {i} mean")
        _assert_close(model.layers[i].bn.running_var, var, rel=1e-5, what=f"layer {i} var")


def test_cpu_semantics_is_not_autograd_sgd() -> None:
    """The same classifier under the CPU build: BN biases stay, and the skip paths lose their
    gradient, so the comparison above can fail."""
    model = _model(_cfg(CLASSIFIER, batch=4, size=8, channels=3))
    x, t = _images(4, c=3, size=8), _onehot(4, 5)
    P = _ref(model)
    u = _updates(_xent(_classifier(P, x)[0], t), P)
    before = _snapshot(model)
    Trainer(model, darknet="cpu").step(x, t)
    assert torch.equal(model.get_parameter("layers.0.bn.bias"), before["layers.0.bn.bias"])
    w = "layers.0.conv.weight"
    _assert_differs(model.get_parameter(w) - before[w], u[w] * 0.1 / 4, rel=1e-2, what=w)


# == the switch set itself =========================================================================

SWITCHES = [f.name for f in fields(Semantics) if f.name != "name"]


def test_cpu_and_gpu_differ_in_every_switch() -> None:
    assert CPU.differences(GPU) == SWITCHES
    assert GPU.differences(CPU) == SWITCHES
    assert CPU.differences(CPU) == []


def test_every_switch_has_a_test_of_its_own() -> None:
    assert sorted(TESTED) == sorted(SWITCHES)


@pytest.mark.parametrize("name", SWITCHES)
def test_one_keyword_flips_one_switch(name: str) -> None:
    model = darkcfg.build(_cfg(TWO_CONVS.format(first="", second="")))
    trainer = Trainer(model, darknet="cpu", **{name: getattr(GPU, name)})
    assert trainer.semantics.differences(CPU) == [name]
    assert Trainer(model, darknet="gpu", **{name: getattr(CPU, name)}).semantics \
        .differences(GPU) == [name]


def test_unknown_build_and_switch_are_refused() -> None:
    model = darkcfg.build(_cfg(TWO_CONVS.format(first="", second="")))
    with pytest.raises(ValueError, match=r"^darknet='tpu': expected 'cpu' or 'gpu'$"):
        Trainer(model, darknet="tpu")
    with pytest.raises(TypeError, match=r"^unknown Darknet semantics switch\(es\): cudnn, zero$"):
        Trainer(model, darknet="cpu", zero=True, cudnn=True)
    with pytest.raises(ValueError, match=r"^unknown batch norm kind 'exact'$"):
        Trainer(model, darknet="cpu", batchnorm="exact")
