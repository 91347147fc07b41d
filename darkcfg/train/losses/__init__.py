"""Losses of the heads and cost layers, registered by section type (see :mod:`.base`)."""

from .base import (Loss, LossContext, LossFactory, LossOutput, Targets, loss_factory, losses,
                   register_loss, registered_losses)
from . import classifier  # noqa: F401  (registers [softmax] and [cost])
from . import gaussian_yolo  # noqa: F401  (registers [Gaussian_yolo])
from . import region  # noqa: F401  (registers [region])
from . import detection  # noqa: F401  (registers [detection])
from . import yolo  # noqa: F401  (registers [yolo])

__all__ = ["Loss", "LossContext", "LossFactory", "LossOutput", "Targets", "register_loss",
           "loss_factory", "registered_losses", "losses"]
