"""DarknetModel: the torch module of a parsed network, and its execution plan.

Layer i of ``model.layers`` is Darknet's layer i. Forward runs only the layers the requested
outputs depend on and drops each intermediate output as soon as no later layer needs it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CfgError, CfgWarning
from .features import FeatureInfo, feature_info
from .graph import NETWORK_INPUT, Network, parse
from .layers import builder_for
from .layers._common import deferred_init
from .limits import Limits
from .weights import DEFAULT_VERSION, LoadReport, WeightsHeader, load_weights, save_weights

__all__ = ["DarknetModel", "build", "load"]


class DarknetModel(nn.Module):
    """A Darknet network as a torch module; ``model(x)`` returns the outputs of `out_indices`."""

    def __init__(self, network: Network, out_indices: Sequence[int] | None = None, *,
                 init: bool = True) -> None:
        super().__init__()
        self.network = network
        with deferred_init():
            self.layers = nn.ModuleList(self._build_layer(spec) for spec in network.layers)
        self._tie_shared_parameters()
        self.weights_header: WeightsHeader | None = None
        self.last_load: LoadReport | None = None
        self.fused = False
        self.out_indices = out_indices  # property: validates and plans
        if init:
            self.init_weights()

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _build_layer(spec) -> nn.Module:
        builder = builder_for(spec.type)
        if builder is None:
            raise CfgError(f"no torch builder is registered for [{spec.header}]", spec.loc)
        return builder(spec)

    def _tie_shared_parameters(self) -> None:
        """share_index: the layer uses its owner's weights and BN tensors (same objects)."""
        for spec in self.network.layers:
            for owner in spec.params:
                mine, theirs = self.layers[spec.index], self.layers[owner]
                for name, param in list(theirs.named_parameters(recurse=True)):
                    mod, _, attr = name.rpartition(".")
                    setattr(mine.get_submodule(mod), attr, param)
                for name, buf in list(theirs.named_buffers(recurse=True)):
                    mod, _, attr = name.rpartition(".")
                    setattr(mine.get_submodule(mod), attr, buf)

    @property
    def out_indices(self) -> list[int]:
        return list(self._out_indices)

    @out_indices.setter
    def out_indices(self, value: Sequence[int] | None) -> None:
        n = len(self.layers)
        chosen = list(self.network.output_layers if value is None else value)
        resolved = []
        for i in chosen:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise IndexError(f"out index {i} is outside the network's {n} layers")
            resolved.append(j)
        self._out_indices = tuple(resolved)
        self._plan()

    def _plan(self) -> None:
        """Which layers run, and after which layer each kept output can be dropped."""
        specs = self.network.layers
        needed = set(self._out_indices)
        for spec in reversed(specs):
            if spec.index in needed:
                needed.update(j for j in spec.inputs if j != NETWORK_INPUT)
        self._run = tuple(i for i in range(len(specs)) if i in needed)
        last_use: dict[int, int] = {}
        for i in self._run:
            for j in specs[i].inputs:
                last_use[j] = i
        for j in self._out_indices:
            last_use[j] = len(specs)  # kept to the end
        self._steps = tuple(
            (i, specs[i].inputs, i in last_use,
             tuple(sorted({j for j in specs[i].inputs if last_use.get(j) == i})))
            for i in self._run)

    # -- execution ------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> list[Tensor]:
        if x.dim() != 4:
            raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        cache: dict[int, Tensor] = {NETWORK_INPUT: x}
        layers = self.layers
        for i, inputs, keep, free in self._steps:
            if len(inputs) == 1:
                y = layers[i](cache[inputs[0]])
            else:
                y = layers[i](*[cache[j] for j in inputs])
            for j in free:
                del cache[j]
            if keep:
                cache[i] = y
        return [cache[i] for i in self._out_indices]

    def init_weights(self, layers: Iterable[int] | None = None, *, seed: int | None = None) -> None:
        """Darknet's random initialisation of conv and connected weights: uniform in
        ±sqrt(2/fan_in), biases 0 (BN keeps scale 1, mean 0, variance 1).

        All weights are drawn in one pass from one buffer (numpy's PCG64, seeded from torch's
        generator unless `seed` is given), which is several times faster than torch's per-layer
        init. `layers`: which layer indices (default all)."""
        chosen = range(len(self.layers)) if layers is None else layers
        targets = [m for i in chosen for m in self.layers[i].modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear))]
        targets = list({id(m.weight): m for m in targets}.values())  # share_index: once
        if not targets:
            return
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        total = sum(m.weight.numel() for m in targets)
        buf = torch.from_numpy(np.random.default_rng(seed).random(total, dtype=np.float32))
        pos = 0
        with torch.no_grad():
            for m in targets:
                w = m.weight
                scale = math.sqrt(2.0 / (w[0].numel() or 1))
                chunk = buf[pos:pos + w.numel()].view(w.shape)
                pos += w.numel()
                w.set_(chunk.mul_(2 * scale).sub_(scale))
                if m.bias is not None:
                    m.bias.zero_()

    def fuse(self) -> DarknetModel:
        """Fold every BatchNorm into the conv or connected layer before it, in float64 as Darknet's
        fuse_conv_batchnorm does, for faster inference (outputs match within ~1e-6 relative).

        A fused model has other parameters (no ``bn.*``): it cannot load or save ``.weights``
        files any more. `share_index` layers keep using their owner's (now fused) tensors."""
        done: dict[int, nn.Parameter] = {}
        with torch.no_grad():
            for layer in self.layers:
                for m in layer.modules():
                    fold = getattr(m, "fold_batchnorm", None)
                    if fold is not None:
                        fold(done)
        self.fused = True
        return self

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction (cumulative stride), shape and receptive field of each output, in
        `out_indices` order, like timm's FeatureInfo (for building your own head)."""
        return feature_info(self.network, self._out_indices)

    @property
    def stride(self) -> int:
        """The largest downsampling from the input to a spatial layer output (32 for yolov4):
        inputs whose height and width are multiples of it keep every layer's shape integral."""
        net = self.network.net
        factors = [net.width // s.out_shape.w for s in self.network
                   if 1 < s.out_shape.w and net.width % s.out_shape.w == 0]
        return max(factors, default=1)

    def example_input(self, batch: int = 2) -> Tensor:
        """A zero input of the cfg's size; batch 2 by default, so exporters do not specialise
        the batch dimension to 1."""
        net = self.network.net
        return torch.zeros(batch, net.channels or net.inputs, net.height or 1, net.width or 1)

    def dynamic_shapes(self, *, max_batch: int = 1024, max_size: int = 8192) -> dict:
        """torch.export's `dynamic_shapes` for the input `x`: any batch, and any height and width
        that are multiples of :attr:`stride` (up to `max_size`) where the weights allow other
        sizes (:meth:`accepts_other_sizes`)."""
        from torch.export import Dim

        k = self.stride
        shapes: dict[int, object] = {0: Dim("batch", min=1, max=max_batch)}
        if self.accepts_other_sizes():
            shapes[2] = k * Dim("h_blocks", min=1, max=max(1, max_size // k))
            shapes[3] = k * Dim("w_blocks", min=1, max=max(1, max_size // k))
        return {"x": shapes}

    def accepts_other_sizes(self) -> bool:
        """Whether the same weights run at other input sizes: the cfg parses at the next multiple
        of :attr:`stride` and no layer's weight count changes ([connected], [local] and
        [detection] fix the size)."""
        other = self.network_one_stride_larger()
        return other is not None and all(a.weight_count == b.weight_count
                                         for a, b in zip(self.network, other))

    def network_one_stride_larger(self) -> Network | None:
        """The network parsed at width and height + :attr:`stride` (None when the input is not
        an image or the cfg does not parse there): how each shape grows with the input."""
        network = self.network
        if not network.net.width * network.net.height:
            return None
        k = self.stride
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CfgWarning)  # the cfg's warnings were shown once
            try:
                return parse(network, width=network.net.width + k, height=network.net.height + k)
            except CfgError:
                return None

    def export(self, *, dynamic: bool = True, max_batch: int = 1024,
               max_size: int = 8192) -> torch.export.ExportedProgram:
        """torch.export of the model, by default with a dynamic batch and any height and width
        that are multiples of :attr:`stride` (up to `max_size`)."""
        shapes = self.dynamic_shapes(max_batch=max_batch, max_size=max_size) if dynamic else None
        return torch.export.export(self, (self.example_input(),), dynamic_shapes=shapes)

    def reset_state(self) -> None:
        """Forget the hidden state of recurrent layers (Darknet keeps it across predictions)."""
        for layer in self.layers:
            reset = getattr(layer, "reset_state", None)
            if reset is not None:
                reset()

    # -- weights --------------------------------------------------------------------------------
    def load_darknet_weights(self, path: str | os.PathLike, *, strict: bool = True,
                             cutoff: int | None = None) -> LoadReport:
        """Load a Darknet .weights file; strict=False also loads the prefix of a longer file or a
        partial file that ends on a layer boundary; `cutoff` loads layers < cutoff only. Layers
        the file does not fill keep their values (``report.initialised`` lists them); see
        :func:`load` for what is refused as misaligned."""
        self._check_unfused("load a .weights file into")
        report = load_weights(self.network, self.layers, path, strict=strict, cutoff=cutoff)
        self.weights_header = report.header
        self.last_load = report
        return report

    def save_darknet_weights(self, path: str | os.PathLike, *, cutoff: int | None = None) -> None:
        """Write a Darknet .weights file (the loaded file's header, else version 0.2.5).

        `cutoff=N` writes layers 0..N-1 as Darknet's `partial` does (`darkcfg partial`): under
        its own header 0.2.5 with seen 0, since such a file starts a new training."""
        self._check_unfused("save a .weights file from")
        header = None if cutoff is not None else self.weights_header
        save_weights(self.network, self.layers, path, header, cutoff=cutoff)

    def _check_unfused(self, what: str) -> None:
        if self.fused:
            raise ValueError(f"cannot {what} a fused model (fuse() folded its BatchNorm layers "
                             f"away); use the model before fuse()")

    def extra_repr(self) -> str:
        name = Path(self.network.path).name if self.network.path else "<text>"
        return f"cfg={name}, out_indices={list(self._out_indices)}"


def build(net_or_path: Network | str | os.PathLike, out_indices: Sequence[int] | None = None, *,
          init: bool = True, **parse_overrides: int | Limits | None) -> DarknetModel:
    """Build the torch model of a parsed network, a cfg path or cfg text.

    The model starts in eval mode, i.e. Darknet's inference (BN uses the rolling statistics);
    call ``.train()`` to train it. To build and load weights in one step, use :func:`load`.

    Args:
        net_or_path: a parsed :class:`Network`, a cfg path, or cfg text (as :func:`parse`).
        out_indices: the layers ``model(x)`` returns (default: the network's output layers,
            the detection heads or else the last layer that is not [cost]).
        init: Darknet's random initialisation. ``init=False`` leaves conv and connected weights
            uninitialised, for callers about to load them.
        **parse_overrides: ``width``, ``height``, ``channels`` (override [net]) and ``limits``
            (see :func:`parse`); with them a Network is parsed again.
    """
    network = net_or_path if isinstance(net_or_path, Network) and not parse_overrides \
        else parse(net_or_path, **parse_overrides)
    return DarknetModel(network, out_indices, init=init).eval()


def load(cfg: Network | str | os.PathLike, weights: str | os.PathLike | None = None, *,
         out_indices: Sequence[int] | None = None, strict: bool = True,
         cutoff: int | None = None, weights_cfg: Network | str | os.PathLike | None = None,
         **parse_overrides: int | Limits | None) -> DarknetModel:
    """Build a model and, when given, load its weights; the model is in eval mode.

    Layers the file does not fill keep Darknet's random initialisation, as in Darknet (nothing
    is initialised twice); ``model.last_load`` (a :class:`~darkcfg.weights.LoadReport`) lists
    them in ``initialised``.

    Args:
        cfg: a cfg path, cfg text, or a parsed :class:`Network`.
        weights: a Darknet .weights file (any name, e.g. ``yolov4.conv.137``), or a
            .safetensors / .pt / .pth checkpoint (by suffix; see :mod:`darkcfg.checkpoint`).
            None: Darknet's random initialisation.
        out_indices: the layers ``model(x)`` returns (default: the network's outputs).
        strict: the file must fit the cfg exactly. ``strict=False`` also loads the prefix of a
            longer file (a detector's weights into its backbone cfg, with a warning) and a
            partial file that ends on a layer boundary (Darknet's ``partial`` output); a file
            whose sizes or negative BN variances show that its values do not line up with the
            cfg's layers is refused either way. For a checkpoint: tensors it lacks keep
            Darknet's initialisation, tensors the model lacks are ignored.
        cutoff: load only layers ``0..cutoff-1`` (Darknet's ``load_weights_upto``); the file
            may be exactly those layers, or this cfg's full file.
        weights_cfg: the cfg the file was saved with, when it is not `cfg` (e.g. another class
            count): the file is read with it (at its own [net] size) and every layer whose type
            and tensor shapes match `cfg`'s layer of the same index is copied; the others keep
            Darknet's initialisation and are listed in ``model.last_load.initialised``.
        **parse_overrides: ``width``, ``height``, ``channels`` (override [net]) and ``limits``.
    """
    if weights is None:
        if cutoff is not None or weights_cfg is not None:
            raise ValueError("cutoff and weights_cfg apply to a weights file; none was given")
        return build(cfg, out_indices, **parse_overrides)
    if weights_cfg is not None:
        return _load_transferred(cfg, weights, weights_cfg, out_indices, strict, cutoff,
                                 parse_overrides)
    from .checkpoint import is_checkpoint, load_checkpoint

    if is_checkpoint(weights):  # .safetensors / .pt / .pth by suffix
        if cutoff is not None:  # the checkpoint's layers < cutoff into a fresh model
            return _load_transferred(cfg, weights, cfg, out_indices, strict, cutoff,
                                     parse_overrides)
        # strict: the file fills every tensor; strict=False: what it lacks keeps Darknet's init
        model = build(cfg, out_indices, init=not strict, **parse_overrides)
        load_checkpoint(model, weights, strict=strict)
        return model
    model = build(cfg, out_indices, init=False, **parse_overrides)
    report = model.load_darknet_weights(weights, strict=strict, cutoff=cutoff)
    # Layers the file did not fill (cutoff, a partial file, dontload=1) get Darknet's random
    # init; share_index layers use their owner's tensors.
    model.init_weights(report.initialised)
    return model


def _load_transferred(cfg, weights, weights_cfg, out_indices, strict: bool,
                      cutoff: int | None, parse_overrides: dict) -> DarknetModel:
    """Read `weights` with `weights_cfg`, then copy each layer whose shapes match into a model
    of `cfg` (see :mod:`darkcfg.transfer`); the other layers get Darknet's initialisation."""
    from dataclasses import replace

    from .checkpoint import is_checkpoint, load_checkpoint
    from .transfer import transfer

    same = weights_cfg is cfg  # a checkpoint under a cutoff
    own = parse_overrides if same else {"limits": parse_overrides.get("limits")}
    if is_checkpoint(weights):
        source = build(weights_cfg, init=not strict, **own)
        ckpt = load_checkpoint(source, weights, strict=strict)
        unfilled = set(ckpt.missing_layers)
        header = ckpt.header or WeightsHeader(*DEFAULT_VERSION, seen=0)
        report = LoadReport(str(weights), header, len(source.network), ckpt.values_loaded, 0)
    else:
        source = load(weights_cfg, weights, strict=strict, cutoff=cutoff, **own)
        report = source.last_load
        unfilled = set(report.initialised)
    stop = len(source.network) if cutoff is None else cutoff
    filled = {i for i in range(min(stop, len(source.network))) if i not in unfilled}
    model = build(cfg, out_indices, init=False, **parse_overrides)
    left = transfer(source, model, filled)
    model.init_weights(left)
    model.weights_header = source.weights_header or report.header
    name = None if same else (source.network.path or "<cfg text>")
    model.last_load = replace(report, initialised=left, weights_cfg=name)
    return model
