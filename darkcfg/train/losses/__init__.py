"""Losses of the heads and cost layers, registered by section type (see :mod:`.base`)."""

from .base import (Loss, LossContext, LossFactory, LossOutput, Targets, loss_factory, losses,
                   register_loss, registered_losses)

__all__ = ["Loss", "LossContext", "LossFactory", "LossOutput", "Targets", "register_loss",
           "loss_factory", "registered_losses", "losses"]
