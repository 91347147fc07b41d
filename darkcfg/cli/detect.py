"""`darkcfg detect`: Darknet's `detector test` on one image, several, a folder or a list file.

The model loads once; :mod:`darkcfg.sources` turns the arguments into image paths and `--out`
is checked before it loads, so a typo costs no start-up. One image (one path argument) prints
exactly its lines and fails as a whole; with several, each image prints under its path, and one
that cannot be read is reported on one line while the others still run (exit status 1).

Images go through :mod:`darkcfg.pipeline`: decoded in `--workers` processes, the forward in
batches of `--batch` on the fused channels-last model, a progress bar on a terminal's stderr.
A video file (by suffix, PyAV) is Darknet's `detector demo` on that file: every frame detected,
`--out` writes the annotated video, `--json` one frame object per frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._weights import add_load_arguments, load_kwargs

if TYPE_CHECKING:
    from ..detection import Detection

HELP = ("detect objects in images as Darknet's `detector test` does; print one line per "
        "detection")

# Darknet's detection_to_json writes a class only above this probability (on top of --thresh).
_JSON_MIN_PROB = 0.005


def add_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("cfg", help="the network's Darknet .cfg file")
    d.add_argument("weights",
                   help="its weights: a Darknet .weights file, .safetensors, .pt or .pth")
    d.add_argument("images", nargs="+", metavar="IMAGE",
                   help="an image; a folder (its images, sorted by name); a list file (.txt or "
                        ".list: one image path per line, relative to the current directory, as "
                        "Darknet reads them); - to read that list from standard input; or one "
                        "video file (.mp4, .avi, .mkv, ...: Darknet's `detector demo` on it; "
                        "needs the video extra, PyAV)")
    d.add_argument("--names", help="class names file (e.g. coco.names), one line per class; "
                                   "default: class numbers")
    d.add_argument("--thresh", type=float, default=0.25, help="probability threshold (0.25)")
    d.add_argument("--hier-thresh", type=float, default=0.5,
                   help="yolo9000 tree threshold (0.5, which Darknet hard-codes)")
    d.add_argument("--nms", type=float, default=0.45,
                   help="NMS overlap threshold (0.45; 0 turns NMS off)")
    box = d.add_mutually_exclusive_group()
    box.add_argument("--letterbox", dest="letterbox", action="store_true", default=None,
                     help="letterbox the image (default: the cfg's [net] letter_box)")
    box.add_argument("--no-letterbox", dest="letterbox", action="store_false",
                     help="plain resize even if the cfg asks for letter_box")
    d.add_argument("--out", help="write the image with boxes and labels drawn to this file; for "
                                 "several images (or a folder or list), to this existing folder, "
                                 "each named after its input; for a video, the annotated "
                                 "video file")
    d.add_argument("--json", action="store_true",
                   help="print one JSON document for all images in Darknet's `-out` layout: per "
                        "image frame_id, filename and objects (class_id, name, "
                        "relative_coordinates, confidence)")
    d.add_argument("--batch", type=int, default=8,
                   help="images per forward pass (8); detections do not depend on it beyond "
                        "float rounding")
    d.add_argument("--workers", type=int, default=None,
                   help="processes decoding and resizing images (default: min(4, CPUs - 2); 0: "
                        "in the main process)")
    add_load_arguments(d)


def run(args: argparse.Namespace) -> int:
    from ..model import load
    from ..pipeline import prepare_model
    from ..sources import expand, names_one_image
    from ..video import is_video

    _check_counts(args)
    if len(args.images) == 1 and is_video(args.images[0]) and not Path(args.images[0]).is_dir():
        return _run_video(args)
    single = names_one_image(args.images)
    images = expand(args.images)
    outs = out_paths(images, args.out, single=single) if args.out else [None] * len(images)
    model = prepare_model(load(args.cfg, args.weights, **load_kwargs(args)), copy_model=False)
    return _run_images(args, model, images, outs, single)


def _check_counts(args: argparse.Namespace) -> None:
    if args.batch < 1:
        raise ValueError(f"--batch {args.batch}: must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers {args.workers}: must be 0 or more")


def _settings(args: argparse.Namespace):
    from ..pipeline import Settings

    return Settings(thresh=args.thresh, hier_thresh=args.hier_thresh, nms=args.nms,
                    letterbox=args.letterbox)


def _run_images(args: argparse.Namespace, model, images: list[Path], outs: list,
                single: bool) -> int:
    from ..detection import check_names, nms_settings, select
    from ..image import draw_detections
    from ..pipeline import run as run_pipeline
    from ..sources import SourceError

    names = check_names(args.names, model) if args.names else None
    classes = nms_settings(model.network).classes  # Darknet colours by its NMS layer's count
    frames, failed = [], 0
    results = run_pipeline(model, images, _settings(args), batch=args.batch,
                           workers=args.workers, keep_pixels=args.out is not None,
                           progress=not getattr(args, "quiet", False), prepare=False)
    for r, out in zip(results, outs):
        path = images[r.index]
        try:
            if r.error is not None:
                raise SourceError(r.error)
            found = select(r.raw, r.size, thresh=args.thresh, names=names)
            if out is not None:
                _save(draw_detections(r.pixels, found, classes=classes), out)
        except SourceError as exc:
            if single:
                raise
            print(f"darkcfg: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            frames.append(darknet_frame(r.index + 1, str(path), found))
        else:
            _print_lines(found, None if single else path)
    if args.json:
        print(format_frames(frames))
    return 1 if failed else 0


def _run_video(args: argparse.Namespace) -> int:
    """Darknet's `detector demo` on a file: each frame as `detector test` sees it (demo's
    -avgframes smoothing of the outputs across frames is not done), drawn into `--out` (a
    video file), printed or put in --json."""
    from ..detection import check_names, nms_settings, select
    from ..image import draw_detections
    from ..model import load
    from ..pipeline import Preprocess, loader, prepare_model, progress_bar, run_loader
    from ..video import VideoFrames, VideoWriter, check_video_out

    video = args.images[0]
    if args.out:
        check_video_out(args.out, video)
    model = prepare_model(load(args.cfg, args.weights, **load_kwargs(args)), copy_model=False)
    names = check_names(args.names, model) if args.names else None
    classes = nms_settings(model.network).classes
    settings = _settings(args)
    frames_in = VideoFrames(video, Preprocess.of(model, settings.letterbox),
                            keep_pixels=args.out is not None)
    count, rate = frames_in.info()
    results = run_loader(model, loader(frames_in, batch=args.batch, workers=args.workers),
                         settings, prepare=False)
    frames = []
    writer = VideoWriter(args.out, rate) if args.out else None
    try:
        for r in progress_bar(results, count or None, not getattr(args, "quiet", False),
                              unit="frame"):
            found = select(r.raw, r.size, thresh=args.thresh, names=names)
            if writer is not None:
                writer.write(draw_detections(r.pixels, found, classes=classes))
            if args.json:
                frames.append(darknet_frame(r.index + 1, video, found))
            else:
                _print_lines(found, Path(r.path))
    finally:
        if writer is not None:
            writer.close()
    if args.json:
        print(format_frames(frames))
    return 0


def _print_lines(found: list[Detection], header: Path | None) -> None:
    if header is not None:
        print(f"{header}:")
    for d in found:
        print(d)


def _save(picture, out: Path) -> None:
    from ..sources import SourceError

    try:
        picture.save(out)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot write {out}: {exc}") from None


# --- --out -------------------------------------------------------------------------------------

def out_paths(images: list[Path], out: str, *, single: bool) -> list[Path]:
    """Where each drawn image goes, checked before the model loads. One image: the file `out`
    (its folder must exist, Pillow must know its suffix) or, if `out` is a folder, the input's
    name in it. Several: the input's name in the folder `out`, which must exist (`.png` is added
    to a name whose suffix Pillow cannot write). Two images drawn to one file, or a drawing that
    would overwrite its input, are errors."""
    from ..sources import SourceError

    target = Path(out)
    if single and not target.is_dir():
        _check_suffix(target, out)
        if not target.parent.is_dir():
            raise SourceError(f"--out {out}: folder {target.parent} does not exist")
        paths = [target]
    elif not target.is_dir():
        what = "not a folder" if target.exists() else "no such folder"
        raise SourceError(f"--out {out}: {what} (with several images, --out is an existing "
                          f"folder)")
    else:
        paths = [target / (p.name if _writable(p.suffix) else p.name + ".png") for p in images]
    _check_distinct(images, paths, out)
    return paths


def _writable(suffix: str) -> bool:
    from PIL import Image

    return Image.registered_extensions().get(suffix.lower()) in Image.SAVE


def _check_suffix(target: Path, out: str) -> None:
    from ..sources import SourceError

    if not target.suffix:
        raise SourceError(f"--out {out}: no image suffix (e.g. .jpg, .png) and not a folder")
    if not _writable(target.suffix):
        raise SourceError(f"--out {out}: Pillow cannot write images with suffix "
                          f"'{target.suffix}' (e.g. .jpg, .png)")


def _check_distinct(images: list[Path], paths: list[Path], out: str) -> None:
    from ..sources import SourceError

    seen: dict[Path, Path] = {}
    for image, path in zip(images, paths):
        key = path.resolve()
        if key in seen and seen[key] != image:
            raise SourceError(f"--out {out}: {seen[key]} and {image} would both be drawn to "
                              f"{path}")
        seen[key] = image
        if image.exists() and key == image.resolve():
            raise SourceError(f"--out {out}: drawing {image} there would overwrite it")


# --- --json ------------------------------------------------------------------------------------

def darknet_frame(frame_id: int, filename: str, found: list[Detection]) -> dict:
    """One image as Darknet's `detection_to_json` writes it for ``detector test -out``: objects in
    Darknet's detection order (object, then class id), classes above 0.005 only."""
    import numpy as np

    floor = np.float32(_JSON_MIN_PROB)
    rows = sorted((d for d in found if np.float32(d.prob) > floor),
                  key=lambda d: (d.index, d.class_id))
    return {"frame_id": frame_id, "filename": filename, "objects": [_object(d) for d in rows]}


def _object(d: Detection) -> dict:
    x, y, w, h = d.bbox
    return {"class_id": d.class_id, "name": d.name,
            "relative_coordinates": {"center_x": x, "center_y": y, "width": w, "height": h},
            "confidence": d.prob}


def format_frames(frames: list[dict]) -> str:
    """The frames as one JSON array, one object per line (grep- and diff-friendly)."""
    if not frames:
        return "[]"
    parts = []
    for f in frames:
        head = f' {{"frame_id": {f["frame_id"]}, "filename": {json.dumps(f["filename"])}, '
        objects = ",\n".join("  " + json.dumps(o) for o in f["objects"])
        body = f"[\n{objects}\n ]" if objects else "[]"
        parts.append(f'{head}"objects": {body}}}')
    return "[\n" + ",\n".join(parts) + "\n]"
