"""`darkcfg.evaluate`: Darknet's `detector map` over a dataset, from the .data file to the mAP.

Three parts, so that each can be checked and replaced alone:

- reading the dataset as Darknet does (:mod:`darkcfg.datafile`): ``valid=``, ``names=``,
  ``difficult=``, the label path of each image; paths resolve against the current directory;
- detection for map (:func:`map_detections`): Darknet's map settings, which are not
  ``detector test``'s: boxes above 0.005, NMS 0.45 of the kind the cfg's last
  detection layer names, ``letter_box`` from the cfg only; the boxes stay relative to the image;
- the numbers (:mod:`darkcfg.evaluation`): a pure function of detections and labels.

Bad input does not stop the evaluation: an image that cannot be read is evaluated as the black
10x10 image Darknet substitutes, a missing label file means 0 truths, odd label rows are used as
written; each is a warning naming the file, and the totals are warned at the end (and kept in
``MapResult.notes``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import image as _image
from .datafile import (DataFile, Labels, label_path, label_path_note, read_data,
                       read_image_list, read_labels)
from .detection import NmsSettings, decode, nms, nms_settings, read_names
from .errors import CfgError, warn, warn_at, warning_budget
from .evaluation import PR_THRESH, EvalImage, MapAccumulator, MapResult, check_points
from .model import DarknetModel, load
from .pipeline import MAP, prepare_model, run

__all__ = ["evaluate", "map_detections", "MAP_NMS"]

MAP_NMS = 0.45  # detector.c's nms for map
_WARNINGS_SHOWN = 50  # per-file warnings shown before they are only counted
_DEFAULT_VALID = "data/train.txt"  # Darknet's default when the .data has no valid=
_DEFAULT_NAMES = "data/names.list"


def evaluate(data: str | os.PathLike, cfg: str | os.PathLike | DarknetModel,
             weights: str | os.PathLike | None = None, *, iou_thresh: float = 0.5,
             points: int = 0, thresh: float = 0.25, batch: int = 8,
             workers: int | None = None, progress: bool = False, **load_kwargs) -> MapResult:
    """Darknet's ``detector map DATA CFG WEIGHTS -iou_thresh T -points N -thresh C``.

    Args:
        data: the .data file; its ``valid=`` list (default ``data/train.txt``, as Darknet),
            ``names=`` and optional ``difficult=``; relative paths in it and in the lists
            resolve against the current directory, as in Darknet. ``classes=`` is not read:
            the class count is the last detection layer's.
        cfg: the cfg path, or a loaded :class:`DarknetModel` (then `weights` is None).
        weights: its weights (see :func:`darkcfg.load`, which gets `load_kwargs` too).
        iou_thresh: a detection matches a truth of its class with IoU above this.
        points: 0 for the area under the curve for each unique recall (VOC2010+), or N recall
            levels (11: VOC2007, 101: COCO).
        thresh: the probability threshold of the precision/recall/F1/TP/FP/FN/IoU block.
        batch, workers, progress: how :func:`darkcfg.pipeline.run` runs the detections
            (images per forward, decoding processes, a progress bar on a terminal's stderr);
            the model runs BN-fused and channels-last (a fused copy of a model passed in).

    Returns a :class:`~darkcfg.evaluation.MapResult`; ``as_dict()`` is ``darkcfg map --json``.
    """
    points = check_points(points)
    dataset = _Dataset.read(data)
    if isinstance(cfg, DarknetModel):
        if weights is not None or load_kwargs:
            raise ValueError("got a loaded model: pass no weights or load options")
        model = cfg
    else:
        model = load(cfg, weights, **load_kwargs)
    if model.training:
        warn("the model is in training mode; Darknet's map runs it in inference mode (call "
             "model.eval())", UserWarning)
    settings = nms_settings(model.network)
    if settings.classes is None:
        raise CfgError("the network has no [yolo], [Gaussian_yolo], [region] or [detection] "
                       "layer: there is nothing to evaluate")
    classes = int(settings.classes)
    names = read_names(dataset.names, classes)  # Darknet stops on another count too
    acc = MapAccumulator(classes, iou_thresh=iou_thresh, points=points, thresh=thresh)
    tally = _Tally()
    fast = prepare_model(model, copy_model=isinstance(cfg, DarknetModel))
    with warning_budget(_WARNINGS_SHOWN):
        for r in run(fast, dataset.images, MAP, batch=batch, workers=workers, stand_in=True,
                     progress=progress, prepare=False):
            if r.error is not None:
                _unreadable(dataset, r.index, r.path, r.error, tally)
            raw = r.raw.to("cpu")
            acc.add(_eval_image(dataset, r.index, r.path, raw.boxes.numpy(), raw.probs.numpy(),
                                classes, tally))
    result = acc.result(names)
    notes = result.notes + tally.summary(len(dataset.images))
    for note in notes:
        warn(note)
    return dataclasses.replace(result, notes=notes)


# --- detection as map does it ------------------------------------------------------------------

def map_detections(model: DarknetModel, image: Tensor, settings: NmsSettings | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One image's boxes and probabilities as Darknet's map keeps them: the image (a Darknet
    float image, (C, H, W)) resized or letterboxed (the cfg's ``letter_box``), boxes with
    objectness > 0.005 decoded (the yolo9000 tree at 0.5), then NMS 0.45 of the cfg's kind. Returns
    `boxes` (K, 4) float32 relative to the image and `probs` (K, classes), in Darknet's order.

    :func:`evaluate` computes the same through the batched pipeline (``pipeline.MAP``)."""
    net = model.network.net
    letter = bool(net.letter_box)
    settings = settings or nms_settings(model.network)
    x = _image.network_input(image, net.width, net.height, letter)[None]
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
    with torch.no_grad():
        outputs = model(x)
    # Darknet passes the image size only with letterbox (relative=1); otherwise w = h = 1,
    # which leaves every head's boxes relative to the image.
    size = (int(image.shape[-1]), int(image.shape[-2])) if letter else (1, 1)
    # map passes hier_thresh 0, but the only head that reads it, [region]'s yolo9000 tree,
    # hard-codes 0.5 (custom_get_region_detections), which is what darkcfg's decode takes it for.
    raw = decode(model, outputs, [size], thresh=PR_THRESH, hier_thresh=0.5, letterbox=letter,
                 input_size=(net.width, net.height))[0]
    kept = nms(raw, MAP_NMS, kind=settings.kind, beta=settings.beta, classes=settings.classes)
    return (kept.boxes.detach().cpu().numpy().astype(np.float32),
            kept.probs.detach().cpu().numpy().astype(np.float32))


# --- the dataset -------------------------------------------------------------------------------

@dataclasses.dataclass
class _Dataset:
    data: DataFile
    valid: str
    names: str
    images: list[str]
    difficult: list[str] | None

    @staticmethod
    def read(path: str | os.PathLike) -> _Dataset:
        """The .data file and its lists, checked before any model loads."""
        data = read_data(path)
        for note in data.notes:
            warn(note)
        valid = data.get("valid")
        if valid is None:
            warn(f"{path} has no valid= line; Darknet's map then reads {_DEFAULT_VALID}")
            valid = _DEFAULT_VALID
        names = data.get("names")
        if names is None:
            warn(f"{path} has no names= line; Darknet's map then reads {_DEFAULT_NAMES}")
            names = _DEFAULT_NAMES
        images = _read_list(valid, "valid", path)
        if not images:
            raise CfgError(f"the image list {valid} (valid= of {path}) is empty: no images to "
                           f"evaluate")
        difficult_list = data.get("difficult")
        difficult = None if difficult_list is None else \
            _read_list(difficult_list, "difficult", path)
        if difficult is not None and len(difficult) < len(images):
            warn(f"the difficult list {difficult_list} has {len(difficult)} lines for the "
                 f"{len(images)} images of {valid}: the images after line {len(difficult)} "
                 f"have no difficult labels (Darknet reads past its list there)")
        if not Path(names).is_file():
            raise CfgError(f"cannot read names file {names} (names= of {path}): "
                           f"{'it is a folder' if Path(names).is_dir() else 'no such file'}")
        return _Dataset(data, valid, names, images, difficult)


def _read_list(path: str, key: str, data: str | os.PathLike) -> list[str]:
    try:
        return read_image_list(path)
    except CfgError as exc:
        raise CfgError(f"{exc.msg} ({key}= of {data})") from None


@dataclasses.dataclass
class _Tally:
    """Counts of the bad inputs met, for the closing warnings."""

    images: int = 0
    labels: int = 0
    rows: int = 0
    difficult: int = 0

    def summary(self, total: int) -> tuple[str, ...]:
        out = []
        if self.images:
            out.append(f"{self.images} of {total} images could not be read; each was evaluated "
                       f"as a black 10x10 image, as Darknet does")
        if self.labels:
            out.append(f"{self.labels} of {total} label files are missing or unnamed; those "
                       f"images count 0 truths (Darknet lists them in bad.list)")
        if self.difficult:
            out.append(f"{_count(self.difficult, 'difficult label file')} missing or unnamed")
        if self.rows:
            out.append(f"{_count(self.rows, 'label row')} a class outside the model's or x, y, "
                       f"w or h outside (0, 1]; used as written, as Darknet does (a class "
                       f"outside counts as a truth that nothing detects)")
        return tuple(out)


def _count(n: int, noun: str) -> str:
    """'1 label row has' / '3 label rows have' (and 'is'/'are' for 'missing')."""
    if noun.endswith("file"):
        return f"{n} {noun} is" if n == 1 else f"{n} {noun}s are"
    return f"{n} {noun} has" if n == 1 else f"{n} {noun}s have"


def _unreadable(dataset: _Dataset, index: int, path: str, error: str, tally: _Tally) -> None:
    """The warning for an image of the valid list that cannot be read (the pipeline evaluated
    Darknet's stand-in for it, a black 10x10 image)."""
    if not path:
        error = f"{dataset.valid} line {index + 1} is empty, so names no image"
    hint = " (Darknet keeps the spaces around a path)" if path != path.strip() else ""
    warn_at(f"{error}{hint}; evaluated as a black 10x10 image, as Darknet does")
    tally.images += 1


def _eval_image(dataset: _Dataset, index: int, path: str, boxes: np.ndarray, probs: np.ndarray,
                classes: int, tally: _Tally) -> EvalImage:
    truths = _labels(path, classes, tally, "labels")
    difficult = None
    if dataset.difficult is not None and index < len(dataset.difficult):
        difficult = _labels(dataset.difficult[index], classes, tally, "difficult")
    return EvalImage(boxes, probs, truths, difficult)


def _labels(image_path: str, classes: int, tally: _Tally, what: str) -> Labels:
    """The labels Darknet reads for `image_path`, with a warning per problem."""
    label = label_path(image_path)
    problem = label_path_note(image_path, label) if image_path else None
    labels = None if problem or not image_path else read_labels(label, classes)
    if labels is None:
        if image_path:  # an empty line was already reported
            warn_at(f"{problem or f'no label file {label} for image {image_path}'}: 0 "
                    f"{'truths' if what == 'labels' else 'difficult labels'}"
                    f"{' (Darknet lists it in bad.list)' if not problem else ''}")
        if what == "labels":
            tally.labels += 1
        else:
            tally.difficult += 1
        return Labels.empty()
    for note in labels.notes:
        warn_at(f"{note}; used as written, as Darknet does" if note.kind == "row" else str(note))
    tally.rows += sum(1 for note in labels.notes if note.kind == "row")
    return labels

