"""One Darknet training pass over a mini-batch: forward in train mode, then Darknet's backward.

Darknet keeps one delta buffer per layer (`l.delta`) and its backward walks the layers from last
to first, each layer writing into the deltas of the layers it reads, by its own rule: some add,
some assign, a conv's backward on the CPU build zero-fills its input's delta first (so what later
routes and shortcuts put there is lost), and only layers with `l.train` have their delta zeroed
before each forward (so others accumulate stale deltas over subdivisions and iterations). The
notes (DARKNET_TRAINING_NOTES.md section 5) list the rules; :class:`Semantics` names the
differences between the CPU and GPU builds.

This engine reproduces that. Each layer's forward runs under autograd on detached copies of its
inputs, so one layer's backward (torch's gradient of that layer's own forward, with Darknet's BN
backward installed) gives the contribution to each input separately, which is then written into
the input's persistent delta buffer by the layer's rule. Heads and cost layers do not use autograd:
their loss (darkcfg.train.losses) writes the layer's delta, which is added to the input's delta.
Parameter gradients accumulate in `.grad` as Darknet's `*_updates` do (with the opposite sign).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..graph import NETWORK_INPUT, LayerSpec
from ..layers._common import TRAIN_BATCHNORM
from .batchnorm import Roll, roll_now, train_batchnorm
from .config import LayerTrainOptions
from .losses import Loss, LossContext, Targets
from .semantics import Semantics

__all__ = ["TRAIN_LAYER_TYPES", "input_delta_modes", "Engine"]

# Layer types whose constructor sets l.train (Darknet: make_convolutional_layer,
# make_batchnorm_layer, make_maxpool_layer, make_crnn_layer, make_conv_lstm_layer,
# make_shortcut_layer, make_history_layer): their delta is zeroed before each forward and only
# their parameters are updated (update_network skips layers with l.train == 0).
TRAIN_LAYER_TYPES = frozenset({"convolutional", "batchnorm", "maxpool", "crnn", "conv_lstm",
                               "shortcut", "history"})

ADD, ASSIGN = "add", "assign"

# How a layer's backward writes into the delta of each input (notes section 5): reorg and
# reorg3d permute the delta back (assign), [activation] and [batchnorm] copy it, [sam] adds into
# the previous layer's delta but assigns its `from` layer's. Every other layer adds.
_ASSIGNING = {"reorg": (ASSIGN,), "reorg3d": (ASSIGN,), "activation": (ASSIGN,),
              "batchnorm": (ASSIGN,), "sam": (ADD, ASSIGN)}


def input_delta_modes(spec: LayerSpec, semantics: Semantics) -> tuple[str, ...]:
    if spec.type == "convolutional":
        return (ADD if semantics.conv_input_delta_adds else ASSIGN,)
    if spec.type == "sam" and semantics.sam_from_delta_adds:
        return (ADD, ADD)
    modes = _ASSIGNING.get(spec.type, (ADD,))
    return tuple(modes[min(k, len(modes) - 1)] for k in range(len(spec.inputs)))


@dataclass
class _Record:
    """What one layer's forward left for its backward."""

    leaves: list[Tensor | None]  # the detached inputs that need a gradient (None: no delta there)
    output: Tensor
    inner: Tensor | None = None  # where Darknet's in-place delta ends up (see _in_place_point)


def _in_place_point(module: nn.Module) -> tuple[nn.Module, bool] | None:
    """Darknet's backward transforms a layer's own delta in place: the activation gradient
    (gradient_array) and, in [connected], the BN backward. A delta that is never zeroed then
    carries the transformed values into the next pass. That value is the gradient at the linear
    part's output (`fc`/`conv`, True: its output) or else at the activation's input (False)."""
    for name in ("fc", "conv"):
        sub = getattr(module, name, None)
        if isinstance(sub, nn.Module):
            return sub, True
    act = getattr(module, "act", None)
    return (act, False) if isinstance(act, nn.Module) else None


class Engine:
    """Forward and Darknet's backward of one mini-batch, with persistent per-layer deltas."""

    def __init__(self, model: nn.Module, semantics: Semantics,
                 layer_options: Sequence[LayerTrainOptions], losses: dict[int, Loss],
                 roll: Roll = roll_now) -> None:
        self.model = model
        self.semantics = semantics
        self.specs: list[LayerSpec] = list(model.network.layers)
        self.layer_options = list(layer_options)
        self.losses = losses
        self.frozen = self._frozen_prefix()
        self.modes = [input_delta_modes(s, semantics) for s in self.specs]
        self.deltas: list[Tensor | None] = [None] * len(self.specs)
        self._bn = train_batchnorm(semantics.batchnorm, roll)
        self._records: list[_Record | None] = []
        # trace=True keeps, from the last pass, each layer's train-mode output and its delta as
        # Darknet's l.delta holds it after backward_network (in place transformed: a conv's is
        # the gradient at its linear output, before BN and activation), for layer-by-layer checks.
        self.trace = False
        self.first_nonfinite: int | None = None  # after a pass with a non-finite cost
        # amp: layers run under bfloat16 autocast (heads, losses and deltas of the heads stay
        # float32). Not Darknet: its training is float32 (CUDNN_HALF only with loss_scale != 1).
        self.amp = False
        self.traced_outputs: dict[int, Tensor] = {}
        self.traced_deltas: dict[int, Tensor] = {}

    def _frozen_prefix(self) -> int:
        """Layers before the last `stopbackward=1` are built as inference layers (parser.c:
        1397-1420, 1690-1701): no delta, no update, no backward."""
        last = 0
        for i, o in enumerate(self.layer_options):
            if o.stopbackward == 1:
                last = i
        return last

    def has_delta(self, i: int) -> bool:
        """Whether layer i has a delta buffer (the network input and frozen layers do not)."""
        return i != NETWORK_INPUT and i >= self.frozen

    def _persistent(self, i: int) -> bool:
        """Whether layer i's delta outlives a pass (never zeroed: the CPU build's non-l.train
        layers), so that what Darknet's backward leaves in it matters."""
        return not (self.semantics.zero_every_delta or self.specs[i].type in TRAIN_LAYER_TYPES)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: Tensor, targets: Targets, ctx: LossContext) -> list[Tensor]:
        """Train-mode forward of one mini-batch; returns the cost of each loss layer."""
        outputs: dict[int, Tensor] = {NETWORK_INPUT: x}
        records: list[_Record | None] = []
        costs: list[Tensor] = []
        self.traced_outputs, self.traced_deltas = {}, {}
        token = TRAIN_BATCHNORM.set(self._bn)
        try:
            for i, spec in enumerate(self.specs):
                inputs = [outputs[j] for j in spec.inputs]
                if i in self.losses:
                    y, cost, record = self._loss_forward(i, inputs, targets, ctx)
                    costs.append(cost)
                else:
                    self._zero_delta(i)
                    y, record = self._layer_forward(i, spec, inputs)
                records.append(record)
                outputs[i] = y
                if self.trace:
                    self.traced_outputs[i] = y
        finally:
            TRAIN_BATCHNORM.reset(token)
        self._records = records
        self.first_nonfinite = None
        if not all(bool(torch.isfinite(c)) for c in costs):
            self.first_nonfinite = next((i for i in range(len(self.specs))
                                         if not bool(torch.isfinite(outputs[i]).all())), None)
        return costs

    def _zero_delta(self, i: int) -> None:
        d = self.deltas[i]
        if d is not None and not self._persistent(i):
            d.zero_()

    def _layer_forward(self, i: int, spec: LayerSpec, inputs: list[Tensor]
                       ) -> tuple[Tensor, _Record | None]:
        module = self.model.layers[i]
        if i < self.frozen:
            return self._frozen_forward(module, inputs), None
        leaves = [t.detach().requires_grad_() if self.has_delta(j) else None
                  for j, t in zip(spec.inputs, inputs)]
        args = [leaf if leaf is not None else t.detach() for leaf, t in zip(leaves, inputs)]
        point = _in_place_point(module) if self._persistent(i) or self.trace else None
        if point is None:
            with torch.enable_grad(), self._autocast():
                y = module(*args)
            return y.detach(), _Record(leaves, y)
        caught: list[Tensor] = []

        def catch(_mod, ins, out=None):
            t = out if point[1] else ins[0]
            if t.requires_grad:
                t.retain_grad()
                caught.append(t)

        hook = point[0].register_forward_hook(catch) if point[1] \
            else point[0].register_forward_pre_hook(catch)
        try:
            with torch.enable_grad(), self._autocast():
                y = module(*args)
        finally:
            hook.remove()
        return y.detach(), _Record(leaves, y, caught[-1] if caught else None)

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return torch.autocast(device.type, dtype=torch.bfloat16)

    @staticmethod
    def _frozen_forward(module: nn.Module, inputs: list[Tensor]) -> Tensor:
        """Layers before stopbackward=1 run as inference layers: BN with the rolling statistics,
        which do not move (convolutional_kernels.cu:168; the CPU build segfaults on a frozen BN
        conv, notes section 11, so there is nothing else to follow)."""
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                return module(*inputs)
        finally:
            module.train(was)

    def _loss_forward(self, i: int, inputs: list[Tensor], targets: Targets, ctx: LossContext
                      ) -> tuple[Tensor, Tensor, _Record]:
        with torch.no_grad():
            y = self.model.layers[i](*[t.float() for t in inputs])  # heads in float32 (amp)
            out = self.losses[i](y, inputs[0].float(), targets, ctx)
        self.deltas[i] = out.delta.to(y.dtype)  # loss layers overwrite their delta in forward
        return y, out.cost, _Record([inputs[0]], y)

    # -- backward -------------------------------------------------------------------------------
    def backward(self, iteration: int) -> None:
        """backward_network (network.c:338-359): last layer to first, stopping at a
        stopbackward layer, skipping onlyforward layers."""
        for i in range(len(self.specs) - 1, -1, -1):
            self._trace_delta(i)
            if self._stops_at(i, iteration):
                for j in range(i):  # the layers below keep what their forward left
                    self._trace_delta(j)
                break
            if self.layer_options[i].onlyforward:
                continue
            if i in self.losses:
                self._loss_backward(i)
            else:
                self._layer_backward(i)
        self._records = []

    def _trace_delta(self, i: int) -> None:
        """Record layer i's delta as its consumers left it (its own backward may replace it)."""
        if self.trace and self.has_delta(i):
            d = self.deltas[i]
            self.traced_deltas[i] = torch.zeros_like(self.traced_outputs[i]) if d is None \
                else d.clone()

    def _stops_at(self, i: int, iteration: int) -> bool:
        stop = self.layer_options[i].stopbackward
        if stop == 1 or (stop and not self.semantics.stopbackward_until_iteration):
            return True
        return stop > iteration

    def _delta(self, j: int, like: Tensor) -> Tensor:
        d = self.deltas[j]
        if d is None or d.shape != like.shape or d.device != like.device:
            d = self.deltas[j] = torch.zeros_like(like, memory_format=torch.contiguous_format)
        return d

    def _loss_backward(self, i: int) -> None:
        """Heads, [softmax] and [cost] add (scale times) their delta to their input's."""
        j = self.specs[i].inputs[0]
        record = self._records[i]
        delta = self.deltas[i]
        if record is None or delta is None or not self.has_delta(j):
            return
        target = self._delta(j, record.leaves[0])
        target.add_(delta.reshape(target.shape), alpha=self.losses[i].backward_scale)

    def _layer_backward(self, i: int) -> None:
        record = self._records[i]
        if record is None:
            return
        y = record.output
        delta = self._delta(i, y)
        if self.semantics.connected_clips_delta and self.specs[i].type == "connected":
            delta.clamp_(-1.0, 1.0)
        if y.requires_grad:
            torch.autograd.backward(y, grad_tensors=-delta)
            inner = record.inner.grad if record.inner is not None else None
            if inner is not None:
                if self.trace:
                    self.traced_deltas[i] = -inner
                if self._persistent(i):
                    torch.neg(inner.reshape(delta.shape), out=delta)
        for j, leaf, mode in zip(self.specs[i].inputs, record.leaves, self.modes[i]):
            if leaf is None:
                continue
            target = self._delta(j, leaf)
            if leaf.grad is None:
                if mode == ASSIGN:
                    target.zero_()
            elif mode == ASSIGN:
                torch.neg(leaf.grad, out=target)
            else:
                target.sub_(leaf.grad)
