"""Training: Darknet's iteration (losses, update rule, schedule), kept apart from inference."""

from . import losses  # noqa: F401  (registers the heads' losses)
