"""The detector's training data as Darknet's `detector train` loads it, as a torch DataLoader.

What Darknet does (AlexeyAB/darknet 59596d78): train_detector (src/detector.c:23-260) reads the
``train=`` list of the .data file, and each iteration loads ``batch`` images (the cfg's batch=,
all subdivisions) with load_data_detection (src/data.c:1041-1355): every image of the batch is
drawn at random from the whole list, with replacement (get_random_paths_custom, data.c:81-101;
empty lines are drawn again), its label file found by replace_image_to_label and read by
read_boxes, and the image and boxes augmented (:mod:`darkcfg.train.augment`). The batch is
loaded in 6 pieces per GPU (load_threads, data.c:1672; detector.c:168), and each piece tosses
its own coin for mixup or mosaic (data.c:1055). With ``random=`` on the last detection layer a
new network size is drawn every 10 iterations (detector.c:196-250).

What darkcfg adds: every random choice comes from a seed, so the batch of iteration k is a
function of (seed, k, the image list): the same in any worker, with any number of workers, and
after a resume. :meth:`DetectionData.plan` shows which images iteration k uses and
:meth:`DetectionData.state` is what a checkpoint keeps. Bad input is found before training where
it can be: a missing image or label file and a bad label row (class out of range, a coordinate
outside (0, 1], not a number) each skip that image with a warning naming the file (and line);
an image that cannot be decoded is replaced in its slot by another drawn from the seed, and
reported once.

Differences from Darknet, on purpose: numpy's random numbers, not glibc's rand() (same
distributions); an image with a bad label row or no label file is skipped (Darknet trains on it,
dropping a row with a class out of range and clipping the rest, or with no boxes); an unreadable
image is replaced (Darknet leaves the slot empty and crashes); the network size is a function of
the iteration's block of 10 (Darknet restarts its count of 10 when a run restarts, and its first
block after a restart is the largest size); ``--map`` does not reset the size to the cfg's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from ..datafile import label_path, label_path_note, read_data, read_image_list, read_labels
from ..errors import CfgError, warn, warning_budget
from ..graph import Network
from .augment import (MIXUP, MOSAIC, THREADS_PER_GPU, AugmentOptions, Source, augment_sample,
                      read_augment_options, random_size)

__all__ = ["DetectionData", "TrainLoader", "TrainBatch", "IterationPlan", "SlotPlan", "Skipped",
           "ORDERS", "DEFAULT_TRAIN_LIST", "read_pixels", "collate"]

ORDERS = ("random", "epoch")
DEFAULT_TRAIN_LIST = "data/train.txt"  # train_detector's default (detector.c:26)
STATE_FORMAT = "darkcfg-train-data/1"
_WARNINGS_SHOWN = 50  # per-file warnings before they are only counted
_RETRIES = 100  # unreadable images replaced in a row before giving up
# stream tags for the seeded generators: one stream per purpose, never shared
_PLAN, _SLOT, _SIZE, _EPOCH, _RETRY = 1, 2, 3, 4, 5


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


# --- plans ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlotPlan:
    """One image of an iteration's batch: `slot` is its index in the global batch (all ranks),
    `images` the list index of each image combined into it (1; 2 for mixup; 4 for a mosaic:
    top-left, top-right, bottom-left, bottom-right), `use_mixup` what its piece's coin left
    (0, 1 mixup, 3 mosaic), `cut` the mosaic centre."""

    iteration: int
    slot: int
    width: int
    height: int
    images: tuple[int, ...]
    use_mixup: int = 0
    cut: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class IterationPlan:
    """This rank's part of iteration `iteration`: its network size and slots, in batch order."""

    iteration: int
    width: int
    height: int
    slots: tuple[SlotPlan, ...]

    @property
    def images(self) -> list[tuple[int, ...]]:
        """The list indices each slot combines."""
        return [s.images for s in self.slots]


@dataclass(frozen=True)
class Skipped:
    """An image the loader does not use, and why (the message names the file, and the line of a
    bad label row)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass
class TrainBatch:
    """One Darknet iteration: `images` (batch, C, height, width) float32 in [0, 1], `targets`
    one (n_i, 5) float32 tensor [class, x, y, w, h] per image (the Trainer's targets), `paths`
    the files combined into each image, `skipped` the unreadable files replaced in it."""

    iteration: int
    width: int
    height: int
    images: torch.Tensor
    targets: list[torch.Tensor]
    paths: tuple[tuple[str, ...], ...] = ()
    skipped: tuple[Skipped, ...] = ()

    def pin_memory(self) -> TrainBatch:
        """For DataLoader(pin_memory=True)."""
        self.images = self.images.pin_memory()
        self.targets = [t.pin_memory() for t in self.targets]
        return self


@dataclass(frozen=True)
class _Sample:
    image: np.ndarray
    truth: np.ndarray
    paths: tuple[str, ...]
    skipped: tuple[Skipped, ...] = ()


def collate(samples: Sequence[_Sample], plan: SlotPlan | None = None) -> TrainBatch:
    """Stacks one iteration's samples into a :class:`TrainBatch`."""
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    targets = [torch.from_numpy(s.truth) for s in samples]
    first = plan or samples[0]
    iteration = getattr(first, "iteration", -1)
    height, width = images.shape[2:]
    return TrainBatch(iteration, int(width), int(height), images, targets,
                      tuple(s.paths for s in samples),
                      tuple(k for s in samples for k in s.skipped))


# --- decoding -------------------------------------------------------------------------------------

def read_pixels(path: str, channels: int) -> np.ndarray:
    """An image file as OpenCV's imread gives it to load_image_mat_cv (image_opencv.cpp:101-133):
    uint8 (H, W, 3) RGB, or (H, W, 1) grey (cvtColor's 0.299/0.587/0.114 in 14-bit fixed
    point) for channels=1; the EXIF orientation applied, as imread does. Raises OSError or
    PIL's errors for a file Pillow cannot decode."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if channels == 1 and im.mode == "L":
            return np.asarray(im, np.uint8)[:, :, None]
        rgb = np.asarray(im.convert("RGB"), np.uint8)
    if channels == 1:
        r, g, b = (rgb[..., k].astype(np.int32) for k in range(3))
        grey = (r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14
        return grey.astype(np.uint8)[:, :, None]
    return rgb


# --- the dataset ----------------------------------------------------------------------------------

class DetectionData(Dataset):
    """The images of a Darknet train list with their labels, and the plan of every iteration.

    `images`: the list's lines (Darknet's list format; empty lines are not images, as in
    get_random_paths_custom). `network`: the parsed cfg (its [net] and last detection layer
    give the augmentation, batch=, classes and max=). `seed`: every random choice. `order`:
    "random" draws each image of every batch from the whole list with replacement (Darknet);
    "epoch" goes through a new permutation of the list each epoch (each image once per epoch;
    mixup/mosaic partners are still drawn at random). `rank`/`world_size`: this process's share
    of a global batch of batch * world_size images (DDP), `threads`: the pieces that toss their
    own mixup/mosaic coin (Darknet: 6 per GPU). `list_name`: the list's file, for messages.
    Bad images are skipped with a warning each (:attr:`skipped`); an empty list, or one with no
    usable image, is a CfgError.

    The augmentation reads `network` as parsed at the cfg's own size: build this before any
    Trainer.resize (random=1 draws its sizes around that size)."""

    def __init__(self, images: Sequence[str], network: Network, *, seed: int = 0,
                 order: str = "random", rank: int = 0, world_size: int = 1,
                 threads: int | None = None, list_name: str | None = None) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        network = getattr(network, "network", network)  # a DarknetModel gives its network
        from .config import read_train_options

        self.options: AugmentOptions = read_augment_options(network)
        for note in self.options.notes:
            warn(note)
        self.batch = read_train_options(network)[0].batch
        self.seed, self.order = int(seed), order
        self.rank, self.world_size = rank, world_size
        self.threads = threads or THREADS_PER_GPU * world_size
        self.where = f"the image list {list_name}" if list_name else "the image list"
        self.paths: list[str] = []
        self.labels: list[tuple[np.ndarray, np.ndarray]] = []
        self.skipped: list[Skipped] = []
        self._scan(images)
        self._digest = hashlib.sha256("\n".join(self.paths).encode("utf-8", "surrogateescape")
                                      ).hexdigest()
        self._perm: dict[int, np.ndarray] = {}

    @classmethod
    def from_data(cls, data: str | os.PathLike, network: Network, **kwargs) -> DetectionData:
        """The ``train=`` list of a Darknet .data file (default data/train.txt, as Darknet)."""
        datafile = read_data(data)
        for note in datafile.notes:
            warn(note)
        train = datafile.get("train", DEFAULT_TRAIN_LIST)
        network = getattr(network, "network", network)
        try:
            images = read_image_list(train)
        except CfgError as exc:
            raise CfgError(f"{exc.msg} (train= of {data})") from None
        made = cls(images, network, list_name=train, **kwargs)
        classes = datafile.options.get("classes")
        if classes is not None and datafile.get_int("classes", 0) != made.options.classes:
            warn(f"{data} says classes={classes} but the cfg's last detection layer has "
                 f"classes={made.options.classes}; Darknet trains with the layer's")
        return made

    # -- the list -------------------------------------------------------------------------------
    def _scan(self, images: Sequence[str]) -> None:
        lines = [str(p) for p in images]
        if not lines:
            raise CfgError(f"{self.where} is empty")
        with warning_budget(_WARNINGS_SHOWN):
            for path in lines:
                if not path:
                    continue  # get_random_paths_custom draws again on an empty line
                problem, labels = self._check(path)
                if labels is not None:
                    self.paths.append(path)
                    self.labels.append(labels)
                else:
                    self.skipped.append(Skipped(path, problem))
                    warn(f"{problem}; the image is skipped")
        if not self.paths:
            raise CfgError(f"no usable image in {self.where}: "
                           + (f"all {len(self.skipped)} were skipped (the first: "
                              f"{self.skipped[0]})" if self.skipped else "it has only empty "
                              "lines"))
        if self.skipped:
            warn(f"{len(self.skipped)} of {len(self.skipped) + len(self.paths)} images of "
                 f"{self.where} are skipped (DetectionData.skipped lists them, as Darknet's "
                 f"bad.list)")

    def _check(self, path: str) -> tuple[str, tuple[np.ndarray, np.ndarray] | None]:
        """(why the image at `path` cannot be used, None) or ("", its (ids, boxes))."""
        if not os.path.isfile(path):
            what = "is a folder" if os.path.isdir(path) else "does not exist"
            return f"image {path} {what}", None
        label = label_path(path)
        note = label_path_note(path, label)
        if note is not None:
            return note, None
        labels = read_labels(label, self.options.classes)
        if labels is None:
            return f"no label file {label} for image {path}", None
        if labels.notes:
            more = len(labels.notes) - 1
            return f"{labels.notes[0]}{f' (and {more} more)' if more else ''}", None
        return "", (labels.ids.astype(np.int64), labels.boxes.astype(np.float32))

    def __len__(self) -> int:
        return len(self.paths)

    # -- plans ----------------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.batch * self.world_size

    def size(self, iteration: int) -> tuple[int, int]:
        """The network (width, height) of `iteration`: the cfg's, or with random= the size drawn
        for its block of 10 iterations (:func:`darkcfg.train.augment.random_size`)."""
        o = self.options
        if not o.random:
            return o.width, o.height
        block = iteration // 10
        return random_size(_rng(self.seed, _SIZE, block), o, block * 10, first=block == 0)

    def plan(self, iteration: int) -> IterationPlan:
        """Which images iteration `iteration` combines in each of this rank's slots, at which
        size, with which mixup/mosaic choice; a pure function of the seed and the list."""
        w, h = self.size(iteration)
        o, n, count = self.options, self.global_batch, len(self.paths)
        rng = _rng(self.seed, _PLAN, iteration)
        coins = rng.integers(0, 2, size=self.threads)
        picks = rng.integers(0, count, size=(n, 4))
        lo_x, hi_x = int(np.float32(w) * np.float32(0.2)), int(np.float32(w) * np.float32(0.8))
        lo_y, hi_y = int(np.float32(h) * np.float32(0.2)), int(np.float32(h) * np.float32(0.8))
        cut_x = rng.integers(lo_x, max(hi_x, lo_x) + 1, size=n)
        cut_y = rng.integers(lo_y, max(hi_y, lo_y) + 1, size=n)
        if self.order == "epoch":
            picks[:, 0] = self._epoch_picks(iteration * n, n)
        chunk = np.zeros(n, np.int64)  # load_threads' split: piece i has (i+1)n/T - in/T images
        for t in range(self.threads):
            chunk[t * n // self.threads:(t + 1) * n // self.threads] = t
        slots = []
        for i in range(self.rank * self.batch, (self.rank + 1) * self.batch):
            use = o.use_mixup if o.use_mixup in (MIXUP, MOSAIC) and coins[chunk[i]] else 0
            stages = {0: 1, MIXUP: 2, MOSAIC: 4}[use]
            slots.append(SlotPlan(iteration, i, w, h, tuple(int(k) for k in picks[i, :stages]),
                                  use, (int(cut_x[i]), int(cut_y[i]))))
        return IterationPlan(iteration, w, h, tuple(slots))

    def _epoch_picks(self, start: int, n: int) -> np.ndarray:
        count = len(self.paths)
        positions = np.arange(start, start + n)
        out = np.empty(n, np.int64)
        for epoch in np.unique(positions // count):
            if epoch not in self._perm:
                if len(self._perm) > 2:
                    self._perm.clear()
                self._perm[int(epoch)] = _rng(self.seed, _EPOCH, int(epoch)).permutation(count)
            here = positions // count == epoch
            out[here] = self._perm[int(epoch)][positions[here] % count]
        return out

    # -- one slot -------------------------------------------------------------------------------
    def __getitem__(self, slot: SlotPlan) -> _Sample:
        """The augmented image and targets of one slot (what a DataLoader worker computes)."""
        if not isinstance(slot, SlotPlan):
            raise TypeError("DetectionData is indexed by the SlotPlans of plan(iteration); use "
                            "loader() for batches")
        sources, paths, skipped = [], [], []
        for stage, index in enumerate(slot.images):
            source, path, bad = self._source(slot, stage, index)
            sources.append(source)
            paths.append(path)
            skipped += bad
        rng = _rng(self.seed, _SLOT, slot.iteration, slot.slot)
        image, truth = augment_sample(sources, self.options, slot.width, slot.height,
                                      slot.use_mixup, rng, slot.cut)
        return _Sample(image, truth, tuple(paths), tuple(skipped))

    def _source(self, slot: SlotPlan, stage: int, index: int
                ) -> tuple[Source, str, list[Skipped]]:
        """The decoded image `index`; one that cannot be decoded is replaced by another drawn
        from this slot's own stream (so the batch stays a function of the seed)."""
        bad: list[Skipped] = []
        retry = None
        for _ in range(_RETRIES):
            path = self.paths[index]
            try:
                pixels = read_pixels(path, self.options.channels)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - any decoder failure: this file is unusable
                bad.append(Skipped(path, f"cannot read image {path}: {_reason(exc)}"))
                retry = retry or _rng(self.seed, _RETRY, slot.iteration, slot.slot, stage)
                index = int(retry.integers(0, len(self.paths)))
                continue
            ids, boxes = self.labels[index]
            return Source(pixels, ids, boxes), path, bad
        raise CfgError(f"{_RETRIES} images in a row could not be read (the last: {bad[-1]})")

    # -- loading --------------------------------------------------------------------------------
    def loader(self, start_iteration: int = 0, stop_iteration: int | None = None, *,
               workers: int = 0, **dataloader_kwargs) -> TrainLoader:
        """Batches for iterations start_iteration, start_iteration + 1, ... (to stop_iteration,
        exclusive, or forever), decoded and augmented in `workers` processes."""
        return TrainLoader(self, start_iteration, stop_iteration, workers, **dataloader_kwargs)

    def batch_at(self, iteration: int) -> TrainBatch:
        """Iteration `iteration`'s batch, computed here (no workers)."""
        plan = self.plan(iteration)
        return collate([self[s] for s in plan.slots], plan.slots[0])

    # -- state ----------------------------------------------------------------------------------
    def state(self, iteration: int) -> dict:
        """What a checkpoint keeps to resume the data exactly at `iteration` (JSON-able): the
        seed, the order and the list (count and digest), and how far it has gone."""
        done = iteration * self.global_batch
        return {"format": STATE_FORMAT, "seed": self.seed, "order": self.order,
                "iteration": int(iteration), "images": len(self.paths),
                "list_sha256": self._digest, "batch": self.batch,
                "world_size": self.world_size, "threads": self.threads,
                "epoch": done // len(self.paths), "position": done % len(self.paths)}

    def check_state(self, state: dict) -> int:
        """Raises CfgError when `state` (from :meth:`state`) was saved with other data, so a
        resume would not continue the same sequence; returns its iteration."""
        if state.get("format") != STATE_FORMAT:
            raise CfgError(f"not a darkcfg data state (format {state.get('format')!r})")
        mine = self.state(int(state.get("iteration", 0)))
        differ = [f"{k} {state.get(k)!r} (now {mine[k]!r})"
                  for k in ("seed", "order", "images", "list_sha256", "batch", "world_size",
                            "threads") if state.get(k) != mine[k]]
        if differ:
            raise CfgError("the data state was saved with other data, so the resumed run would "
                           "not continue it: " + "; ".join(differ))
        return int(state["iteration"])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image file Pillow can decode"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# --- the loader -----------------------------------------------------------------------------------

class _Plans(torch.utils.data.Sampler):
    """The DataLoader's batch sampler: one list of SlotPlans per iteration."""

    def __init__(self, data: DetectionData, start: int, stop: int | None) -> None:
        self.data, self.start, self.stop = data, start, stop

    def __iter__(self) -> Iterator[list[SlotPlan]]:
        k = self.start
        while self.stop is None or k < self.stop:
            yield list(self.data.plan(k).slots)
            k += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless loader has no length")
        return max(self.stop - self.start, 0)


def _collate(samples: Sequence[_Sample]) -> TrainBatch:
    return collate(samples)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the workers' numpy does the work; no torch thread pools


class TrainLoader:
    """Iterates over :class:`TrainBatch` es, one per iteration, from `start`; warns once per
    unreadable file (:attr:`unreadable` keeps them). `dataloader_kwargs` go to torch's
    DataLoader (pin_memory=, prefetch_factor=, multiprocessing_context=, ...)."""

    def __init__(self, data: DetectionData, start: int = 0, stop: int | None = None,
                 workers: int = 0, **dataloader_kwargs) -> None:
        self.data, self.start, self.stop, self.workers = data, start, stop, workers
        self.dataloader_kwargs = dataloader_kwargs
        self.unreadable = {}
        kwargs = dict(num_workers=workers, collate_fn=_collate)
        if workers:
            kwargs.update(worker_init_fn=_worker_init, persistent_workers=True)
        kwargs.update(dataloader_kwargs)
        self.dataloader = DataLoader(data, batch_sampler=_Plans(data, start, stop), **kwargs)

    def __len__(self) -> int:
        return len(self.dataloader.batch_sampler)

    def __iter__(self) -> Iterator[TrainBatch]:
        k = self.start
        for batch in self.dataloader:
            batch.iteration = k
            for bad in batch.skipped:
                if bad.path not in self.unreadable:
                    self.unreadable[bad.path] = bad
                    warn(f"{bad}; replaced by another image of the list")
            yield batch
            k += 1
