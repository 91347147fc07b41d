"""darkcfg.Trainer: one call of :meth:`Trainer.step` is one iteration of Darknet's training.

train_network (network.c:402-472): the `[net] batch` images of an iteration go through
`subdivisions` forward/backward passes of batch/subdivisions images each, `seen` advancing before
each pass; gradients accumulate, and one update follows with the rate of batch_num = seen/batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import CfgError
from ..weights import WeightsHeader
from . import distributed
from .batchnorm import roll_now
from .config import read_train_options
from .distributed import DataParallel
from .engine import TRAIN_LAYER_TYPES, Engine
from .losses import Loss, LossContext, Targets, loss_factory
from .losses.targets import check_detection_targets
from .optim import DarknetSGD
from .sections import section_options
from .semantics import Semantics, semantics

__all__ = ["Trainer", "TrainingError"]

# Recurrent layers train through time steps (Darknet's time_steps), which the trainer does not do.
_UNTRAINABLE = ("rnn", "gru", "lstm", "crnn", "conv_lstm", "history", "contrastive")


class _Scaled:
    """A loss whose delta reaches its input with another factor (the GPU's loss_scale and
    delta_normalizer)."""

    def __init__(self, loss: Loss, backward_scale: float) -> None:
        self.loss = loss
        self.backward_scale = backward_scale

    def __call__(self, *args, **kwargs):
        return self.loss(*args, **kwargs)


class TrainingError(CfgError):
    """Training cannot go on (a NaN loss): names the iteration and the first layer affected."""


class Trainer:
    """Darknet's training iteration for a darkcfg model; every hyper-parameter from `[net]`.

    `darknet`: "gpu" (default) follows Darknet's CUDA/cuDNN build, which people train with;
    "cpu" reproduces the CPU build, training bugs included (see darkcfg.train.semantics).
    Switches of :class:`~darkcfg.train.semantics.Semantics` can be overridden by keyword.
    The trainer runs where the model's parameters are (CPU or CUDA). `amp=True` runs the layers
    under bfloat16 autocast: faster on recent GPUs, and a deviation from Darknet, which trains
    in float32."""

    def __init__(self, model: nn.Module, *, darknet: str | Semantics = "gpu", amp: bool = False,
                 **switches: object) -> None:
        self.model = model
        self.network = model.network
        self.semantics = semantics(darknet, **switches)
        self.options, self.layer_options = read_train_options(self.network)
        self._check_trainable()
        self.losses = self._make_losses()
        self.parallel = DataParallel(self.options.subdivisions) if distributed.active() else None
        self.engine = Engine(model, self.semantics, self.layer_options, self.losses,
                             roll=self.parallel.roll if self.parallel else roll_now)
        if self.parallel is not None:
            self.parallel.register(model, self.engine.frozen)
        self.engine.amp = amp
        o, sem = self.options, self.semantics
        groups = self._param_groups()
        # None: no layer Darknet updates (a cfg of heads only, or everything frozen)
        self.optimizer = DarknetSGD(groups, momentum=o.momentum, decay=o.decay,
                                    adam=o.adam and sem.adam, b1=o.b1, b2=o.b2, eps=o.eps,
                                    loss_scale=o.loss_scale if sem.loss_scale else 1.0) \
            if groups else None
        header = getattr(model, "weights_header", None)
        self.seen = header.seen if header is not None else 0
        self.iteration = self.seen // self.options.batch
        self.last_costs: list[float] = []  # each loss layer's cost, summed over the last step

    # -- set-up -----------------------------------------------------------------------------------
    def _check_trainable(self) -> None:
        for spec in self.network.layers:
            if spec.type in _UNTRAINABLE:
                raise CfgError(f"training [{spec.header}] layers is not supported", spec.loc)

    def _make_losses(self) -> dict[int, Loss]:
        _, opts = section_options(self.network)
        made = {}
        for spec in self.network.layers:
            factory = loss_factory(spec.type)
            if factory is not None:
                loss = factory(spec, opts[spec.index], self.network)
                scale = self._gpu_delta_scale(spec.type, opts[spec.index])
                if scale != 1.0:
                    loss = _Scaled(loss, loss.backward_scale * scale)
                made[spec.index] = loss
        if not made:
            raise CfgError("the cfg has no layer that computes a loss ([yolo], [region], "
                           "[detection], [Gaussian_yolo], [softmax] or [cost])",
                           self.network.net.loc)
        return made

    def _gpu_delta_scale(self, type_name: str, opts) -> float:
        """The GPU backward scales [yolo] deltas by loss_scale * delta_normalizer=,
        [Gaussian_yolo] by delta_normalizer=, [softmax] by loss_scale (yolo_layer.c:1225,
        gaussian_yolo_layer.c:894, softmax_layer.c:122); the CPU's adds them unscaled."""
        if not self.semantics.loss_scale:
            return 1.0
        ls = self.options.loss_scale
        if type_name == "yolo":
            return ls * opts.float("delta_normalizer", 1.0)
        if type_name == "Gaussian_yolo":
            return opts.float("delta_normalizer", 1.0)
        return ls if type_name == "softmax" else 1.0

    def _param_groups(self) -> list[dict]:
        """One group per updated layer and kind: weights (with decay), biases and BN scales."""
        groups: list[dict] = []
        seen: set[int] = set()
        for spec in self.network.layers:
            if not self._updates(spec.index):
                continue
            lo = self.layer_options[spec.index]
            clip = lo.clip if self.semantics.layer_train_options else 0.0
            decayed, plain = [], []
            for module in self.model.layers[spec.index].modules():
                for name, p in module.named_parameters(recurse=False):
                    if id(p) in seen or not p.requires_grad:
                        continue
                    seen.add(id(p))
                    is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
                    (plain if is_bn or name == "bias" else decayed).append(p)
            for params, decay in ((decayed, True), (plain, False)):
                if params:
                    groups.append(dict(params=params, lr_scale=lo.learning_rate_scale,
                                       decay=decay, clip=clip, layer=spec.index))
        return groups

    def _updates(self, i: int) -> bool:
        """update_network (network.c:293-305): only layers with l.train, not frozen. The GPU also
        never updates a layer at or before one with train_only_bn=1 (set_train_only_bn,
        parser.c:1306-1337; network_kernels.cu:292)."""
        if self.semantics.layer_train_options and i <= self._last_train_only_bn:
            return False
        return self.network.layers[i].type in TRAIN_LAYER_TYPES and i >= self.engine.frozen

    @property
    def _last_train_only_bn(self) -> int:
        return max((i for i, o in enumerate(self.layer_options) if o.train_only_bn), default=-1)

    def _set_skips(self, batch_num: int) -> None:
        """GPU only: a layer waits while dont_update >= batch_num or burnin_update * burn_in >
        batch_num (network_kernels.cu:291-294); its gradients keep accumulating meanwhile."""
        burn_in = self.options.schedule.burn_in
        for group in self.optimizer.param_groups:
            lo = self.layer_options[group["layer"]]
            group["skip"] = self.semantics.layer_train_options and (
                lo.dont_update >= batch_num or lo.burnin_update * burn_in > batch_num)

    # -- the iteration ----------------------------------------------------------------------------
    def learning_rate(self, iteration: int) -> float:
        """The rate Darknet uses for the update that ends iteration `iteration` (0-based): that of
        batch_num = iteration + 1, since `seen` already counts the iteration's images."""
        return self.options.schedule.rate(iteration + 1)

    def step(self, images: Tensor, targets: Targets) -> float:
        """One Darknet iteration over the whole `[net] batch`; returns Darknet's reported loss."""
        o = self.options
        self._check_images(images)
        self._check_targets(targets)
        self.model.train()
        mb = o.mini_batch
        total = 0.0
        costs_sum: list[float] = []
        device = self._device()
        for s in range(o.subdivisions):
            self.seen += mb
            if self.parallel is not None:
                if not self.parallel.mine(s):
                    continue
                self.parallel.current = s
            x = images[s * mb:(s + 1) * mb].to(device)
            t = self._slice_targets(targets, s * mb, (s + 1) * mb, device)
            ctx = LossContext(self.network.net.width, self.network.net.height, self.seen,
                              self.iteration, o.max_batches, self.semantics.name)
            costs = self.engine.forward(x, t, ctx)
            self.engine.backward(self.iteration)
            values = [float(c) for c in costs]
            costs_sum = values if not costs_sum else [a + b for a, b in zip(costs_sum, values)]
            total += float(np.float32(sum(values)) / np.float32(len(values)))
        if self.parallel is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]] \
                if self.optimizer is not None else []
            total = self.parallel.reduce(params, total, device)
        loss = float(np.float32(total) / np.float32(o.subdivisions * mb))
        if not math.isfinite(loss):
            self._raise_nan(loss)
        self.iteration += 1
        batch_num = self.seen // o.batch
        if self.optimizer is not None:
            self._set_skips(batch_num)
            self.optimizer.step(rate=self.options.schedule.rate(batch_num), batch=o.batch,
                                t=batch_num)
        # every parameter, also those Darknet never updates ([connected], frozen by
        # train_only_bn), whose gradients would otherwise pile up
        self.model.zero_grad(set_to_none=True)
        self.last_costs = costs_sum
        self.model.weights_header = WeightsHeader(0, 2, 5, self.iteration * o.batch)
        return loss

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    # -- multi-scale (random=1; the sizes come from darkcfg.train.data) ------------------------------
    def resize(self, width: int, height: int) -> None:
        """Train at width x height from now on, as resize_network does for random=1
        (detector.c:246): the cfg re-parsed at that size; parameters, optimizer state and `seen`
        stay. A no-op at the current size; a CfgError where a layer's weight count depends on
        the size ([connected], [local], [detection])."""
        import warnings

        from ..errors import CfgWarning
        from ..graph import parse

        net = self.network.net
        if (width, height) == (net.width, net.height):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CfgWarning)  # the cfg's warnings were shown once
            network = parse(self.network, width=width, height=height)
        for old, new in zip(self.network.layers, network.layers):
            if old.weight_count != new.weight_count:
                raise CfgError(f"cannot train at {width}x{height}: layer {old.index} "
                               f"[{old.header}] has {old.weight_count} weights at "
                               f"{net.width}x{net.height} and {new.weight_count} there", old.loc)
        self.network = self.model.network = network
        self.engine.specs = list(network.layers)

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a weights file does not hold: seen, the update buffers (momentum, Adam) and
        Darknet's persistent per-layer deltas (which carry over on the CPU build)."""
        return {"seen": self.seen, "iteration": self.iteration,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "deltas": [None if d is None else d.detach().cpu() for d in self.engine.deltas]}

    def load_state_dict(self, state: dict) -> None:
        self.seen = int(state["seen"])
        self.iteration = int(state["iteration"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        device = self._device()
        deltas = state.get("deltas") or []
        if len(deltas) == len(self.engine.deltas):
            self.engine.deltas = [None if d is None else d.to(device) for d in deltas]

    # -- checks -----------------------------------------------------------------------------------
    def _check_images(self, images: Tensor) -> None:
        o, net = self.options, self.network.net
        s = net.input_shape
        want = (o.batch, s.c, s.h, s.w)
        shape = tuple(images.shape) if isinstance(images, Tensor) else None
        if shape != want:
            raise CfgError(f"images must be a ({', '.join(map(str, want))}) tensor (the cfg's "
                           f"batch={o.batch}, channels, height, width), got "
                           f"{shape if shape is not None else type(images).__name__}", net.loc)
        if not images.is_floating_point():
            raise CfgError(f"images must be float values in [0, 1], not {images.dtype}", net.loc)
        finite = torch.isfinite(images).flatten(1).all(1)
        if not bool(finite.all()):
            raise CfgError(f"image {int((~finite).nonzero()[0])} of the batch has a non-finite "
                           f"value", net.loc)

    def _check_targets(self, targets: Targets) -> None:
        o = self.options
        n = len(targets) if not isinstance(targets, Tensor) else targets.shape[0]
        if n != o.batch:
            raise CfgError(f"targets hold {n} images, the cfg's batch={o.batch} needs {o.batch}",
                           self.network.net.loc)
        if not isinstance(targets, Tensor):
            classes = self._detector_classes()
            if classes is not None:
                check_detection_targets([torch.as_tensor(t) for t in targets], o.batch, classes)

    def _detector_classes(self) -> int | None:
        """The smallest `classes=` of the detection heads (a row must fit every head)."""
        found = [self.network.layers[i].options.classes for i in self.losses
                 if self.network.layers[i].type in ("yolo", "Gaussian_yolo", "region",
                                                     "detection")]
        return min(found) if found else None

    @staticmethod
    def _slice_targets(targets: Targets, start: int, stop: int, device: torch.device) -> Targets:
        if isinstance(targets, Tensor):
            return targets[start:stop].to(device)
        return [torch.as_tensor(t, dtype=torch.float32).to(device)
                for t in targets[start:stop]]

    def _raise_nan(self, loss: float) -> None:
        """Stop before the update, so the weights stay finite, naming where it began."""
        first = self.engine.first_nonfinite
        if first is None:
            first = next((i for i, d in enumerate(self.engine.deltas)
                          if d is not None and not bool(torch.isfinite(d).all())), None)
            what = "delta"
        else:
            what = "output"
        spec = self.network.layers[first] if first is not None else None
        where = f"; the first layer with a non-finite {what} is layer {first} [{spec.header}]" \
            if spec is not None else ""
        raise TrainingError(f"the loss became {loss} in iteration {self.iteration}{where}; the "
                            f"weights were not updated", spec.loc if spec is not None
                            else self.network.net.loc)
