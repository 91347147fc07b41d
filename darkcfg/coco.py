"""COCO results as Darknet's `detector valid` writes them, and their AP through pycocotools.

- :data:`COCO_IDS`: Darknet's `coco_ids` (detector.c), the COCO category id of each of the 80
  classes of coco.names (COCO's ids run to 90 with gaps).
- :func:`image_id`: Darknet's ``atoi(basecfg(path))``: the file name up to its first ``.``,
  read as a C integer, so ``000000000139.jpg`` is 139 and ``COCO_val2014_000000000042.jpg`` is
  0 (Darknet's `get_coco_image_id`, which read the digits after the last ``_``, is commented
  out at 59596d78).
- :func:`records`: `print_cocos` for one image: one record per (box, class) with probability
  above 0, the box as COCO's [x, y, width, height] in pixels, clipped to the image, float32 as
  Darknet computes it; :func:`format_results` the file, line for line as Darknet prints it.
- :func:`evaluate`: COCO's AP@[.5:.95] and the other 11 numbers of `COCOeval.summarize`
  (the ``coco`` extra: pycocotools), over the images that were run.

No torch here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CfgError

__all__ = ["COCO_IDS", "CATEGORY_IDS", "basecfg", "image_id", "category_ids", "Record",
           "records", "format_results", "read_results", "CocoScores", "evaluate", "STAT_NAMES",
           "load_annotations", "image_ids_by_name"]

COCO_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
            25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49,
            50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74,
            75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
# --category-ids: Darknet's coco_ids, or the class index itself (other datasets).
CATEGORY_IDS = ("coco", "index")
# COCOeval.summarize's 12 numbers, in its order.
STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100",
              "ar_small", "ar_medium", "ar_large")

_F32 = np.float32
_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


# --- ids ---------------------------------------------------------------------------------------

def basecfg(path: str | os.PathLike) -> str:
    """Darknet's basecfg: the part after the last ``/`` (then after the last ``\\``), up to its
    first ``.``."""
    name = str(path).rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    return name.split(".", 1)[0]


def image_id(path: str | os.PathLike) -> int:
    """Darknet's image_id for `path`: ``atoi(basecfg(path))`` (0 when the name does not start
    with digits; glibc's atoi of a number too big for an int keeps its low 32 bits)."""
    m = _ATOI.match(basecfg(path))
    if m is None:
        return 0
    v = max(-2**63, min(int(m.group(1)), 2**63 - 1))  # strtol saturates at LONG_MIN/MAX
    return (v + 2**31) % 2**32 - 2**31


def category_ids(classes: int, kind: str = "coco") -> list[int]:
    """The category_id written for each class: Darknet's :data:`COCO_IDS` ("coco") or the class
    index ("index")."""
    if kind == "index":
        return list(range(classes))
    if kind != "coco":
        raise ValueError(f"category ids {kind!r}: use one of {', '.join(CATEGORY_IDS)}")
    if classes > len(COCO_IDS):
        raise CfgError(f"the network has {classes} classes, but Darknet's COCO category ids "
                       f"(coco_ids) cover {len(COCO_IDS)}: use --category-ids index "
                       f"(category_id = class number)")
    return list(COCO_IDS[:classes])


# --- records -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One line of Darknet's COCO results: `bbox` is [x, y, width, height] in pixels (float32)."""

    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    score: float

    def as_dict(self) -> dict:
        return {"image_id": self.image_id, "category_id": self.category_id,
                "bbox": list(self.bbox), "score": self.score}

    def line(self) -> str:
        """As print_cocos's sprintf (``%d`` and ``%f``)."""
        x, y, w, h = self.bbox
        return (f'{{"image_id":{self.image_id}, "category_id":{self.category_id}, '
                f'"bbox":[{x:f}, {y:f}, {w:f}, {h:f}], "score":{self.score:f}}}')


def records(boxes: np.ndarray, probs: np.ndarray, size: tuple[int, int], image: int,
            categories: Sequence[int], *, pixels: np.ndarray | None = None) -> list[Record]:
    """Darknet's print_cocos for one image's detections after NMS (Darknet's order).

    `boxes` (K, 4) centre x, y, w, h relative to the image (Darknet's relative=0 then scales
    them to pixels in float32), except rows where `pixels` is True ([detection] heads, already
    in pixels); `probs` (K, classes); `size` the image's (width, height). Each box's corners
    are computed in double and stored as float, clipped to [0, width] x [0, height]."""
    boxes = np.asarray(boxes, _F32).reshape(-1, 4)
    probs = np.asarray(probs, _F32)
    w, h = size
    scale = np.asarray([w, h, w, h], _F32)
    px = boxes * scale
    if pixels is not None:
        px = np.where(np.asarray(pixels, bool)[:, None], boxes, px).astype(_F32)
    x, y, bw, bh = (px[:, i].astype(np.float64) for i in range(4))
    xmin = np.maximum((x - bw / 2.0).astype(_F32), _F32(0))
    xmax = np.minimum((x + bw / 2.0).astype(_F32), _F32(w))
    ymin = np.maximum((y - bh / 2.0).astype(_F32), _F32(0))
    ymax = np.minimum((y + bh / 2.0).astype(_F32), _F32(h))
    width, height = (xmax - xmin).astype(_F32), (ymax - ymin).astype(_F32)
    n_classes = min(probs.shape[1] if probs.ndim == 2 else 0, len(categories))
    out = []
    for i, j in zip(*np.nonzero(probs[:, :n_classes] > 0)):  # box, then class: Darknet's loops
        out.append(Record(image, int(categories[j]),
                          (float(xmin[i]), float(ymin[i]), float(width[i]), float(height[i])),
                          float(probs[i, j])))
    return out


def format_results(recs: Iterable[Record]) -> str:
    """The results file as Darknet writes it: ``[``, one record per line, ``]`` (``[]`` when
    there is none, where Darknet's file would not be JSON)."""
    lines = [r.line() for r in recs]
    if not lines:
        return "[]\n"
    return "[\n" + ",\n".join(lines) + "\n]\n"


# --- pycocotools -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CocoScores:
    """COCOeval's 12 numbers (`stats`, in :data:`STAT_NAMES` order; -1 where COCO has no
    truth to score), its printed summary, and notes on what was left out."""

    stats: tuple[float, ...]
    summary: str
    images: int
    notes: tuple[str, ...] = ()

    @property
    def ap(self) -> float:
        """AP@[.5:.95], the number COCO's leaderboards quote."""
        return self.stats[0]

    @property
    def ap50(self) -> float:
        return self.stats[1]

    def as_dict(self) -> dict:
        return dict(zip(STAT_NAMES, self.stats))


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise CfgError("--annotations needs pycocotools: pip install 'darkcfg[coco]'") from None
    return COCO, COCOeval


def load_annotations(path: str | os.PathLike):
    """A pycocotools COCO object for an instances_*.json file (its prints swallowed)."""
    COCO, _ = _pycocotools()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except FileNotFoundError:
        raise CfgError(f"cannot read annotations {path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CfgError(f"cannot read annotations {path}: {type(exc).__name__}: {exc}") from None


def image_ids_by_name(gt) -> dict[str, int]:
    """file_name → id of the annotation file's images."""
    return {img["file_name"]: int(img["id"]) for img in gt.dataset.get("images", [])}


def evaluate(gt, results: Sequence[dict], image_ids: Iterable[int], *,
             source: str = "the annotations") -> CocoScores:
    """COCOeval (bbox) of `results` (dicts as in the results file) on the images `image_ids`
    only (those the run covered), against `gt` (:func:`load_annotations`)."""
    _, COCOeval = _pycocotools()
    ids = sorted(set(int(i) for i in image_ids))
    known = set(gt.getImgIds())
    unknown = [i for i in ids if i not in known]
    if unknown:
        shown = ", ".join(str(i) for i in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise CfgError(f"{len(unknown)} image ids of the results are not images of {source} "
                       f"({shown}); Darknet's image_id is the number the file name starts with "
                       f"(--image-ids annotations looks the file names up instead)")
    notes = []
    cats = set(gt.getCatIds())
    stray = sorted({r["category_id"] for r in results} - cats)
    if stray:
        notes.append(f"category ids {', '.join(map(str, stray[:10]))} of the results are not "
                     f"categories of {source}: those detections are not scored")
    if not results:
        notes.append("no detections: every AP is 0")
        return CocoScores(tuple([0.0] * len(STAT_NAMES)), "", len(ids), tuple(notes))
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        dt = gt.loadRes(list(results))
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()
    return CocoScores(tuple(float(v) for v in ev.stats), summary.getvalue().rstrip("\n"),
                      len(ids), tuple(notes))


def read_results(path: str | os.PathLike) -> list[dict]:
    """A results file (ours or Darknet's, whose empty form is not JSON) as a list of dicts."""
    text = Path(path).read_text(encoding="utf-8").strip()
    if text in ("", "]"):
        return []
    return json.loads(text)
