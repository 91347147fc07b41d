"""`darkcfg train`: Darknet's `detector train` job around :class:`~darkcfg.train.Trainer`.

What train_detector (detector.c:24-420) does, with the same files and names: the iteration comes
from the weights file's `seen` (`--clear` resets it), training stops at max_batches, weights are
written into the .data file's `backup` folder as `<cfg>_last.weights` every `savelast` iterations
(100), `<cfg>_<iteration>.weights` every `saveweights` (1000, or 10000 from max_batches 10000 on),
`<cfg>_final.weights` at the end and, with `--map`, `<cfg>_best.weights`; each line of progress is
Darknet's, and `chart_<cfg>.png` plots the average loss (and mAP) as training goes.

Beyond Darknet: every file is written atomically (a temporary file, then a rename), so a crash, a
full disk or Ctrl-C never leaves a broken checkpoint; `<cfg>_last.state` beside `_last.weights`
keeps what the weights file cannot (the momentum buffers, Darknet's persistent deltas, the data
order and the chart), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from torch import Tensor

from ..errors import CfgError
from .trainer import Trainer

__all__ = ["JobOptions", "TrainJob", "atomic_write", "save_weights_atomic"]

STATE_FORMAT = 1


@dataclass
class JobOptions:
    data: str
    cfg: str
    weights: str | None = None
    clear: bool = False
    calc_map: bool = False
    device: str = "cpu"
    workers: int = 2
    seed: int | None = None
    darknet: str = "gpu"
    map_epochs: int = 4  # Darknet's -mAP_epochs: mAP every this many epochs, at least 100 iterations
    map_every: int | None = None  # override the mAP interval (iterations)
    chart: bool = True
    weights_cfg: str | None = None  # the cfg `weights` was saved with (shape-aware transfer)
    amp: bool = False  # bfloat16 autocast (see Trainer)
    out: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


# -- atomic files ----------------------------------------------------------------------------------

@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on any
    failure (a full disk, Ctrl-C) it is removed and `path` stays as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_weights_atomic(model, path: Path) -> None:
    """Write `model`'s weights to `path` through a temporary file; a failure leaves `path` as
    it was and says so."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return  # data parallel: the processes hold the same weights, the first one writes
    try:
        with atomic_write(path) as tmp:
            model.save_darknet_weights(tmp)
    except OSError as exc:
        raise CfgError(f"cannot save {path}: {exc.strerror or exc}; the previous file is intact")


# -- the job ---------------------------------------------------------------------------------------

class TrainJob:
    """One `darkcfg train` run. `batches(iteration) -> (images, targets)` gives the iteration's
    data, at the network size to train at (the default reads the .data file's train list with
    Darknet's loader, darkcfg.train.data, whose random=1 sizes change every 10 iterations)."""

    def __init__(self, options: JobOptions, model=None, batches=None) -> None:
        from ..datafile import read_data

        self.o = options
        if options.seed is not None:
            torch.manual_seed(options.seed)
        self.data = read_data(options.data)
        self.base = Path(options.cfg).stem  # Darknet's basecfg
        self.backup = Path(self.data.get("backup", "/backup/"))
        self.model = model if model is not None else self._load_model()
        self.trainer = Trainer(self.model, darknet=options.darknet, amp=options.amp)
        self.main = self.trainer.parallel is None or self.trainer.parallel.rank == 0
        net = self.trainer.network.net
        self.init_size = (net.width, net.height)
        self.max_batches = self.trainer.options.max_batches
        self.save_every = self.data.get_int("saveweights",
                                            1000 if self.max_batches < 10000 else 10000)
        self.save_last_every = self.data.get_int("savelast", 100)
        self.batches = batches if batches is not None else self._loader()
        self.avg_loss = -1.0
        self.best_map = 0.0
        self.last_map = 0.0
        self.chart: list[tuple[int, float, float | None]] = []  # iteration, avg loss, mAP
        self.iter_save = self.iter_save_last = self.iter_map = self.trainer.iteration
        self.avg_time = -1.0

    def _say(self, line: str) -> None:
        if self.main:
            self.o.out(line)

    # -- set-up -----------------------------------------------------------------------------------
    def _load_model(self):
        from ..model import build, load
        from ..weights import WeightsHeader

        o = self.o
        if o.weights:
            extra = {"weights_cfg": o.weights_cfg} if o.weights_cfg else {}
            model = load(o.cfg, o.weights, strict=False, **extra)
        else:
            model = build(o.cfg)
        if o.clear:
            model.weights_header = WeightsHeader(0, 2, 5, 0)
        return model.to(o.device)

    def _loader(self) -> Callable[[int], tuple[Tensor, list[Tensor]]]:
        from .data import DetectionData

        data = DetectionData.from_data(self.o.data, self.trainer.network,
                                       seed=self.o.seed if self.o.seed is not None else 0)
        stream: dict[str, object] = {}

        def batches(iteration: int) -> tuple[Tensor, list[Tensor]]:
            # one worker pipeline from the current iteration on; a new one after a jump
            if stream.get("next") != iteration:
                stream["it"] = iter(data.loader(iteration, self.max_batches,
                                                workers=self.o.workers))
            batch = next(stream["it"])
            stream["next"] = iteration + 1
            return batch.images, batch.targets

        return batches

    def _state_path(self, weights: Path) -> Path:
        return weights.with_suffix(".state")

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Train to max_batches; returns the exit status (0; 130 after Ctrl-C)."""
        if self.max_batches <= 0:
            raise CfgError("[net] max_batches is 0: Darknet would not train at all",
                           self.trainer.network.net.loc)
        self.backup.mkdir(parents=True, exist_ok=True)
        if self.o.weights:
            self._restore(Path(self.o.weights))
        t = self.trainer
        try:
            while t.iteration < self.max_batches:
                self._iteration()
        except KeyboardInterrupt:
            self._save_last()
            self._say(f"interrupted: saved {self.backup / (self.base + '_last.weights')} "
                       f"at iteration {t.iteration}")
            return 130
        self._save(self.backup / f"{self.base}_final.weights")
        self._save_last()
        self._draw_chart()
        return 0

    def _iteration(self) -> None:
        t = self.trainer
        start = time.perf_counter()
        images, targets = self.batches(t.iteration)
        load_time = time.perf_counter() - start
        t.resize(images.shape[-1], images.shape[-2])  # random=1: a new size every 10 iterations
        loss = t.step(images, targets)
        if self.avg_loss < 0 or math.isnan(self.avg_loss):
            self.avg_loss = loss
        self.avg_loss = self.avg_loss * 0.9 + loss * 0.1
        it = t.iteration
        seconds = time.perf_counter() - start
        remaining = (self.max_batches - it) * (seconds + load_time) / 3600
        self.avg_time = remaining if self.avg_time < 0 else 0.01 * remaining + 0.99 * self.avg_time
        self._say(f" {it}: {loss:f}, {self.avg_loss:f} avg loss, {t.learning_rate(it - 1):f} rate, "
                   f"{seconds:f} seconds, {it * t.options.batch} images, {self.avg_time:f} "
                   f"hours left")
        map_value = self._maybe_map(it)
        self.chart.append((it, self.avg_loss, map_value))
        self._maybe_save(it)

    def _maybe_map(self, it: int) -> float | None:
        if not self.o.calc_map:
            return None
        every = self.o.map_every or max(100, self.o.map_epochs * self._train_count()
                                        // self.trainer.options.batch)
        if it < self.iter_map + every and it != self.max_batches:
            return None
        self.iter_map = it
        self.last_map = self._evaluate()
        self._say(f"\n mean_average_precision (mAP@0.50) = {self.last_map:f} ")
        if self.last_map >= self.best_map:
            self.best_map = self.last_map
            self._say("New best mAP!")
            self._save(self.backup / f"{self.base}_best.weights")
        return self.last_map

    def _train_count(self) -> int:
        from ..datafile import read_image_list

        return len(read_image_list(self.data.get("train", "data/train.txt")))

    def _evaluate(self) -> float:
        from ..detector_map import evaluate

        self.trainer.resize(*self.init_size)  # Darknet evaluates at the cfg's size
        was = self.model.training
        self.model.eval()
        try:
            result = evaluate(self.o.data, self.model)
        finally:
            self.model.train(was)
        return result.map

    def _maybe_save(self, it: int) -> None:
        if it >= self.iter_save + self.save_every or it % self.save_every == 0:
            self.iter_save = it
            self._save(self.backup / f"{self.base}_{it}.weights")
        if self.save_every > self.save_last_every and (
                it >= self.iter_save_last + self.save_last_every
                or (it % self.save_last_every == 0 and it > 1)):
            self.iter_save_last = it
            self._save_last()
            self._draw_chart()

    # -- checkpoints --------------------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        self._say(f"Saving weights to {path}")
        save_weights_atomic(self.model, path)

    def _save_last(self) -> None:
        if not self.main:
            return
        path = self.backup / f"{self.base}_last.weights"
        self._save(path)
        state = {"format": STATE_FORMAT, "seen": self.trainer.seen,
                 "trainer": self.trainer.state_dict(), "avg_loss": self.avg_loss,
                 "best_map": self.best_map, "chart": [list(c) for c in self.chart],
                 "iter_map": self.iter_map, "iter_save": self.iter_save}
        try:
            with atomic_write(self._state_path(path)) as tmp:
                torch.save(state, tmp)
        except OSError as exc:
            raise CfgError(f"cannot save {self._state_path(path)}: {exc.strerror or exc}; the "
                           f"previous file is intact")

    def _restore(self, weights: Path) -> None:
        """Continue from the sidecar of the weights file when it belongs to it (same seen)."""
        state_path = self._state_path(weights)
        if self.o.clear or not state_path.is_file():
            return
        state = torch.load(state_path, weights_only=True, map_location=self.o.device)
        if state.get("format") != STATE_FORMAT or state.get("seen") != self.trainer.seen:
            return
        self.trainer.load_state_dict(state["trainer"])
        self.avg_loss = state["avg_loss"]
        self.best_map = state["best_map"]
        self.chart = [tuple(c) for c in state["chart"]]
        self.iter_map = state["iter_map"]
        self.iter_save = state["iter_save"]
        self.iter_save_last = self.trainer.iteration
        self._say(f"resumed from {weights} and {state_path} at iteration "
                   f"{self.trainer.iteration}")

    def _max_chart_loss(self) -> float:
        """[net] max_chart_loss (20): the top of the chart's loss axis, as Darknet draws it."""
        from .sections import section_options

        return section_options(self.trainer.network)[0].float("max_chart_loss", 20.0)

    def _draw_chart(self) -> None:
        if not (self.o.chart and self.chart and self.main):
            return
        from .chart import draw_chart

        path = Path(f"chart_{self.base}.png")
        try:
            with atomic_write(path) as tmp:
                draw_chart(self.chart, self.max_batches, tmp, max_loss=self._max_chart_loss())
        except OSError as exc:
            print(f"warning: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
