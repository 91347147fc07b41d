"""Anchors by k-means over a dataset's label boxes, as Darknet's `detector calc_anchors` does.

Darknet (detector.c ``calc_anchors``, matrix.c ``do_kmeans``) reads every label box of the
``train=`` list, scales its width and height to the network size (float32), and clusters the
(w, h) pairs with distance ``1 - IoU`` of boxes sharing a corner:

- start: the first K boxes of a Fisher-Yates shuffle driven by C's ``rand()`` (``sample``);
- repeat up to 1000 times: assign each box to its nearest centre (the first of equal
  distances; stop when no assignment changes, also on the first pass), then move each centre to
  the float32 mean of its boxes (a centre with no box, or a coordinate that averages to 0,
  keeps its old value); with K = 1 the first centre is moved once before the loop;
- sort the centres by area (stable), and report each box's best IoU, averaged in float32.

Darknet seeds ``rand()`` with ``srand(time(0))``, so two runs differ. darkcfg repeats glibc's
``rand()`` (:class:`GlibcRandom`) from a seed: ``seed=S`` gives the anchors a Darknet built with
glibc gives when its ``srand`` receives S, so a Darknet run started at Unix time T is
``seed=T``. Without a seed the current time is used, as Darknet does (the result says which).
Darknet built with MSVC uses another ``rand()``, so there only the procedure is the same.

No torch here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .datafile import Labels, label_path, label_path_note, read_data, read_image_list, read_labels
from .errors import CfgError, warn, warn_at, warning_budget

__all__ = ["GlibcRandom", "AnchorResult", "calc_anchors", "kmeans", "anchor_boxes",
           "format_anchors"]

_F32 = np.float32
_DEFAULT_TRAIN = "data/train.list"  # calc_anchors' default when the .data has no train=
MAX_ITERATIONS = 1000


class GlibcRandom:
    """glibc's ``srand``/``rand`` (the TYPE_3 additive feedback generator): the same numbers
    as C's ``rand()`` on Linux after ``srand(seed)``."""

    def __init__(self, seed: int) -> None:
        seed = int(seed) & 0xFFFFFFFF or 1  # unsigned int; glibc takes 1 for 0
        state = [_to_int32(seed)]
        for _ in range(1, 31):
            word = state[-1]
            hi, lo = _c_div(word, 127773), _c_mod(word, 127773)
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += 2147483647
            state.append(word)
        self._r = [v & 0xFFFFFFFF for v in state]
        self._f, self._b = 3, 0  # front and rear pointers (rand_sep = 3)
        for _ in range(310):  # glibc discards 10 * 31 outputs
            self.rand()

    def rand(self) -> int:
        """The next ``rand()``: 0 .. 2**31 - 1."""
        r = self._r
        r[self._f] = (r[self._f] + r[self._b]) & 0xFFFFFFFF
        out = r[self._f] >> 1
        self._f = (self._f + 1) % 31
        self._b = (self._b + 1) % 31
        return out


def _to_int32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def _c_div(a: int, b: int) -> int:
    """C's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _c_mod(a: int, b: int) -> int:
    return a - b * _c_div(a, b)


# --- the boxes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Boxes:
    sizes: np.ndarray  # (n, 2) float32 w * width, h * height
    counters: list[int]
    images: int


def anchor_boxes(data: str | os.PathLike, width: int, height: int) -> _Boxes:
    """Every label box of the .data file's ``train=`` list (default ``data/train.list``) as
    Darknet's calc_anchors reads them: (w * width, h * height) in float32, and the boxes per
    class (``classes=``, default 1, grown to the largest class id + 1). Problems are warnings."""
    parsed = read_data(data)
    for note in parsed.notes:
        warn(note)
    train = parsed.get("train")
    if train is None:
        warn(f"{data} has no train= line; Darknet's calc_anchors then reads {_DEFAULT_TRAIN}")
        train = _DEFAULT_TRAIN
    try:
        images = read_image_list(train)
    except CfgError as exc:
        raise CfgError(f"{exc.msg} (train= of {data})") from None
    if not images:
        raise CfgError(f"the image list {train} (train= of {data}) is empty: no boxes to "
                       f"cluster")
    counters = [0] * max(parsed.get_int("classes", 1), 0)
    sizes: list[np.ndarray] = []
    missing = odd = 0
    with warning_budget(50):
        for number, path in enumerate(images, 1):
            label = label_path(path)
            labels = _labels(train, number, path, label)
            if labels is None:
                missing += 1
                continue
            for note in labels.notes:
                warn_at(f"{note}; used as written, as Darknet does" if note.kind == "row"
                        else str(note))
            odd += sum(1 for note in labels.notes if note.kind == "row")
            _count(labels, counters, label)
            sizes.append(np.stack((labels.boxes[:, 2] * _F32(width),
                                   labels.boxes[:, 3] * _F32(height)), 1).astype(_F32))
    if missing:
        warn(f"{missing} of {len(images)} label files are missing or unnamed (Darknet lists "
             f"them in bad.list)")
    if odd:
        warn(f"{odd} label row{'s' if odd != 1 else ''} with x, y, w or h outside (0, 1] "
             f"{'are' if odd != 1 else 'is'} used as written, as Darknet does")
    boxes = np.concatenate(sizes) if sizes else np.zeros((0, 2), _F32)
    return _Boxes(boxes, counters, len(images))


def _labels(train: str, number: int, path: str, label: str) -> Labels | None:
    if not path:
        warn_at(f"{train} line {number} is empty, so names no image: 0 boxes")
        return None
    problem = label_path_note(path, label)
    labels = None if problem else read_labels(label)
    if labels is None:
        warn_at(f"{problem or f'no label file {label} for image {path}'}: 0 boxes")
    return labels


def _count(labels: Labels, counters: list[int], path: str) -> None:
    """counters_per_class: grown to the largest id + 1, as Darknet grows it."""
    for line, cls in zip(labels.lines, labels.ids.tolist()):
        if cls < 0:
            warn_at(f"{path} line {line}: class {cls} is negative; not counted (Darknet "
                    f"writes outside its counter array)")
            continue
        if cls >= len(counters):
            counters.extend([0] * (cls + 1 - len(counters)))
        counters[cls] += 1


# --- k-means -----------------------------------------------------------------------------------

def _ious(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """IoU of corner-aligned boxes (w, h), float32, (n, k), as matrix.c's dist computes it."""
    x, y = boxes[:, None, :], centers[None, :, :]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mw = np.where(x[..., 0] < y[..., 0], x[..., 0], y[..., 0])
        mh = np.where(x[..., 1] < y[..., 1], x[..., 1], y[..., 1])
        inter = mw * mh
        return (inter / ((x[..., 0] * x[..., 1] + y[..., 0] * y[..., 1]) - inter)).astype(_F32)


def _distances(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """matrix.c's dist: 1 - IoU."""
    return (_F32(1) - _ious(boxes, centers)).astype(_F32)


def _closest(dist: np.ndarray) -> np.ndarray:
    """closest_center: start at centre 0, move on a strictly smaller distance (NaN never)."""
    best = np.zeros(dist.shape[0], np.int64)
    best_d = dist[:, 0].copy()
    for j in range(1, dist.shape[1]):
        closer = dist[:, j] < best_d
        best[closer] = j
        best_d[closer] = dist[closer, j]
    return best


def _maximize(boxes: np.ndarray, assign: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """kmeans_maximization: float32 sums in box order, over the counts; zeros keep the old."""
    sums = np.zeros_like(centers)
    np.add.at(sums, assign, boxes)  # unbuffered, in index order: the C loop's float32 sums
    counts = np.bincount(assign, minlength=len(centers))
    new = np.where(counts[:, None] > 0, sums / counts[:, None].astype(_F32), sums).astype(_F32)
    return np.where(new == 0, centers, new)


def kmeans(boxes: np.ndarray, k: int, rng: GlibcRandom) -> tuple[np.ndarray, int]:
    """do_kmeans on (n, 2) float32 sizes: the k centres (not sorted) and the iterations."""
    boxes = np.asarray(boxes, _F32)
    n = len(boxes)
    order = list(range(n))
    for i in range(n - 1, -1, -1):  # sample(): Fisher-Yates with rand() % (i + 1)
        j = rng.rand() % (i + 1)
        order[i], order[j] = order[j], order[i]
    centers = boxes[order[:k]].copy()
    assign = np.zeros(n, np.int64)
    if k == 1:
        centers = _maximize(boxes, assign, centers)
    iterations = 0
    while iterations < MAX_ITERATIONS:
        new = _closest(_distances(boxes, centers))
        converged = bool((new == assign).all())
        assign = new
        if converged:
            break
        centers = _maximize(boxes, assign, centers)
        iterations += 1
    return centers, iterations


# --- the command -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnchorResult:
    """`anchors` (k, 2) float32 sorted by area; `average_iou` in percent (float32, as Darknet
    prints it); `counters_per_class` boxes per class; `seed` the ``srand`` seed used."""

    anchors: np.ndarray
    average_iou: float
    counters_per_class: list[int]
    iterations: int
    boxes: int
    images: int
    seed: int
    width: int
    height: int

    def cfg_line(self) -> str:
        """``anchors = ...`` as Darknet prints it: whole pixels when width > 32, else 4
        decimals."""
        spec = "3.0f" if self.width > 32 else "2.4f"
        return "anchors = " + ", ".join(f"{float(w):{spec}},{float(h):{spec}}"
                                        for w, h in self.anchors)

    def as_dict(self) -> dict:
        return {"anchors": [[float(w), float(h)] for w, h in self.anchors],
                "average_iou": self.average_iou, "counters_per_class": self.counters_per_class,
                "iterations": self.iterations, "boxes": self.boxes, "images": self.images,
                "seed": self.seed, "width": self.width, "height": self.height}


def calc_anchors(data: str | os.PathLike, clusters: int, width: int, height: int, *,
                 seed: int | None = None) -> AnchorResult:
    """Darknet's ``detector calc_anchors DATA -num_of_clusters K -width W -height H`` with
    ``srand(seed)`` (default: the current Unix time, as Darknet)."""
    if clusters < 1:
        raise ValueError(f"the number of clusters must be at least 1, not {clusters}")
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive (the network size), not "
                         f"{width}x{height}")
    seed = int(time.time()) if seed is None else int(seed)
    found = anchor_boxes(data, width, height)
    n = len(found.sizes)
    if n < clusters:
        raise CfgError(f"{clusters} clusters need at least {clusters} label boxes; the train "
                       f"list of {data} has {n}")
    centers, iterations = kmeans(found.sizes, clusters, GlibcRandom(seed))
    area = centers[:, 0] * centers[:, 1]
    centers = centers[np.argsort(area, kind="stable")]
    return AnchorResult(centers, _average_iou(found.sizes, centers), found.counters,
                        iterations, n, found.images, seed, int(width), int(height))


def _average_iou(boxes: np.ndarray, centers: np.ndarray) -> float:
    """Each box's IoU with its nearest centre (distance starts at FLT_MAX, so a NaN never
    wins), IoUs outside [0, 1] left out, float32 sum in box order, 100 * sum / boxes."""
    iou = _ious(boxes, centers)
    dist = (_F32(1) - iou).astype(_F32)
    best = np.full(len(boxes), np.finfo(_F32).max, _F32)
    best_iou = np.zeros(len(boxes), _F32)
    for j in range(centers.shape[0]):
        closer = dist[:, j] < best
        best[closer] = dist[closer, j]
        best_iou[closer] = iou[closer, j]
    valid = (best_iou <= 1) & (best_iou >= 0)
    total = np.cumsum(best_iou[valid], dtype=_F32)[-1] if valid.any() else _F32(0)
    return float(_F32(_F32(100) * total) / _F32(len(boxes)))


def format_anchors(r: AnchorResult) -> str:
    """Darknet's printout, without its progress counter and the files it writes."""
    return "\n".join([
        f" num_of_clusters = {len(r.anchors)}, width = {r.width}, height = {r.height} ",
        f" read labels from {r.images} images ",
        f" loaded boxes: {r.boxes} ",
        f" srand seed = {r.seed} ",
        f" iterations = {r.iterations} ",
        "counters_per_class = " + ", ".join(str(c) for c in r.counters_per_class),
        f" avg IoU = {r.average_iou:2.2f} % ",
        r.cfg_line(),
    ])

