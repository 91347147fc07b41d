"""Training options of a cfg: the `[net]` keys the trainer reads and each layer's own keys.

Read from the cfg text with Darknet's defaults (parser.c parse_net_options, 1145-1290, and the
per-layer keys of parse_network_cfg, 1641-1650). Only this module and :mod:`.sections` see text.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graph import Network
from ..options import Options
from .schedule import POLICIES, Schedule
from .sections import section_options

__all__ = ["NetTrainOptions", "LayerTrainOptions", "read_train_options"]


@dataclass(frozen=True)
class NetTrainOptions:
    """`[net]` training keys. `batch` is images per iteration (the cfg's batch=), as in the cfg."""

    batch: int
    subdivisions: int
    momentum: float
    decay: float
    schedule: Schedule
    adam: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    loss_scale: float = 1.0

    @property
    def mini_batch(self) -> int:
        """Images per forward/backward pass: Darknet's net.batch after parse (batch/subdivisions)."""
        return self.batch // self.subdivisions

    @property
    def max_batches(self) -> int:
        return self.schedule.max_batches


@dataclass(frozen=True)
class LayerTrainOptions:
    """The keys every Darknet layer reads for training (parser.c:1641-1650)."""

    learning_rate_scale: float = 1.0
    stopbackward: int = 0
    train_only_bn: bool = False
    dont_update: int = 0
    burnin_update: int = 0
    onlyforward: bool = False
    clip: float = 0.0


def read_train_options(network: Network) -> tuple[NetTrainOptions, list[LayerTrainOptions]]:
    net, layers = section_options(network)
    return _net_options(net), [_layer_options(o) for o in layers]


def _net_options(o: Options) -> NetTrainOptions:
    batch = o.int("batch", 1)
    subdivisions = o.int("subdivisions", 1)
    if batch < 1:
        raise o.error(f"batch={batch}: training needs at least one image per iteration", "batch")
    if subdivisions < 1 or batch % subdivisions:
        raise o.error(f"subdivisions={subdivisions} does not divide batch={batch}: Darknet would "
                      f"train on batch/subdivisions = {batch // max(subdivisions, 1)} images per "
                      f"pass and drop the rest", "subdivisions")
    adam = bool(o.int("adam", 0))
    return NetTrainOptions(
        batch=batch, subdivisions=subdivisions,
        momentum=o.float("momentum", 0.9), decay=o.float("decay", 0.0001),
        schedule=_schedule(o), adam=adam,
        b1=o.float("B1", 0.9) if adam else 0.9, b2=o.float("B2", 0.999) if adam else 0.999,
        eps=o.float("eps", 1e-6) if adam else 1e-6, loss_scale=o.float("loss_scale", 1.0))


def _schedule(o: Options) -> Schedule:
    max_batches = o.int("max_batches", 0)
    policy = o.str("policy", "constant")
    if policy not in POLICIES:
        policy = "constant"  # Darknet: "Couldn't find policy ..., going with constant"
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    if policy in ("steps", "sgdr"):
        steps = o.ints("steps", ()) or ()
        scales = o.floats("scales", None) or ()
        if policy == "steps" and (not steps or not scales):
            raise o.error("policy=steps needs steps= and scales= (Darknet stops with \"STEPS "
                          "policy must have steps and scales in cfg file\")", "policy")
        if steps and len(scales) < len(steps):
            if policy == "steps":
                raise o.error(f"steps= lists {len(steps)} values but scales= only {len(scales)}",
                              "scales")
            scales = scales + (1.0,) * (len(steps) - len(scales))
    step = o.int("step", 1) if policy in ("step", "sigmoid") else 1
    return Schedule(
        learning_rate=o.float("learning_rate", 0.001), policy=policy,
        burn_in=o.int("burn_in", 0), power=o.float("power", 4.0),
        max_batches=max_batches, step=step,
        scale=o.float("scale", 1.0) if policy == "step" else 1.0,
        steps=steps, scales=scales[:len(steps)],
        gamma=o.float("gamma", 1.0) if policy in ("exp", "sigmoid") else 1.0,
        learning_rate_min=o.float("learning_rate_min", 0.00001),
        sgdr_cycle=o.int("sgdr_cycle", max_batches), sgdr_mult=o.int("sgdr_mult", 2))


def _layer_options(o: Options) -> LayerTrainOptions:
    return LayerTrainOptions(
        learning_rate_scale=o.float("learning_rate", 1.0),
        stopbackward=o.int("stopbackward", 0),
        train_only_bn=bool(o.int("train_only_bn", 0)),
        dont_update=o.int("dont_update", 0),
        burnin_update=o.int("burnin_update", 0),
        onlyforward=bool(o.int("onlyforward", 0)),
        clip=o.float("clip", 0.0))
