"""`darkcfg valid`: Darknet's `detector valid` with ``eval=coco``: COCO-format detections for
every image of the .data file's ``valid=`` list, and optionally their COCO AP (pycocotools).

Darknet's settings for valid, which are neither `detector test`'s nor `map`'s: boxes with
objectness above 0.001, hier_thresh 0.5, NMS 0.6 of the kind the cfg's last detection layer
names, ``letter_box`` from the cfg; boxes scaled to the image's pixels (relative=0), written
by `print_cocos` (:mod:`darkcfg.coco`). Paths resolve against the current directory; an image
that cannot be read is a warning and Darknet's black 10x10 stand-in, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from . import coco as _coco
from .datafile import read_data, read_image_list
from .detection import nms_settings
from .errors import CfgError, warn, warn_at, warning_budget
from .model import DarknetModel, load
from .pipeline import VALID, prepare_model, run

__all__ = ["validate", "ValidResult", "IMAGE_IDS"]

_DEFAULT_VALID = "data/train.list"  # validate_detector's default (map's is data/train.txt)
_DEFAULT_RESULTS = "results"
_WARNINGS_SHOWN = 50
# --image-ids: Darknet's atoi(basecfg(path)), or the annotation file's id for the file name.
IMAGE_IDS = ("darknet", "annotations")


@dataclasses.dataclass(frozen=True)
class ValidResult:
    """What a run wrote: the results file `out`, how many `images` and `detections` (records),
    the images that could not be `failed`; `scores` when annotations were given."""

    out: str
    images: int
    detections: int
    failed: int
    scores: _coco.CocoScores | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        d = {"out": self.out, "images": self.images, "detections": self.detections,
             "unreadable_images": self.failed}
        if self.scores is not None:
            d.update(self.scores.as_dict())
            d["evaluated_images"] = self.scores.images
        return d


def validate(data: str | os.PathLike, cfg: str | os.PathLike | DarknetModel,
             weights: str | os.PathLike | None = None, *, out: str | os.PathLike | None = None,
             annotations: str | os.PathLike | None = None, category_ids: str = "coco",
             image_ids: str = "darknet", batch: int = 8, workers: int | None = None,
             progress: bool = False, **load_kwargs) -> ValidResult:
    """Darknet's ``detector valid DATA CFG WEIGHTS`` (``eval=coco``): writes the COCO results
    file `out` (default: Darknet's ``<results>/coco_results.json``) and, with `annotations`
    (an instances_*.json; needs pycocotools), scores it on the images of the list.

    `category_ids`: "coco" (Darknet's coco_ids) or "index" (the class number); `image_ids`:
    "darknet" (the number the file name starts with) or "annotations" (the annotation file's
    id for the image's file name). `cfg` may be a loaded model (then no `weights`)."""
    if image_ids not in IMAGE_IDS:
        raise ValueError(f"image ids {image_ids!r}: use one of {', '.join(IMAGE_IDS)}")
    if image_ids == "annotations" and annotations is None:
        raise CfgError("--image-ids annotations needs --annotations (the file names are "
                       "looked up there)")
    _coco.category_ids(0, category_ids)  # the kind, before anything runs
    paths, out = _dataset(data, out)
    gt = None if annotations is None else _coco.load_annotations(annotations)
    model = _model(cfg, weights, load_kwargs)
    classes = nms_settings(model.network).classes
    if classes is None:
        raise CfgError("the network has no [yolo], [Gaussian_yolo], [region] or [detection] "
                       "layer: there is nothing to validate")
    categories = _coco.category_ids(int(classes), category_ids)
    ids = _ids(paths, image_ids, gt, annotations)
    recs, failed = [], 0
    with warning_budget(_WARNINGS_SHOWN):
        for r in run(model, paths, VALID, batch=batch, workers=workers, stand_in=True,
                     progress=progress, prepare=False):
            if r.error is not None:
                warn_at(f"{r.error}; evaluated as a black 10x10 image, as Darknet does")
                failed += 1
            raw = r.raw.to("cpu")
            recs += _coco.records(raw.boxes.numpy(), raw.probs.numpy(), r.size, ids[r.index],
                                  categories, pixels=raw.pixels.numpy())
    notes = []
    if failed:
        notes.append(f"{failed} of {len(paths)} images could not be read; each was evaluated "
                     f"as a black 10x10 image, as Darknet does")
    _write(out, recs)
    scores = None
    if gt is not None:
        scores = _coco.evaluate(gt, _coco.read_results(out), ids, source=str(annotations))
        notes += scores.notes
    for note in notes:
        warn(note)
    return ValidResult(str(out), len(paths), len(recs), failed, scores, tuple(notes))


def _dataset(data: str | os.PathLike, out: str | os.PathLike | None) -> tuple[list[str], str]:
    """The image list and the results path, checked before the model loads."""
    parsed = read_data(data)
    for note in parsed.notes:
        warn(note)
    kind = parsed.get("eval")
    if kind is not None and kind != "coco":
        warn(f"{data} has eval={kind}; darkcfg valid writes COCO results (Darknet's eval=coco)")
    if parsed.get("map") is not None:
        warn(f"{data} has map={parsed.get('map')}; darkcfg valid ignores it (Darknet's class "
             f"map for yolo9000 trees)")
    valid = parsed.get("valid")
    if valid is None:
        warn(f"{data} has no valid= line; Darknet's valid then reads {_DEFAULT_VALID}")
        valid = _DEFAULT_VALID
    try:
        paths = read_image_list(valid)
    except CfgError as exc:
        raise CfgError(f"{exc.msg} (valid= of {data})") from None
    if not paths:
        raise CfgError(f"the image list {valid} (valid= of {data}) is empty: no images to "
                       f"validate")
    out = str(out) if out is not None else \
        f"{parsed.get('results') or _DEFAULT_RESULTS}/coco_results.json"
    folder = Path(out).parent
    if not folder.is_dir():
        raise CfgError(f"cannot write {out}: folder {folder} does not exist")
    if Path(out).is_dir():
        raise CfgError(f"cannot write {out}: it is a folder")
    return paths, out


def _model(cfg, weights, load_kwargs) -> DarknetModel:
    if isinstance(cfg, DarknetModel):
        if weights is not None or load_kwargs:
            raise ValueError("got a loaded model: pass no weights or load options")
        if cfg.training:
            warn("the model is in training mode; Darknet's valid runs it in inference mode",
                 UserWarning)
        return prepare_model(cfg)  # a fused copy: the caller's model keeps its BN layers
    return prepare_model(load(cfg, weights, **load_kwargs), copy_model=False)


def _ids(paths: list[str], kind: str, gt, annotations) -> list[int]:
    """Each image's image_id, with warnings where Darknet's rule gives surprising ids."""
    if kind == "annotations":
        by_name = _coco.image_ids_by_name(gt)
        ids, missing = [], []
        for p in paths:
            name = Path(p.strip()).name
            if name not in by_name:
                missing.append(p)
            ids.append(by_name.get(name, -1))
        if missing:
            raise CfgError(f"{len(missing)} images of the list are not in {annotations} by "
                           f"file name (e.g. {missing[0]})")
        return ids
    ids = [_coco.image_id(p) for p in paths]
    no_digits = [p for p, i in zip(paths, ids) if i == 0 and not _coco.basecfg(p)[:1].isdigit()]
    if no_digits:
        warn(f"{len(no_digits)} of {len(paths)} image names do not start with a number (e.g. "
             f"{Path(no_digits[0]).name}): Darknet's image_id for them is 0")
    seen: dict[int, str] = {}
    for p, i in zip(paths, ids):
        first = seen.setdefault(i, p)
        if first != p and Path(first).name != Path(p).name and i != 0:
            warn(f"{first} and {p} both get image_id {i}")
            break
    return ids


def _write(out: str, recs: list) -> None:
    try:
        Path(out).write_text(_coco.format_results(recs), encoding="utf-8")
    except OSError as exc:
        raise CfgError(f"cannot write {out}: {exc.strerror or exc}") from None
