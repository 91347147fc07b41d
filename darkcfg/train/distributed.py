"""Data-parallel training over torch.distributed processes (torchrun; gloo on CPU, nccl on GPU).

The global batch is the cfg's `batch=`, as in one process: its `subdivisions` passes are shared
out, process r running the passes s with s % world_size == r. After the passes the gradient sums
are all-reduced (summed), so every process applies the same update, the one a single process
computes; the BN rolling statistics, which Darknet updates pass after pass, are combined the same
way: over one iteration r' = k^S r + sum_s k^(S-1-s) (1-k) stat_s, and each process adds its own
passes' terms. Darknet's `-gpus N` differs: each GPU trains its own batch, the rate is multiplied by
N and the weights are averaged every 4 iterations (network_kernels.cu:575-677).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DataParallel", "active"]


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DataParallel:
    """The share of one process, and the reductions that make the processes one trainer."""

    def __init__(self, subdivisions: int) -> None:
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        if subdivisions < self.world:
            raise ValueError(f"subdivisions={subdivisions} is less than the {self.world} "
                             f"processes: each process runs whole subdivisions of the batch; "
                             f"raise subdivisions to at least {self.world}")
        self.subdivisions = subdivisions
        self.current = 0  # the pass being run
        self._rolls: list[tuple[nn.Module, int, Tensor, Tensor, float]] = []

    def mine(self, s: int) -> bool:
        return s % self.world == self.rank

    def roll(self, bn: nn.Module, mean: Tensor, var: Tensor, keep: float) -> None:
        """The Roll hook of darkcfg.train.batchnorm: collect, combine in :meth:`reduce`."""
        self._rolls.append((bn, self.current, mean.detach(), var.detach(), keep))

    def reduce(self, params: Iterable[nn.Parameter], loss: float, device: torch.device) -> float:
        """Sum the gradients, the rolling-statistics terms and the loss over the processes."""
        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for p, g in zip(params, grads):
                p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
                offset += g.numel()
        self._reduce_rolls(device)
        total = torch.tensor([loss], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return float(total)

    def _reduce_rolls(self, device: torch.device) -> None:
        modules = self._bn_modules()
        if not modules:
            return
        S = self.subdivisions
        terms = {id(bn): [torch.zeros_like(bn.running_mean), torch.zeros_like(bn.running_var)]
                 for bn in modules}
        keeps = {}
        for bn, s, mean, var, keep in self._rolls:
            w = keep ** (S - 1 - s) * (1 - keep)
            terms[id(bn)][0].add_(mean, alpha=w)
            terms[id(bn)][1].add_(var, alpha=w)
            keeps[id(bn)] = keep
        flat = torch.cat([torch.cat(terms[id(bn)]) for bn in modules])
        dist.all_reduce(flat)
        keep_flat = torch.tensor([keeps.get(id(bn), 0.0) for bn in modules], device=device,
                                 dtype=torch.float64)
        dist.all_reduce(keep_flat, op=dist.ReduceOp.MAX)  # a process may have seen none
        offset = 0
        with torch.no_grad():
            for bn, keep in zip(modules, keep_flat.tolist()):
                n = bn.running_mean.numel()
                decay = keep ** S
                bn.running_mean.mul_(decay).add_(flat[offset:offset + n])
                bn.running_var.mul_(decay).add_(flat[offset + n:offset + 2 * n])
                offset += 2 * n
        self._rolls = []

    def _bn_modules(self) -> list[nn.Module]:
        """Every BN module any process rolled, in one order on every process."""
        return self._registered

    def register(self, model: nn.Module, frozen: int) -> None:
        """The BN modules of the layers that train (from `frozen` on), in model order."""
        from ..layers._common import BatchNorm1d, BatchNorm2d

        seen: set[int] = set()
        self._registered = []
        for i, layer in enumerate(model.layers):
            if i < frozen:
                continue
            for m in layer.modules():
                if isinstance(m, (BatchNorm1d, BatchNorm2d)) and id(m) not in seen:
                    seen.add(id(m))
                    self._registered.append(m)
