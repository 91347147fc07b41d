"""torch builders: recurrent family ([rnn], [gru], [lstm], [crnn], [conv_lstm], [history]).

Each module runs ONE time step per forward call, as Darknet's inference does (time_steps is 1
there), and keeps its hidden state until ``reset_state()`` (``DarknetModel.reset_state()``).

State rules (documented public behaviour):

* The state starts at zeros and holds one entry per batch element; a forward with another batch
  size (or, for conv layers, another H x W) than the stored state raises ``ValueError``: call
  ``model.reset_state()`` before starting sequences of a different shape.
* The stored state is detached from autograd: gradients flow within one call, never across calls.
* It follows the input's device and dtype (converted on use), and it is not part of the
  state_dict (it is not a weight).

Sub-modules are named after Darknet's sub-layers (``input_layer``, ``wf``, ``state_z_layer`` ...),
each a core :class:`Connected` or :class:`Convolutional` block, so keys read
``layers.3.wf.conv.weight``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graph import LayerSpec
from ..sections.core import ConnectedOptions
from ..sections.recurrent import (CRNN_BLOCKS, GRU_BLOCKS, LSTM_BLOCKS, ConvLstmOptions,
                                  CrnnOptions, GruOptions, HistoryOptions, LstmOptions, RnnOptions)
from ._common import builds
from .core import Connected, Convolutional

__all__ = ["RecurrentState", "RNN", "GRU", "LSTM", "CRNN", "ConvLSTM", "History"]


class RecurrentState(nn.Module):
    """Base for layers with a hidden state kept across forward calls (see the module docstring)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.where = f"layer {spec.index} ([{spec.header}] at line {spec.loc.line})"
        self._state: tuple[Tensor, ...] | None = None

    def reset_state(self) -> None:
        """Forget the hidden state: the next forward starts from zeros, like a fresh Darknet net."""
        self._state = None

    @property
    def state(self) -> tuple[Tensor, ...] | None:
        """The stored state tensors (for inspection), or None before the first step."""
        return self._state

    def _load(self, x: Tensor, shapes: tuple[tuple[int, ...], ...]) -> tuple[Tensor, ...]:
        """The state for input `x`: zeros at first, else the stored tensors, shape-checked."""
        n = x.shape[0]
        if self._state is None:
            return tuple(x.new_zeros((n, *s)) for s in shapes)
        have = self._state[0].shape
        if have != (n, *shapes[0]):
            raise ValueError(
                f"{self.where} holds a recurrent state of shape {tuple(have)} but the input needs "
                f"{(n, *shapes[0])} (batch size or size changed): call model.reset_state() first")
        state = tuple(t.to(x.device, x.dtype) for t in self._state)
        if any(t.is_inference() for t in state) and not torch.is_inference_mode_enabled():
            state = tuple(t.clone() for t in state)
        return state

    def _store(self, *state: Tensor) -> None:
        self._state = tuple(t.detach() for t in state)


def _add(*parts: Tensor | None) -> Tensor:
    """Darknet's copy_cpu + axpy_cpu chain: a left-to-right float sum, skipping absent parts."""
    out = None
    for p in parts:
        if p is not None:
            out = p if out is None else out + p
    assert out is not None
    return out


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1, 1, 1)


# --- [rnn] ------------------------------------------------------------------------------------

class _Recurrence(RecurrentState):
    """[rnn] and [crnn]: state = [state +] input_layer(x) + self_layer(state), output =
    output_layer(state). Subclasses make the three blocks and say the state's shape.

    With shortcut=1 the state accumulates across calls: Darknet's inference does not advance
    l.state, so it copies the old state onto itself before adding (rnn_layer.c forward)."""

    def _state_shape(self, x: Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        (state,) = self._load(x, (self._state_shape(x),))
        a = self.input_layer(x)
        b = self.self_layer(state)
        new = _add(state if self.opts.shortcut else None, a, b)
        self._store(new)
        return self.output_layer(new)

    def extra_repr(self) -> str:
        o = self.opts
        return f"hidden={o.hidden}, outputs={o.outputs}, shortcut={int(o.shortcut)}"


class RNN(_Recurrence):
    """[rnn]: the three blocks are connected layers; the state is (hidden, 1, 1)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        o: RnnOptions = spec.options
        self.opts = o
        self.input_layer = Connected(o.inputs, o.block("input_layer"))
        self.self_layer = Connected(o.hidden, o.block("self_layer"))
        self.output_layer = Connected(o.hidden, o.block("output_layer"))

    def _state_shape(self, x: Tensor) -> tuple[int, ...]:
        return (self.opts.hidden, 1, 1)


@builds("rnn")
def build_rnn(spec: LayerSpec) -> nn.Module:
    return RNN(spec)


# --- [gru] ------------------------------------------------------------------------------------

class GRU(RecurrentState):
    """z = σ(Uz x + Wz h), r = σ(Ur x + Wr h), ĥ = σ(Uh x + Wh (r·h)), h' = z·h + (1−z)·ĥ.

    The candidate ĥ uses the LOGISTIC function, not tanh: gru_layer.c picks tanh only `#ifdef
    USET`, which AlexeyAB's build does not define (checked against Darknet's outputs). The
    sub-layers are linear connected blocks (optionally with BN); the output is h'."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        o: GruOptions = spec.options
        self.opts = o
        for name in GRU_BLOCKS:
            inputs = o.inputs if name.startswith("input") else o.outputs
            self.add_module(name, Connected(inputs, ConnectedOptions(o.outputs, o.batch_normalize,
                                                                     "linear")))

    def forward(self, x: Tensor) -> Tensor:
        (h,) = self._load(x, ((self.opts.outputs, 1, 1),))
        z = torch.sigmoid(_add(self.input_z_layer(x), self.state_z_layer(h)))
        r = torch.sigmoid(_add(self.input_r_layer(x), self.state_r_layer(h)))
        cand = torch.sigmoid(_add(self.input_h_layer(x), self.state_h_layer(h * r)))
        out = z * h + (1 - z) * cand  # weighted_sum_cpu(state, h, z)
        self._store(out)
        return out

    def extra_repr(self) -> str:
        return f"outputs={self.opts.outputs}"


@builds("gru")
def build_gru(spec: LayerSpec) -> nn.Module:
    return GRU(spec)


# --- [lstm] -----------------------------------------------------------------------------------

class LSTM(RecurrentState):
    """f, i, o = σ(W h + U x), g = tanh(Wg h + Ug x), c' = f·c + i·g, h' = o·tanh(c').

    W* read the previous output h, U* the input; all are linear connected blocks. Output is h'."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        o: LstmOptions = spec.options
        self.opts = o
        for name in LSTM_BLOCKS:
            inputs = o.outputs if name[0] == "w" else o.inputs
            self.add_module(name, Connected(inputs, ConnectedOptions(o.outputs, o.batch_normalize,
                                                                     "linear")))

    def forward(self, x: Tensor) -> Tensor:
        n = self.opts.outputs
        h, c = self._load(x, ((n, 1, 1), (n, 1, 1)))
        f = torch.sigmoid(_add(self.wf(h), self.uf(x)))
        i = torch.sigmoid(_add(self.wi(h), self.ui(x)))
        g = torch.tanh(_add(self.wg(h), self.ug(x)))
        o = torch.sigmoid(_add(self.wo(h), self.uo(x)))
        c = c * f + i * g
        h = torch.tanh(c) * o
        self._store(h, c)
        return h

    def extra_repr(self) -> str:
        return f"outputs={self.opts.outputs}"


@builds("lstm")
def build_lstm(spec: LayerSpec) -> nn.Module:
    return LSTM(spec)


# --- [crnn] -----------------------------------------------------------------------------------

class CRNN(_Recurrence):
    """[crnn]: the three blocks are convolutions; the state has the input's height and width."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        o: CrnnOptions = spec.options
        self.opts = o
        for name in CRNN_BLOCKS:
            in_c, co = o.block(name)
            self.add_module(name, Convolutional(in_c, co))

    def _state_shape(self, x: Tensor) -> tuple[int, ...]:
        return (self.opts.hidden, *x.shape[2:])


@builds("crnn")
def build_crnn(spec: LayerSpec) -> nn.Module:
    return CRNN(spec)


# --- [conv_lstm] ------------------------------------------------------------------------------

def _constrain(c: Tensor, limit: int) -> Tensor:
    """constrain_cpu: fminf(L, fmaxf(-L, c)); fmaxf turns NaN into -L."""
    return torch.where(torch.isnan(c), c.new_tensor(-float(limit)), c.clamp(-limit, limit))


def _fix_nan_and_inf(t: Tensor) -> Tensor:
    """fix_nan_and_inf_cpu: a non-finite value at flat index i (over the batch) becomes 1/i."""
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return t
    idx = torch.arange(t.numel(), device=t.device, dtype=t.dtype).reshape(t.shape)
    return torch.where(bad, 1.0 / idx, t)


class ConvLSTM(RecurrentState):
    """Darknet's CPU conv_lstm step (conv_lstm_layer.c forward):

    f = σ(wf h + uf x [+ vf c]), i = σ(wi h + ui x [+ vi c]), g = tanh(wg h + ug x),
    c' = f·c + i·g, o = σ(wo h + uo x [+ vo c']), h' = o·tanh(c');
    then c' is clamped to ±state_constrain and non-finite values are replaced as Darknet does.
    Each w/u/v block is a conv with the section's activation and optional BN. Output is h'."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        o: ConvLstmOptions = spec.options
        self.opts = o
        for name in o.blocks:
            in_c, co = o.block(name)
            self.add_module(name, Convolutional(in_c, co))

    def forward(self, x: Tensor) -> Tensor:
        o = self.opts
        shape = (o.outputs, *x.shape[2:])
        h, c = self._load(x, (shape, shape))
        peep = o.peephole
        f = torch.sigmoid(_add(self.wf(h), self.uf(x), self.vf(c) if peep else None))
        i = torch.sigmoid(_add(self.wi(h), self.ui(x), self.vi(c) if peep else None))
        g = torch.tanh(_add(self.wg(h), self.ug(x)))
        c = c * f + i * g
        out = torch.sigmoid(_add(self.wo(h), self.uo(x), self.vo(c) if peep else None))
        h = torch.tanh(c) * out
        if o.state_constrain:
            c = _constrain(c, o.state_constrain)
        c = _fix_nan_and_inf(c)
        h = _fix_nan_and_inf(h)
        self._store(h, c)
        return h

    def extra_repr(self) -> str:
        o = self.opts
        return (f"outputs={o.outputs}, peephole={int(o.peephole)}, "
                f"state_constrain={o.state_constrain}")


@builds("conv_lstm")
def build_conv_lstm(spec: LayerSpec) -> nn.Module:
    return ConvLSTM(spec)


# --- [history] --------------------------------------------------------------------------------

class History(nn.Module):
    """Inference (time_steps=1): the input in the first C channels, zeros in the other
    (history_size-1)·C. Stateless in inference: Darknet only shifts history when training.

    Per image; Darknet's own flat copy would pack the images of a batch > 1 into image 0's channel
    blocks, which no single-image use shows (its inference batch is 1)."""

    def __init__(self, o: HistoryOptions) -> None:
        super().__init__()
        self.history_size = o.history_size

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        rest = x.new_zeros((n, c * (self.history_size - 1), h, w))
        return torch.cat((x, rest), 1)

    def extra_repr(self) -> str:
        return f"history_size={self.history_size}"


@builds("history")
def build_history(spec: LayerSpec) -> nn.Module:
    return History(spec.options)
