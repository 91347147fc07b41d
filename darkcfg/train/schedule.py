"""Darknet's learning-rate schedule: get_current_rate() (network.c:131-176), in its float types."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

__all__ = ["Schedule", "POLICIES"]

POLICIES = ("constant", "step", "exp", "poly", "steps", "sigmoid", "random", "sgdr")

_f32 = np.float32


@dataclass(frozen=True)
class Schedule:
    """The `[net]` keys of the schedule. :meth:`rate` is the rate of Darknet's batch_num."""

    learning_rate: float = 0.001
    policy: str = "constant"
    burn_in: int = 0
    power: float = 4.0
    max_batches: int = 0
    step: int = 1
    scale: float = 1.0
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    gamma: float = 1.0
    learning_rate_min: float = 0.00001
    sgdr_cycle: int = 0
    sgdr_mult: int = 2

    def rate(self, batch_num: int) -> float:
        """The rate Darknet's update uses at `batch_num` = seen / batch (so the first update of a
        fresh network uses batch_num 1). Float32 where Darknet keeps floats, float64 where it calls
        pow/exp/cos; the result is a float32 value."""
        lr = float(_f32(self.learning_rate))
        power = float(_f32(self.power))
        if batch_num < self.burn_in:
            return float(_f32(lr * math.pow(float(_f32(batch_num) / _f32(self.burn_in)), power)))
        p = self.policy
        if p == "step":
            return float(_f32(lr * math.pow(float(_f32(self.scale)), batch_num // self.step)))
        if p == "steps":
            rate = _f32(lr)
            for step, scale in zip(self.steps, self.scales):
                if step > batch_num:
                    break
                rate = _f32(rate * _f32(scale))
            return float(rate)
        if p == "exp":
            return float(_f32(lr * math.pow(float(_f32(self.gamma)), batch_num)))
        if p == "poly":
            base = float(_f32(1 - _f32(batch_num) / _f32(self.max_batches))) if self.max_batches \
                else -math.inf
            return float(_f32(lr * math.pow(base, power)))
        if p == "random":
            return float(_f32(lr * math.pow(random.random(), power)))
        if p == "sigmoid":
            gamma = float(_f32(self.gamma))
            return float(_f32(lr * (1.0 / (1.0 + math.exp(gamma * (batch_num - self.step))))))
        if p == "sgdr":
            start, cycle = 0, self.sgdr_cycle
            while start + cycle < batch_num and cycle > 0:
                start += cycle
                cycle *= self.sgdr_mult
            lr_min = float(_f32(self.learning_rate_min))
            angle = float(_f32(batch_num - start)) * 3.14159265 / cycle if cycle else math.inf
            return float(_f32(lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(angle))))
        return lr
