"""Data-parallel training: two processes on the loopback address (gloo) train the same weights
as one process on the same global batch."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import darkcfg

CFG = """
[net]
batch=4
subdivisions=2
width=64
height=64
channels=3
momentum=0.9
decay=0.0005
learning_rate=0.01
burn_in=2
max_batches=100

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,5, 8,10, 14,12, 20,24, 32,28, 44,50
classes=2
num=6
iou_loss=ciou
"""
ITERATIONS = 3


def _data(it: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + it)
    images = torch.rand(4, 3, 64, 64, generator=g)
    targets = [torch.cat([torch.randint(0, 2, (3, 1), generator=g).float(),
                          torch.rand(3, 2, generator=g) * 0.8 + 0.1,
                          torch.rand(3, 2, generator=g) * 0.4 + 0.05], 1) for _ in range(4)]
    return images, targets


def _train(out: Path) -> list[float]:
    from darkcfg.train import Trainer

    torch.manual_seed(0)
    model = darkcfg.build(CFG)
    trainer = Trainer(model)
    losses = [trainer.step(*_data(it)) for it in range(ITERATIONS)]
    if not dist.is_initialized() or dist.get_rank() == 0:
        model.save_darknet_weights(out)
    return losses


def _worker(rank: int, port: int, out: str, losses_out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        losses = _train(Path(out))
        np.save(f"{losses_out}.{rank}.npy", np.array(losses))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path) -> None:
    single = _train(tmp_path / "single.weights")
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path / "ddp.weights"),
                                      str(tmp_path / "losses")), nprocs=2, start_method="spawn")
    a = np.fromfile(tmp_path / "single.weights", "<f4", offset=20)
    b = np.fromfile(tmp_path / "ddp.weights", "<f4", offset=20)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    for rank in (0, 1):  # every process reports the whole batch's loss
        losses = np.load(tmp_path / f"losses.{rank}.npy")
        np.testing.assert_allclose(losses, single, rtol=1e-4)
    torch.manual_seed(0)
    darkcfg.build(CFG).save_darknet_weights(tmp_path / "init.weights")
    init = np.fromfile(tmp_path / "init.weights", "<f4", offset=20)
    assert np.abs(a - init).max() > 1e-3  # the runs trained: the comparison means something


def test_one_process_group_is_not_data_parallel() -> None:
    from darkcfg.train import Trainer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    try:
        assert Trainer(darkcfg.build(CFG)).parallel is None
    finally:
        dist.destroy_process_group()


def test_more_processes_than_subdivisions_is_refused() -> None:
    from unittest import mock

    from darkcfg.train.distributed import DataParallel

    with mock.patch.object(dist, "get_rank", return_value=0), \
            mock.patch.object(dist, "get_world_size", return_value=4):
        with pytest.raises(ValueError, match=r"^subdivisions=2 is less than the 4 processes: "
                                             r"each process runs whole subdivisions"):
            DataParallel(2)
