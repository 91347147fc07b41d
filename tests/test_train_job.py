"""The `darkcfg train` job around the Trainer: files, schedule, resume, faults."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.errors import CfgError
from darkcfg.train import TrainingError
from darkcfg.train.job import JobOptions, TrainJob

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
max_batches=6

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
stride=4
pad=1
activation=leaky

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
"""


def batches(iteration: int, width: int = 64, height: int = 64):
    """Deterministic data per iteration, as a seeded loader gives."""
    g = torch.Generator().manual_seed(1000 + iteration)
    images = torch.rand(4, 3, height, width, generator=g)
    targets = [torch.cat([torch.randint(0, 2, (2, 1), generator=g).float(),
                          torch.rand(2, 2, generator=g) * 0.8 + 0.1,
                          torch.rand(2, 2, generator=g) * 0.4 + 0.05], 1) for _ in range(4)]
    return images, targets


@pytest.fixture
def job_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes.cfg").write_text(CFG)
    (tmp_path / "train.txt").write_text("a.png\nb.png\n")
    (tmp_path / "obj.data").write_text("classes=2\ntrain=train.txt\nvalid=train.txt\n"
                                       "names=obj.names\nbackup=backup\nsavelast=2\n"
                                       "saveweights=3\n")
    return tmp_path


def _job(tmp_path: Path, weights: str | None = None, lines: list | None = None, **kw) -> TrainJob:
    out = lines.append if lines is not None else (lambda line: None)
    source = kw.pop("batches", batches)
    options = JobOptions("obj.data", "shapes.cfg", weights, seed=0, out=out, **kw)
    return TrainJob(options, batches=source)


def _floats(path: Path) -> np.ndarray:
    return np.fromfile(path, "<f4", offset=20)


def _seen(path: Path) -> int:
    return int(np.frombuffer(path.read_bytes()[12:20], "<u8")[0])


def test_job_writes_darknets_files_and_lines(job_files) -> None:
    lines: list[str] = []
    assert _job(job_files, lines=lines).run() == 0
    backup = job_files / "backup"
    names = sorted(p.name for p in backup.iterdir())
    assert names == ["shapes_3.weights", "shapes_6.weights", "shapes_final.weights",
                     "shapes_last.state", "shapes_last.weights"]
    assert _seen(backup / "shapes_final.weights") == 6 * 4
    assert _seen(backup / "shapes_3.weights") == 3 * 4
    assert (job_files / "chart_shapes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    progress = [line for line in lines if not line.startswith("Saving weights to ")]
    assert lines.count("Saving weights to backup/shapes_last.weights") == 4  # 2, 4, 6, end
    assert "Saving weights to backup/shapes_final.weights" in lines
    lines = progress
    assert len(lines) == 6
    first = lines[0].split()
    assert first[0] == "1:" and first[3:5] == ["avg", "loss,"] and first[6] == "rate,"
    # burn_in=2, power 4: the first update's rate is lr * (1/2)^4
    assert float(first[5]) == pytest.approx(0.01 / 16, rel=1e-6)
    assert "4 images" in lines[0] and "24 images" in lines[5]


def test_resumed_run_equals_uninterrupted_run(job_files) -> None:
    assert _job(job_files).run() == 0
    whole = _floats(job_files / "backup" / "shapes_final.weights")
    for p in (job_files / "backup").iterdir():
        p.unlink()

    def interrupted(iteration: int):
        if iteration == 4:
            raise KeyboardInterrupt
        return batches(iteration)

    lines: list[str] = []
    assert _job(job_files, lines=lines, batches=interrupted).run() == 130
    last = job_files / "backup" / "shapes_last.weights"
    assert _seen(last) == 4 * 4 and lines[-1].startswith("interrupted: saved ")
    assert lines[-2] == "Saving weights to backup/shapes_last.weights"
    lines.clear()
    assert _job(job_files, weights=str(last), lines=lines).run() == 0
    assert lines[0] == f"resumed from {last} and {last.with_suffix('.state')} at iteration 4"
    resumed = _floats(job_files / "backup" / "shapes_final.weights")
    np.testing.assert_allclose(resumed, whole, rtol=1e-5, atol=1e-6)


def test_resuming_without_the_state_file_is_not_the_same_run(job_files) -> None:
    """The sidecar matters: without it momentum restarts at zero."""
    assert _job(job_files).run() == 0
    whole = _floats(job_files / "backup" / "shapes_final.weights")

    def stop_at_4(iteration):
        if iteration == 4:
            raise KeyboardInterrupt
        return batches(iteration)

    for p in (job_files / "backup").iterdir():
        p.unlink()
    _job(job_files, batches=stop_at_4).run()
    last = job_files / "backup" / "shapes_last.weights"
    last.with_suffix(".state").unlink()
    _job(job_files, weights=str(last)).run()
    assert not np.allclose(_floats(job_files / "backup" / "shapes_final.weights"), whole,
                           rtol=1e-5, atol=1e-6)


def test_clear_restarts_the_count(job_files) -> None:
    assert _job(job_files).run() == 0
    final = job_files / "backup" / "shapes_final.weights"
    lines: list[str] = []
    assert _job(job_files, weights=str(final), lines=lines, clear=True).run() == 0
    progress = [line for line in lines if line.startswith(" ")]
    assert len(progress) == 6 and progress[0].startswith(" 1: ")
    lines.clear()
    assert _job(job_files, weights=str(final), lines=lines).run() == 0
    assert not any(line.startswith(" ") for line in lines)  # seen at max_batches: no iteration


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(job_files) -> None:
    job = _job(job_files)

    def poisoned(iteration):
        if iteration == 4:
            with torch.no_grad():
                job.model.layers[1].conv.weight.fill_(float("inf"))
        return batches(iteration)

    job.batches = poisoned
    with pytest.raises(TrainingError, match=r"^the loss became nan in iteration 4; the first "
                                            r"layer with a non-finite output is layer 1 "):
        job.run()
    last = job_files / "backup" / "shapes_last.weights"
    assert _seen(last) == 4 * 4 and np.isfinite(_floats(last)).all()


def test_full_disk_keeps_the_previous_file(job_files, monkeypatch) -> None:
    job = _job(job_files)
    calls = {"n": 0}
    real = job.model.save_darknet_weights

    def save(path, **kw):
        calls["n"] += 1
        if calls["n"] > 1:  # the first save (_last at iteration 2) succeeds
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, **kw)

    monkeypatch.setattr(job.model, "save_darknet_weights", save)
    with pytest.raises(CfgError, match=r"^cannot save backup/shapes_3.weights: No space left on "
                                       r"device; the previous file is intact$"):
        job.run()
    last = job_files / "backup" / "shapes_last.weights"
    assert _seen(last) == 2 * 4
    assert sorted(p.name for p in (job_files / "backup").iterdir()) == \
        ["shapes_last.state", "shapes_last.weights"]  # no temporary file left behind


def test_amp_trains_close_to_float32() -> None:
    """bfloat16 autocast is a documented deviation: close to the float32 iteration, not equal."""
    from darkcfg.train import Trainer

    losses = {}
    for amp in (False, True):
        torch.manual_seed(0)
        trainer = Trainer(darkcfg.build(CFG), amp=amp)
        losses[amp] = [trainer.step(*batches(it, 64, 64)) for it in range(3)]
        assert trainer.engine.amp is amp
    np.testing.assert_allclose(losses[True], losses[False], rtol=2e-2)
    assert losses[True] != losses[False]  # it did run in bfloat16


def test_a_batch_at_another_size_resizes_the_network(job_files) -> None:
    """random=1: the loader's batches change size every 10 iterations; the job follows them."""
    sizes = []
    job = _job(job_files, batches=lambda it: batches(it, *((96, 96) if it >= 3 else (64, 64))))
    real_step = job.trainer.step

    def step(images, targets):
        sizes.append((job.trainer.network.net.width, images.shape[-1]))
        return real_step(images, targets)

    job.trainer.step = step
    assert job.run() == 0
    assert sizes == [(64, 64)] * 3 + [(96, 96)] * 3
