"""Darknet's activation functions as torch code (activations.h / activations.c of AlexeyAB/darknet).

Darknet's CPU `activate()` returns 0 for relu6 and for several activations outside conv layers; we
compute what the activation means everywhere (see README, "Where darkcfg differs from Darknet").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ACTIVATION_FUNCTIONS", "INPLACE_ACTIVATIONS", "activation_function"]


def _linear(x: Tensor) -> Tensor:
    return x


def _leaky(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.1)


def _relie(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.01)


def _ramp(x: Tensor) -> Tensor:
    return F.relu(x) + 0.1 * x


def _loggy(x: Tensor) -> Tensor:
    return 2.0 * torch.sigmoid(x) - 1.0


def _elu(x: Tensor) -> Tensor:
    return torch.where(x >= 0, x, torch.expm1(x))


def _selu(x: Tensor) -> Tensor:
    # Darknet's rounded constants, not torch.selu's exact ones.
    return torch.where(x >= 0, 1.0507 * x, (1.0507 * 1.6732) * torch.expm1(x))


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(0.797885 * x + 0.035677 * x * x * x))


def _plse(x: Tensor) -> Tensor:
    return torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))


def _hardtan(x: Tensor) -> Tensor:
    return torch.clamp(x, -1.0, 1.0)


def _lhtan(x: Tensor) -> Tensor:
    return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))


def _stair(x: Tensor) -> Tensor:
    n = torch.floor(x)
    half = torch.floor(x / 2)
    return torch.where(torch.remainder(n, 2) == 0, half, (x - n) + half)


def _mish(x: Tensor) -> Tensor:
    return F.mish(x)  # softplus threshold 20, as Darknet's MISH_THRESHOLD


def _hard_mish(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


def _relu6(x: Tensor) -> Tensor:
    return torch.clamp(x, 0.0, 6.0)


_CHANNEL_EPS = 0.0001


def _normalize_channels(x: Tensor) -> Tensor:
    pos = F.relu(x)
    return pos / (pos.sum(1, keepdim=True) + _CHANNEL_EPS)


def _normalize_channels_softmax(x: Tensor) -> Tensor:
    e = torch.exp(x)
    return e / (e.sum(1, keepdim=True) + _CHANNEL_EPS)


def _normalize_channels_softmax_maxval(x: Tensor) -> Tensor:
    e = torch.exp(x - x.amax(1, keepdim=True))
    return e / (e.sum(1, keepdim=True) + _CHANNEL_EPS)


ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": _linear,
    "logistic": torch.sigmoid,
    "relu": F.relu,
    "relu6": _relu6,
    "leaky": _leaky,
    "revleaky": _leaky,  # same forward as leaky in Darknet
    "relie": _relie,
    "ramp": _ramp,
    "tanh": torch.tanh,
    "loggy": _loggy,
    "elu": _elu,
    "selu": _selu,
    "gelu": _gelu,
    "plse": _plse,
    "hardtan": _hardtan,
    "lhtan": _lhtan,
    "stair": _stair,
    "swish": F.silu,
    "mish": _mish,
    "hard_mish": _hard_mish,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": _normalize_channels_softmax,
    "normalize_channels_softmax_maxval": _normalize_channels_softmax_maxval,
}


# In-place forms, for layers that own a fresh tensor (a conv's output) and run without autograd.
INPLACE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": _linear,
    "logistic": torch.sigmoid_,
    "relu": F.relu_,
    "leaky": lambda x: F.leaky_relu_(x, 0.1),
    "revleaky": lambda x: F.leaky_relu_(x, 0.1),
    "relie": lambda x: F.leaky_relu_(x, 0.01),
    "tanh": torch.tanh_,
    "relu6": lambda x: x.clamp_(0.0, 6.0),
    "hardtan": lambda x: x.clamp_(-1.0, 1.0),
    "swish": lambda x: F.silu(x, inplace=True),
    "mish": lambda x: F.mish(x, inplace=True),
}


def activation_function(name: str) -> Callable[[Tensor], Tensor]:
    return ACTIVATION_FUNCTIONS[name]
