"""Training: Darknet's iteration (losses, update rule, schedule), kept apart from inference."""

from . import losses  # noqa: F401  (registers the heads' losses)
from .losses import LossContext, LossOutput, register_loss
from .semantics import CPU, GPU, Semantics
from .trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError", "Semantics", "CPU", "GPU", "register_loss", "LossContext",
           "LossOutput"]
