"""One batched pipeline for `detect`, `map` and `valid`: images decoded in worker processes,
the forward in batches on the fastest exact path, Darknet's decode and NMS per image.

- :class:`ImageDataset` turns image paths into exactly what Darknet feeds its network (Pillow's
  decode, Darknet's `resize_image` or `letterbox_image` from :mod:`darkcfg.image`), with each
  image's original size. An image that cannot be read is a :class:`Sample` with its one-line
  error, and (``stand_in=True``) Darknet's stand-in, a black 10x10 image, so the run goes on.
- :class:`darkcfg.video.VideoFrames` does the same for the frames of a video file.
- :func:`prepare_model` folds BatchNorm and switches to channels-last: the fast path, which is
  also what Darknet runs (it fuses BN before detecting).
- :func:`run` feeds batches through the model and yields one :class:`Result` per image, in
  input order: its detections after Darknet's `get_network_boxes` and NMS (:class:`Settings`;
  :data:`TEST`, :data:`MAP` and :data:`VALID` are Darknet's three commands' settings).

Batched forwards agree with per-image ones to float rounding (kernels differ between batch
sizes), not bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from . import image as _image
from .detection import RawDetections, decode, nms, nms_settings
from .model import DarknetModel
from .sources import SourceError, open_image

__all__ = ["Settings", "TEST", "MAP", "VALID", "Preprocess", "Sample", "Batch", "Result",
           "ImageDataset", "default_workers",
           "prepare_model", "loader", "run", "run_loader", "progress_bar"]

STAND_IN_SIZE = 10  # Darknet's load_image substitutes make_image(10, 10, c) for a bad file


# --- settings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """What a Darknet command passes to `get_network_boxes` and NMS.

    `thresh`: objectness/probability threshold; `hier_thresh`: the yolo9000 tree's; `nms`: the
    overlap threshold (0: no NMS), of the kind the cfg's last detection layer names;
    `letterbox`: None for the cfg's ``letter_box``. `unit_size`: pass a 1x1 image size unless
    letterboxed, as Darknet's map does (boxes stay relative; `[detection]` heads too)."""

    thresh: float = 0.25
    hier_thresh: float = 0.5
    nms: float = 0.45
    letterbox: bool | None = None
    unit_size: bool = False


# hier_thresh: map passes 0 and demo its thresh, but the only head that reads it ([region]'s
# yolo9000 tree, custom_get_region_detections) hard-codes 0.5, which decode takes it for.
TEST = Settings()  # detector test (and demo)
MAP = Settings(thresh=0.005, hier_thresh=0.5, nms=0.45, unit_size=True)  # validate_detector_map
VALID = Settings(thresh=0.001, hier_thresh=0.5, nms=0.6)  # validate_detector


@dataclass(frozen=True)
class Preprocess:
    """The network input Darknet makes from an image: its size, channels, letterbox or not."""

    width: int
    height: int
    channels: int
    letterbox: bool

    @staticmethod
    def of(model: DarknetModel, letterbox: bool | None = None) -> Preprocess:
        net = model.network.net
        return Preprocess(int(net.width), int(net.height), int(net.channels),
                          bool(net.letter_box if letterbox is None else letterbox))

    def __call__(self, im: Tensor) -> Tensor:
        return _image.network_input(im, self.width, self.height, self.letterbox)


# --- samples and batches -----------------------------------------------------------------------

@dataclass
class Sample:
    """One input: `x` the network input (None when unreadable without a stand-in), `size` the
    original (width, height), `error` the one-line reason it could not be read, `pixels` the
    original RGB uint8 (H, W, 3) when asked for (to draw on)."""

    index: int
    path: str
    x: Tensor | None
    size: tuple[int, int]
    error: str | None = None
    pixels: np.ndarray | None = None


@dataclass
class Batch:
    """Samples in input order; `x` stacks the inputs of those that have one (`rows`)."""

    samples: list[Sample]
    x: Tensor | None
    rows: list[int] = field(default_factory=list)


def _collate(samples: list[Sample]) -> Batch:
    """Stack in the worker, so the batch crosses to the main process as one shared tensor."""
    rows = [i for i, s in enumerate(samples) if s.x is not None]
    x = torch.stack([samples[i].x for i in rows]) if rows else None
    for s in samples:
        s.x = None
    return Batch(samples, x, rows)


def _read(path: str, prep: Preprocess, keep_pixels: bool) -> tuple[Tensor, tuple[int, int],
                                                                    np.ndarray | None]:
    if not str(path):
        raise SourceError("an empty path names no image")
    picture = open_image(path)
    im = _image.load_image(picture, channels=prep.channels)
    pixels = np.asarray(picture.convert("RGB")) if keep_pixels else None
    return prep(im), (int(im.shape[-1]), int(im.shape[-2])), pixels


def _stand_in(prep: Preprocess) -> Tensor:
    return prep(torch.zeros(prep.channels, STAND_IN_SIZE, STAND_IN_SIZE))


class ImageDataset(Dataset):
    """Image paths → :class:`Sample`: Darknet's network input and the original size.

    A file that cannot be read gives a sample with `error` set (one line naming the file) and,
    with `stand_in`, Darknet's black 10x10 image as its input (its size is then 10x10)."""

    def __init__(self, paths: Sequence[str | os.PathLike], prep: Preprocess, *,
                 stand_in: bool = False, keep_pixels: bool = False) -> None:
        self.paths = [str(p) for p in paths]
        self.prep = prep
        self.stand_in = stand_in
        self.keep_pixels = keep_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        try:
            x, size, pixels = _read(path, self.prep, self.keep_pixels)
        except SourceError as exc:
            x = _stand_in(self.prep) if self.stand_in else None
            return Sample(index, path, x, (STAND_IN_SIZE, STAND_IN_SIZE), str(exc))
        return Sample(index, path, x, size, None, pixels)


# --- the model ---------------------------------------------------------------------------------

def prepare_model(model: DarknetModel, *, copy_model: bool = True) -> DarknetModel:
    """The fastest exact path: BN folded into the convolutions (as Darknet's
    fuse_conv_batchnorm, in float64) and channels-last memory, in eval mode. With `copy_model`
    an unfused model is copied first, so the caller's model keeps its BN layers."""
    if not model.fused:
        model = copy.deepcopy(model) if copy_model else model
        model.fuse()
    return model.eval().to(memory_format=torch.channels_last)


def default_workers() -> int:
    """min(4, CPUs - 2): decoding overlaps the forward without taking cores from it. On 2 cores
    the forward's threads need both, and worker processes only compete with them
    (tools/bench_map.py: yolov3-tiny map at 19.9 images/s in-process, 10.9 with 2 workers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (cpus or 1) - 2))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the main process's forward owns the cores


def loader(dataset: Dataset, *, batch: int = 8, workers: int | None = None) -> DataLoader:
    """A DataLoader of :class:`Batch` es over `dataset`, decoding in `workers` processes
    (default :func:`default_workers`; 0 decodes in this process)."""
    if batch < 1:
        raise ValueError(f"batch {batch}: must be at least 1")
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise ValueError(f"workers {workers}: must be 0 or more")
    if isinstance(dataset, IterableDataset):
        workers = min(workers, 1)
    else:
        workers = min(workers, max(0, len(dataset) - 1))  # one image: no process to start
    return DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=_collate,
                      worker_init_fn=_worker_init if workers else None,
                      prefetch_factor=2 if workers else None)


# --- running -----------------------------------------------------------------------------------

@dataclass
class Result:
    """One image's outcome: its detections after decode and NMS (`raw`, Darknet's order; None
    when it could not be read and has no stand-in), `size` (width, height) of the image, and
    `error`, the one-line reason it could not be read."""

    index: int
    path: str
    size: tuple[int, int]
    raw: RawDetections | None
    error: str | None = None
    pixels: np.ndarray | None = None


def run(model: DarknetModel, paths: Sequence[str | os.PathLike], settings: Settings = TEST, *,
        batch: int = 8, workers: int | None = None, stand_in: bool = False,
        keep_pixels: bool = False, progress: bool | TextIO = False,
        prepare: bool = True) -> Iterator[Result]:
    """Detections for every image of `paths`, one :class:`Result` each, in order.

    `model` is prepared (:func:`prepare_model`, on a copy unless already fused) unless
    `prepare` is False. `progress`: a progress bar on stderr (or this stream) when there is
    more than one image. See :class:`ImageDataset` for `stand_in` and `keep_pixels`."""
    prep = Preprocess.of(model, settings.letterbox)
    dataset = ImageDataset(paths, prep, stand_in=stand_in, keep_pixels=keep_pixels)
    results = run_loader(model, loader(dataset, batch=batch, workers=workers), settings,
                         prepare=prepare)
    yield from progress_bar(results, len(dataset), progress)


def run_loader(model: DarknetModel, batches: Iterable[Batch], settings: Settings = TEST, *,
               prepare: bool = True) -> Iterator[Result]:
    """Each batch through the model, then Darknet's decode and NMS per image."""
    if prepare:
        model = prepare_model(model)
    letter = bool(model.network.net.letter_box if settings.letterbox is None
                  else settings.letterbox)
    nms_of = nms_settings(model.network)
    param = next(model.parameters(), None)
    for b in batches:
        raws: list[RawDetections | None] = [None] * len(b.samples)
        if b.x is not None:
            x = b.x if param is None else b.x.to(param.device, param.dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                outputs = model(x)
            sizes = [b.samples[r].size for r in b.rows]
            if settings.unit_size and not letter:
                sizes = [(1, 1)] * len(sizes)
            with _one_thread():
                decoded = decode(model, outputs, sizes, thresh=settings.thresh,
                                 hier_thresh=settings.hier_thresh, letterbox=letter,
                                 input_size=(int(x.shape[-1]), int(x.shape[-2])))
                for r, raw in zip(b.rows, decoded):
                    raws[r] = nms(raw, settings.nms, kind=nms_of.kind, beta=nms_of.beta,
                                  classes=nms_of.classes)
        for s, raw in zip(b.samples, raws):
            yield Result(s.index, s.path, s.size, raw, s.error, s.pixels)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Decode and NMS work on small tensors: on one thread they cost a fifth of the CPU time
    they take on several (measured with yolov3-tiny at 416), time the forward can use."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


# --- progress ----------------------------------------------------------------------------------

def progress_bar(items: Iterable, total: int | None, stream: bool | TextIO = True,
                 unit: str = "image") -> Iterator:
    """`items`, with a progress bar on stderr (or `stream`) when there is more than one and the
    stream is a terminal (tqdm's rule; no bar in logs and pipes). tqdm when installed (the
    ``progress`` extra), else a plain counter."""
    if stream is True:
        stream = sys.stderr
    if not stream or (total is not None and total <= 1) or not _is_terminal(stream):
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _counter(items, total, stream, unit)
        return
    with tqdm(items, total=total, file=stream, unit=unit, dynamic_ncols=True,
              leave=False) as bar:
        yield from bar


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _counter(items: Iterable, total: int | None, stream: TextIO, unit: str) -> Iterator:
    n = 0
    for n, item in enumerate(items, 1):
        stream.write(f"\r{n}/{total if total is not None else '?'} {unit}s")
        stream.flush()
        yield item
    if n:
        stream.write("\r\x1b[K")
        stream.flush()
