"""Darknet's `detector map` numbers from detections and labels: a pure function, no model.

Detections in, numbers out, computed as Darknet's ``validate_detector_map`` (detector.c)
computes them, so a difference from Darknet's printout is either in the detections or here,
never both (feed it Darknet's own detections to tell which). Each image gives:

- *records*: one per (box, class) with probability > 0, in Darknet's post-NMS box order and
  then class order; each takes, among the image's truths of its class with IoU > `iou_thresh`
  (float32, box.c's arithmetic), the one with the highest IoU (first in file order on a tie).
  A record without a truth that overlaps a same-class *difficult* label by more than
  `iou_thresh` leaves the PR curve.
- the "for conf_thresh" counts, in record order: a record above `thresh` is a TP when it has a
  truth that no earlier record of the image (any probability) has; otherwise an FP (also a
  difficult one). Average IoU is the TPs' IoU sum over TP + FP, in float32.

Then all records, sorted by probability (stable), make the PR curve: a record is a TP when its
truth was not taken by a higher one. AP per class: ``points=0`` is the area under the curve for
each unique recall; ``points=N`` averages the best precision at recall >= each of N levels
``p * (1.0 / (N - 1))`` — what Darknet's usual ``-Ofast`` build computes, not the exact fraction
``p / (N - 1)`` its source text says (0.30000000000000004, not 0.3). The mAP divides by every
class of the model, also those with no truth and no detection.

See ``DARKNET_MAP_NOTES.md`` (in the project's shared oracle) for each rule with file:line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .datafile import Labels

__all__ = ["EvalImage", "ClassResult", "MapResult", "MapAccumulator", "evaluate_images",
           "recall_levels", "box_iou", "check_points", "format_darknet"]

_F32 = np.float32
PR_THRESH = 0.005  # the probability records are kept above (get_network_boxes in map)


@dataclass(frozen=True)
class EvalImage:
    """One image's input: `boxes` (K, 4) centre x, y, width, height relative to the image and
    `probs` (K, classes) after NMS, in Darknet's order (probabilities not above 0.005 are 0);
    `truths` its labels; `difficult` the labels of its line in the ``difficult=`` list."""

    boxes: np.ndarray
    probs: np.ndarray
    truths: Labels
    difficult: Labels | None = None


@dataclass(frozen=True)
class ClassResult:
    """One class: `ap` (0..1), `tp`/`fp` at the conf threshold, and how many `truths` and
    PR-curve `detections` (records) it had."""

    id: int
    name: str | None
    ap: float
    tp: int
    fp: int
    truths: int
    detections: int

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "ap": self.ap, "tp": self.tp, "fp": self.fp,
                "truths": self.truths, "detections": self.detections}


@dataclass(frozen=True)
class MapResult:
    """What `darknet detector map` prints. `map` and `ap` are doubles as Darknet computes them;
    `precision`, `recall`, `f1` and `average_iou` are its float32 values at `thresh` (NaN where
    Darknet divides 0 by 0 and prints ``-nan``)."""

    map: float
    classes: tuple[ClassResult, ...]
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    average_iou: float
    detections_count: int
    unique_truth_count: int
    images: int
    iou_thresh: float
    points: int
    thresh: float
    notes: tuple[str, ...] = field(default=(), compare=False)

    def as_dict(self) -> dict:
        """The JSON object of ``darkcfg map --json`` (NaN becomes None, i.e. null)."""
        return {"map": self.map, "classes": [c.as_dict() for c in self.classes],
                "precision": _nan_none(self.precision), "recall": _nan_none(self.recall),
                "f1": _nan_none(self.f1), "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "average_iou": self.average_iou, "detections_count": self.detections_count,
                "unique_truth_count": self.unique_truth_count, "images": self.images,
                "settings": {"iou_thresh": self.iou_thresh, "points": self.points,
                             "thresh": self.thresh}}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def format(self) -> str:
        """Darknet's printout (see :func:`format_darknet`)."""
        return format_darknet(self)

    def __str__(self) -> str:
        return (f"mAP@{float(_F32(self.iou_thresh)):.2f} = {self.map:f} ({len(self.classes)} "
                f"classes, {self.images} images, TP {self.tp}, FP {self.fp}, FN {self.fn})")


def _nan_none(v: float) -> float | None:
    return None if math.isnan(v) else v


# --- IoU (box.c) -------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's box_iou between every box of `a` (n, 4) and of `b` (m, 4): (n, m) float32,
    operation by operation in float32; 0 where the intersection or the union is 0."""
    a = np.asarray(a, _F32)[:, None, :]
    b = np.asarray(b, _F32)[None, :, :]
    two = _F32(2)
    with np.errstate(invalid="ignore", over="ignore"):
        w = _overlap(a[..., 0], a[..., 2], b[..., 0], b[..., 2], two)
        h = _overlap(a[..., 1], a[..., 3], b[..., 1], b[..., 3], two)
        inter = np.where((w < 0) | (h < 0), _F32(0), w * h)
        union = (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3]) - inter
        with np.errstate(divide="ignore"):
            iou = np.where((inter == 0) | (union == 0), _F32(0), inter / union)
    return iou.astype(_F32)


def _overlap(x1, w1, x2, w2, two):
    l1, l2 = x1 - w1 / two, x2 - w2 / two
    left = np.where(l1 > l2, l1, l2)
    r1, r2 = x1 + w1 / two, x2 + w2 / two
    right = np.where(r1 < r2, r1, r2)
    return right - left


# --- settings ----------------------------------------------------------------------------------

def check_points(points: int) -> int:
    """`points` as Darknet's ``-points``: 0 (area under the curve) or N >= 2 recall levels."""
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)):
        raise ValueError(f"points must be an integer (0, 11, 101, ...), not {points!r}")
    if points < 0 or points == 1:
        raise ValueError(f"points {points}: use 0 (area under the curve for each unique recall) "
                         f"or N >= 2 recall levels (11 for VOC2007, 101 for COCO); Darknet's "
                         f"-points 1 divides by zero")
    return int(points)


def recall_levels(points: int) -> list[float]:
    """The recall levels Darknet's ``-Ofast`` build uses for `points` N: ``p * (1.0/(N-1))``
    (GCC hoists the division out of the loop under -ffast-math), which is above the exact
    fraction for some p (p = 3, 6, 7 at N = 11)."""
    step = 1.0 / (points - 1)
    return [p * step for p in range(points)]


# --- accumulation ------------------------------------------------------------------------------

@dataclass
class _Image:
    """The records one image kept for the PR curve."""

    prob: np.ndarray
    cls: np.ndarray
    truth: np.ndarray


class MapAccumulator:
    """Darknet's per-image loop: :meth:`add` each image in list order, then :meth:`result`.

    Keeps only the records (probability, class, truth index) of each image, so a large dataset
    streams through."""

    def __init__(self, classes: int, *, iou_thresh: float = 0.5, points: int = 0,
                 thresh: float = 0.25) -> None:
        if classes < 1:
            raise ValueError(f"classes must be at least 1, not {classes}")
        self.classes = int(classes)
        self.iou_thresh = float(iou_thresh)
        self.points = check_points(points)
        self.thresh = float(thresh)
        self._iou_t = _F32(iou_thresh)
        self._conf_t = _F32(thresh)
        self._parts: list[_Image] = []
        self._truth_count = np.zeros(self.classes, np.int64)
        self._unique_truths = 0
        self._images = 0
        self._avg_iou = _F32(0)
        self._tp = np.zeros(self.classes, np.int64)
        self._fp = np.zeros(self.classes, np.int64)

    def add(self, image: EvalImage) -> None:
        """One image, in the order of the list (truth indices are global, as Darknet's)."""
        boxes = np.asarray(image.boxes, _F32).reshape(-1, 4)
        probs = np.asarray(image.probs, _F32)
        if probs.ndim != 2 or len(probs) != len(boxes):
            raise ValueError(f"probs of shape {probs.shape} for {len(boxes)} boxes: expected "
                             f"({len(boxes)}, classes)")
        probs = probs[:, :self.classes]
        truths = image.truths
        box_index, cls = np.nonzero(probs > 0)  # row-major: Darknet's box, then class order
        prob = probs[box_index, cls]
        rec_boxes = boxes[box_index]
        truth, best_iou = self._match(rec_boxes, cls, truths)
        removed = self._difficult(rec_boxes, cls, truth, image.difficult)
        self._count_at_thresh(prob, cls, truth, best_iou)
        keep = ~removed
        self._parts.append(_Image(prob[keep], cls[keep],
                                  np.where(truth[keep] >= 0, truth[keep] + self._unique_truths,
                                           -1)))
        ids = truths.ids
        inside = ids[(ids >= 0) & (ids < self.classes)]
        self._truth_count += np.bincount(inside, minlength=self.classes)[:self.classes]
        self._unique_truths += len(truths)
        self._images += 1

    def _match(self, boxes: np.ndarray, cls: np.ndarray, truths: Labels
               ) -> tuple[np.ndarray, np.ndarray]:
        """Each record's truth (index in the file, or -1) and its IoU: same class, IoU above
        the threshold (and above 0), the highest, the first of equal ones."""
        n = len(cls)
        if n == 0 or len(truths) == 0:
            return np.full(n, -1, np.int64), np.zeros(n, _F32)
        iou = box_iou(boxes, truths.boxes)
        ok = (iou > self._iou_t) & (iou > 0) & (cls[:, None] == truths.ids[None, :])
        best = np.where(ok, iou, _F32(-1)).argmax(1)
        found = ok.any(1)
        rows = np.arange(n)
        return (np.where(found, best, -1).astype(np.int64),
                np.where(found, iou[rows, best], _F32(0)).astype(_F32))

    def _difficult(self, boxes: np.ndarray, cls: np.ndarray, truth: np.ndarray,
                   difficult: Labels | None) -> np.ndarray:
        """Records without a truth that overlap a same-class difficult label: out of the curve."""
        n = len(cls)
        if difficult is None or len(difficult) == 0 or n == 0:
            return np.zeros(n, bool)
        iou = box_iou(boxes, difficult.boxes)
        hit = ((iou > self._iou_t) & (cls[:, None] == difficult.ids[None, :])).any(1)
        return hit & (truth < 0)

    def _count_at_thresh(self, prob: np.ndarray, cls: np.ndarray, truth: np.ndarray,
                         best_iou: np.ndarray) -> None:
        """The "for conf_thresh" counts: in record order, a TP is the first record of the image
        with its truth (any probability), if it is above the threshold."""
        above = prob > self._conf_t
        first = np.zeros(len(truth), bool)
        matched = np.flatnonzero(truth >= 0)
        if len(matched):
            _, at = np.unique(truth[matched], return_index=True)
            first[matched[at]] = True
        tp = above & first
        fp = above & ~first
        for v in best_iou[tp]:  # float32, in record order
            self._avg_iou = _F32(self._avg_iou + v)
        self._tp += np.bincount(cls[tp], minlength=self.classes)
        self._fp += np.bincount(cls[fp], minlength=self.classes)

    def result(self, names: Sequence[str] | None = None) -> MapResult:
        """The numbers Darknet prints after its loop."""
        if names is not None and len(names) != self.classes:
            raise ValueError(f"got {len(names)} names for {self.classes} classes")
        prob = np.concatenate([p.prob for p in self._parts] or [np.zeros(0, _F32)])
        cls = np.concatenate([p.cls for p in self._parts] or [np.zeros(0, np.int64)])
        truth = np.concatenate([p.truth for p in self._parts] or [np.zeros(0, np.int64)])
        order = np.argsort(-prob, kind="stable")  # glibc's qsort is a stable merge sort
        cls, truth = cls[order], truth[order]
        hit = np.zeros(len(truth), bool)
        matched = np.flatnonzero(truth >= 0)
        if len(matched):
            _, at = np.unique(truth[matched], return_index=True)
            hit[matched[at]] = True  # the highest-ranked record of each truth
        by_class = np.argsort(cls, kind="stable")
        counts = np.bincount(cls, minlength=self.classes)
        starts = np.concatenate(([0], np.cumsum(counts)))
        results, total = [], 0.0
        for c in range(self.classes):
            flags = hit[by_class[starts[c]:starts[c + 1]]]
            ap = self._ap(flags, int(self._truth_count[c]))
            total += ap
            results.append(ClassResult(c, None if names is None else names[c], ap,
                                       int(self._tp[c]), int(self._fp[c]),
                                       int(self._truth_count[c]), int(counts[c])))
        notes = []
        if len(prob) == 0:
            notes.append("no detection above 0.005 is left for the PR curve: every AP is 0 "
                         "(Darknet reads outside its arrays here)")
        return self._finish(total / self.classes, tuple(results), len(prob), tuple(notes))

    def _ap(self, tp_flags: np.ndarray, truths: int) -> float:
        """One class's AP from its records' TP flags in rank order."""
        if len(tp_flags) == 0:
            return 0.0
        tp = np.cumsum(tp_flags, dtype=np.int64)
        fp = np.cumsum(~tp_flags, dtype=np.int64)
        precision = tp / (tp + fp)  # float64, as Darknet's (double)tp / (double)(tp + fp)
        recall = tp / truths if truths > 0 else np.zeros(len(tp))
        best_after = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at ranks >= k
        if self.points == 0:
            before = np.concatenate(([0.0], recall[:-1]))
            ap = 0.0
            for k in np.flatnonzero(tp_flags)[::-1]:  # Darknet walks from the last rank back
                ap += (recall[k] - before[k]) * best_after[k]
            return float(ap)
        ap = 0.0
        for level in recall_levels(self.points):
            k = int(np.searchsorted(recall, level, side="left"))  # first rank with recall >= level
            ap += float(best_after[k]) if k < len(recall) else 0.0
        return ap / self.points

    def _finish(self, mean_ap: float, classes: tuple[ClassResult, ...], records: int,
                notes: tuple[str, ...]) -> MapResult:
        tp, fp = int(self._tp.sum()), int(self._fp.sum())
        fn = self._unique_truths - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = _F32(tp) / (_F32(tp) + _F32(fp))
            recall = _F32(tp) / (_F32(tp) + _F32(fn))
            f1 = _F32(2) * precision * recall / (precision + recall)
        avg_iou = self._avg_iou / _F32(tp + fp) if tp + fp > 0 else self._avg_iou
        return MapResult(mean_ap, classes, float(precision), float(recall), float(f1), tp, fp,
                         fn, float(_F32(avg_iou)), records, self._unique_truths, self._images,
                         self.iou_thresh, self.points, self.thresh, notes)


def evaluate_images(images: Iterable[EvalImage], classes: int, *,
                    names: Sequence[str] | None = None, iou_thresh: float = 0.5,
                    points: int = 0, thresh: float = 0.25) -> MapResult:
    """Darknet's map numbers for `images` (in list order): see the module docstring."""
    acc = MapAccumulator(classes, iou_thresh=iou_thresh, points=points, thresh=thresh)
    for image in images:
        acc.add(image)
    return acc.result(names)


# --- Darknet's printout ------------------------------------------------------------------------

def _c(v: float, spec: str) -> str:
    """printf of a double: glibc prints NaN from 0/0 as -nan."""
    return "-nan" if math.isnan(v) else format(v, spec)


def format_darknet(r: MapResult) -> str:
    """The lines `darknet detector map` prints from ``detections_count`` to the mAP line, with
    its spacing and rounding (its rank counter and closing advice left out)."""
    lines = [f" detections_count = {r.detections_count}, unique_truth_count = "
             f"{r.unique_truth_count}  "]
    for c in r.classes:
        name = c.name if c.name is not None else str(c.id)
        lines.append(f"class_id = {c.id}, name = {name}, ap = {_c(c.ap * 100, '2.2f')}%   \t "
                     f"(TP = {c.tp}, FP = {c.fp}) ")
    t = float(_F32(r.thresh))
    iou = _F32(r.iou_thresh)
    lines += ["",
              f" for conf_thresh = {t:1.2f}, precision = {_c(r.precision, '1.2f')}, recall = "
              f"{_c(r.recall, '1.2f')}, F1-score = {_c(r.f1, '1.2f')} ",
              f" for conf_thresh = {t:0.2f}, TP = {r.tp}, FP = {r.fp}, FN = {r.fn}, average "
              f"IoU = {_c(float(_F32(r.average_iou) * _F32(100)), '2.2f')} % ",
              ""]
    how = (f"used {r.points} Recall-points " if r.points else
           "used Area-Under-Curve for each unique Recall ")
    lines.append(f" IoU threshold = {float(iou * _F32(100)):2.0f} %, {how}")
    lines.append(f" mean average precision (mAP@{float(iou):0.2f}) = {_c(r.map, 'f')}, or "
                 f"{_c(r.map * 100, '2.2f')} % ")
    return "\n".join(lines)
