"""Recurrent sections ([rnn], [gru], [lstm], [crnn], [conv_lstm], [history]): state across calls,
reset, batches, weights round trip, errors, Darknet details the micro oracle does not isolate, and
the public cfgs that use them."""

from __future__ import annotations

import warnings

import pytest
import torch

import darkcfg
from darkcfg.layers.recurrent import _constrain, _fix_nan_and_inf
from oracle import SHARED, needs_shared

FLAT_NET = "[net]\ninputs=8\n\n"
IMAGE_NET = "[net]\nwidth=6\nheight=5\nchannels=3\n\n"

SECTIONS = {
    "rnn": FLAT_NET + "[rnn]\nbatch_normalize=1\noutput=6\nhidden=5\nactivation=leaky\n",
    "rnn_shortcut": FLAT_NET + "[rnn]\noutput=6\nhidden=5\nactivation=leaky\nshortcut=1\n",
    "gru": FLAT_NET + "[gru]\nbatch_normalize=1\noutput=6\n",
    "lstm": FLAT_NET + "[lstm]\nbatch_normalize=1\noutput=6\n",
    "crnn": IMAGE_NET + "[crnn]\nbatch_normalize=1\nsize=3\npad=1\noutput=4\nhidden=5\n"
                        "activation=leaky\n",
    "conv_lstm": IMAGE_NET + "[conv_lstm]\nbatch_normalize=1\nsize=3\npad=1\noutput=4\n",
    "conv_lstm_peephole": IMAGE_NET + "[conv_lstm]\nsize=3\npad=1\noutput=4\npeephole=1\n"
                                      "activation=leaky\n",
}
STATEFUL = list(SECTIONS)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and plausible BN statistics, so every sub-block matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() > 1:  # weights: unit gain per output, whatever the fan-in
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)


def _model(name: str) -> darkcfg.DarknetModel:
    model = darkcfg.build(SECTIONS[name])
    _randomize(model)
    return model


def _inputs(model: darkcfg.DarknetModel, steps: int, batch: int = 1,
            seed: int = 1) -> list[torch.Tensor]:
    s = model.network.net.input_shape
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, s.c, s.h, s.w, generator=g) for _ in range(steps)]


def _run(model: darkcfg.DarknetModel, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(x)[0] for x in xs]


# --- state --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", STATEFUL)
def test_state_persists_across_calls(name: str) -> None:
    model = _model(name)
    x = _inputs(model, 1)[0]
    first, second = _run(model, [x, x])
    assert not torch.allclose(first, second), "same input, new state: the output must change"
    assert model.layers[0].state is not None


@pytest.mark.parametrize("name", STATEFUL)
def test_reset_state_restores_the_first_step_output(name: str) -> None:
    model = _model(name)
    xs = _inputs(model, 3)
    before = _run(model, xs)
    model.reset_state()
    assert model.layers[0].state is None
    after = _run(model, xs)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", STATEFUL)
def test_a_batch_runs_independent_sequences(name: str) -> None:
    model = _model(name)
    xs = _inputs(model, 3, batch=2)
    together = _run(model, xs)
    for b in range(2):
        model.reset_state()
        alone = _run(model, [x[b:b + 1] for x in xs])
        for t, a in zip(together, alone):
            torch.testing.assert_close(t[b:b + 1], a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["rnn", "conv_lstm"])
def test_another_batch_size_needs_reset_state(name: str) -> None:
    model = _model(name)
    x1, = _inputs(model, 1, batch=1)
    x2, = _inputs(model, 1, batch=2)
    _run(model, [x1])
    with pytest.raises(ValueError, match=r"layer 0 \(\[.*\] at line \d+\).*reset_state"):
        _run(model, [x2])
    model.reset_state()
    assert _run(model, [x2])[0].shape[0] == 2


def test_another_image_size_needs_reset_state() -> None:
    model = _model("crnn")
    _run(model, [torch.randn(1, 3, 5, 6)])
    with pytest.raises(ValueError, match="reset_state"):
        _run(model, [torch.randn(1, 3, 7, 6)])
    model.reset_state()
    assert _run(model, [torch.randn(1, 3, 7, 6)])[0].shape == (1, 4, 7, 6)


def test_state_is_not_a_weight() -> None:
    model = _model("lstm")
    keys = set(model.state_dict())
    _run(model, _inputs(model, 2))
    assert set(model.state_dict()) == keys
    assert not any("state" in k.split(".")[-1] for k in keys)


def test_state_follows_the_input_dtype() -> None:
    model = _model("conv_lstm")
    x, = _inputs(model, 1)
    _run(model, [x])
    model.double()
    y = _run(model, [x.double()])[0]
    assert y.dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in model.layers[0].state)


def test_training_steps_backpropagate_within_a_call() -> None:
    # The stored state is detached: a second step's backward must not reach into the first graph.
    model = _model("lstm").train()
    xs = _inputs(model, 2, batch=3)
    for x in xs:
        loss = model(x)[0].square().sum()
        loss.backward()
    assert model.layers[0].uf.fc.weight.grad is not None


# --- Darknet's forward details ------------------------------------------------------------------

def test_rnn_shortcut_state_accumulates() -> None:
    """Darknet's inference never advances l.state, so with shortcut=1 it copies the state onto
    itself and then adds: state_t = state_{t-1} + input_layer(x) + self_layer(state_{t-1})."""
    model = _model("rnn_shortcut")
    rnn = model.layers[0]
    xs = _inputs(model, 3)
    outs = _run(model, xs)
    state = torch.zeros(1, 5, 1, 1)
    with torch.no_grad():
        for x, out in zip(xs, outs):
            state = state + rnn.input_layer(x) + rnn.self_layer(state)
            torch.testing.assert_close(out, rnn.output_layer(state))


def test_gru_candidate_uses_logistic() -> None:
    # AlexeyAB's gru_layer.c takes tanh only #ifdef USET, which it never defines.
    model = _model("gru")
    gru = model.layers[0]
    x, = _inputs(model, 1)
    out = _run(model, [x])[0]
    with torch.no_grad():
        z = torch.sigmoid(gru.input_z_layer(x) + gru.state_z_layer(torch.zeros(1, 6, 1, 1)))
        cand = torch.sigmoid(gru.input_h_layer(x) + gru.state_h_layer(torch.zeros(1, 6, 1, 1)))
    torch.testing.assert_close(out, (1 - z) * cand)


def test_conv_lstm_constrain_turns_nan_into_the_negative_limit() -> None:
    c = torch.tensor([40.0, -40.0, float("nan"), 3.0, float("inf")])
    assert _constrain(c, 32).tolist() == [32.0, -32.0, -32.0, 3.0, 32.0]


def test_fix_nan_and_inf_uses_the_flat_index() -> None:
    t = torch.tensor([[float("nan"), 1.0], [float("-inf"), 2.0]])
    out = _fix_nan_and_inf(t)
    assert out[0, 0] == float("inf")  # Darknet's 1.0f / 0
    assert out[1, 0] == pytest.approx(0.5) and out[0, 1] == 1 and out[1, 1] == 2


def test_conv_lstm_cell_is_clamped_to_state_constrain() -> None:
    text = IMAGE_NET + "[conv_lstm]\nsize=1\noutput=2\nstate_constrain=1\n"
    model = darkcfg.build(text)
    lstm = model.layers[0]
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()
        for name in ("uf", "ui", "ug"):  # f = i = g ≈ 1: c grows by ~1 per step
            getattr(lstm, name).conv.bias.fill_(20.0)
    x, = _inputs(model, 1)
    _run(model, [x, x, x])
    h, c = lstm.state
    assert torch.allclose(c, torch.ones_like(c))  # 1 + 1 = 2, clamped back to 1 each step
    # h is computed from the cell before the clamp (o = σ(0) = 0.5).
    assert torch.allclose(h, 0.5 * torch.tanh(torch.full_like(c, 2.0)))


def test_history_copies_each_image_into_its_first_channels() -> None:
    model = darkcfg.build(IMAGE_NET + "[history]\nhistory_size=3\n")
    x = torch.randn(2, 3, 5, 6)
    y = _run(model, [x, x])[1]
    assert y.shape == (2, 9, 5, 6)
    assert torch.equal(y[:, :3], x) and not y[:, 3:].any()


# --- weights and keys ---------------------------------------------------------------------------

def test_state_dict_keys_follow_darknet_sub_layer_names() -> None:
    keys = {name: list(_model(name).state_dict()) for name in ("rnn", "gru", "crnn",
                                                               "conv_lstm_peephole")}
    block = "layers.0.input_layer"
    assert keys["rnn"][:5] == [f"{block}.fc.weight", f"{block}.bn.weight", f"{block}.bn.bias",
                               f"{block}.bn.running_mean", f"{block}.bn.running_var"]
    assert "layers.0.state_h_layer.fc.weight" in keys["gru"]
    assert "layers.0.output_layer.conv.weight" in keys["crnn"]
    assert [k for k in keys["conv_lstm_peephole"] if k.endswith("conv.weight")] == \
        [f"layers.0.{b}.conv.weight" for b in ("vf", "vi", "vo", "wf", "wi", "wg", "wo",
                                               "uf", "ui", "ug", "uo")]


@pytest.mark.parametrize("name", STATEFUL)
def test_weights_round_trip_is_byte_identical(name: str, tmp_path) -> None:
    model = _model(name)
    first = tmp_path / "a.weights"
    model.save_darknet_weights(first)
    assert first.stat().st_size == 20 + 4 * model.network.weight_count
    again = darkcfg.build(SECTIONS[name])
    again.load_darknet_weights(first)
    second = tmp_path / "b.weights"
    again.save_darknet_weights(second)
    assert first.read_bytes() == second.read_bytes()
    mine, theirs = model.state_dict(), again.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    xs = _inputs(model, 2)
    for a, b in zip(_run(model, xs), _run(again, xs)):  # same values; buffer alignment may differ
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_dontload_skips_the_whole_recurrent_layer() -> None:
    net = darkcfg.parse(FLAT_NET + "[lstm]\noutput=6\ndontload=1\n\n[connected]\noutput=2\n")
    assert net[0].segments == () and net.weight_count == 2 + 12


def test_bflops_of_conv_recurrent_layers() -> None:
    # Darknet sums the sub-convs (2·(c/g)·n·k²·h·w each); conv_lstm adds 9 (12 with peephole)
    # flops per output value (make_conv_lstm_layer).
    hw = 5 * 6
    crnn = darkcfg.parse(SECTIONS["crnn"])[0]
    assert crnn.bflops == pytest.approx(2 * 9 * hw * (3 * 5 + 5 * 5 + 5 * 4) / 1e9, rel=1e-6)
    peep = darkcfg.parse(SECTIONS["conv_lstm_peephole"])[0]
    convs = 4 * 3 * 4 + 7 * 4 * 4
    assert peep.bflops == pytest.approx((2 * 9 * hw * convs + 12 * 4 * hw) / 1e9, rel=1e-6)
    assert darkcfg.parse(SECTIONS["lstm"])[0].bflops == 0


# --- errors and warnings ------------------------------------------------------------------------

def _error(text: str) -> darkcfg.CfgError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        with pytest.raises(darkcfg.CfgError) as info:
            darkcfg.parse(text)
    return info.value


def test_conv_lstm_bottleneck_is_rejected_with_the_reason() -> None:
    err = _error(IMAGE_NET + "[conv_lstm]\nsize=3\npad=1\noutput=4\nbottleneck=1\n")
    assert "bottleneck=1" in err.msg and "CPU forward" in err.msg
    assert err.lineno == 10 and err.section == "conv_lstm"


@pytest.mark.parametrize("section", ["crnn", "conv_lstm"])
def test_a_conv_recurrent_layer_must_keep_the_size(section: str) -> None:
    err = _error(IMAGE_NET + f"[{section}]\nsize=3\nstride=2\npad=1\noutput=4\nhidden=2\n")
    assert "must keep the size" in err.msg and "6x5 to 3x3" in err.msg


def test_groups_must_divide_every_sub_conv() -> None:
    err = _error(IMAGE_NET + "[crnn]\nsize=1\ngroups=3\noutput=3\nhidden=4\n")
    assert "groups=3 does not divide the 4 hidden channels" in err.msg


def test_xnor_recurrent_layers_are_not_supported_yet() -> None:
    err = _error(IMAGE_NET + "[crnn]\nsize=1\nxnor=1\n")
    assert "not supported yet" in err.msg


def test_conv_lstm_warns_about_options_the_cpu_forward_ignores() -> None:
    text = IMAGE_NET + "[conv_lstm]\nsize=1\noutput=2\nlstm_activation=relu\nshortcut=1\n"
    with pytest.warns(darkcfg.CfgWarning) as record:
        darkcfg.parse(text)
    messages = " ".join(str(w.message) for w in record)
    assert "always uses tanh" in messages and "shortcut=1" in messages


# --- public cfgs ----------------------------------------------------------------------------------

CORPUS = ["rnn.cfg", "gru.cfg", "rnn.train.cfg", "lstm.train.cfg", "crnn.train.cfg",
          "yolov3-tiny_occlusion_track.cfg", "extra/pjreddie__darknet/cfg/rnn.cfg",
          "extra/pjreddie__darknet/cfg/gru.cfg", "extra/pjreddie__darknet/cfg/rnn.train.cfg"]


def _corpus_text(rel: str) -> str:
    return (SHARED / "darknet-cfgs" / rel).read_text()


@needs_shared
@pytest.mark.parametrize("rel", CORPUS)
def test_public_cfgs_with_recurrent_sections_run_several_steps(rel: str) -> None:
    overrides = {"width": 64, "height": 64} if "yolo" in rel else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        model = darkcfg.build(_corpus_text(rel), **overrides)
    kinds = {"rnn", "gru", "lstm", "crnn", "conv_lstm", "history"}
    recurrent = [l for l in model.network if l.type in kinds]
    assert recurrent
    _randomize(model)
    x, = _inputs(model, 1, batch=2)
    layer = model.layers[recurrent[0].index]
    states = []
    for _ in range(3):
        outs = _run(model, [x])
        assert all(torch.isfinite(o).all() for o in outs)
        states.append(layer.state[0].clone())
    assert states[0].shape[0] == 2
    assert not torch.equal(states[1], states[2]), "the same input must move the state on"
