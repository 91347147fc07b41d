#!/usr/bin/env python3
"""Throughput of `darkcfg map` (the batched pipeline) against OpenCV DNN and against darkcfg's
own per-image loop, side by side in one run, on the same cfg, weights and images.

Usage:
  python tools/bench_map.py [--cfg CFG --weights W] [--images 304] [--batch 8] [--workers N]
                            [--per-image 48] [--no-opencv]

The image list repeats the sample images of <shared>/official/map/sets/clean/images (labels next
to them) up to --images lines. Measured, each over its own pass:

- ``darkcfg map``: darkcfg.evaluate on that list (decode in workers, fused channels-last batched
  forward, decode + NMS, the evaluation); the model is loaded beforehand.
- per-image loop: darkcfg's path before the pipeline, one image at a time in this process:
  Pillow decode, Darknet's resize, the unfused NCHW forward (detector_map.map_detections).
- per-image fused: the same loop on the fused channels-last model (batch 1, no workers).
- OpenCV DNN: cv2.dnn.readNetFromDarknet on the same files, one image at a time, with the same
  decode and resize (darkcfg's Darknet resize), the forward only (its outputs are not decoded,
  NMSed or evaluated, so it is measured doing less work than darkcfg map).

Needs the bench extra (opencv-python-headless) for the OpenCV line. The machine's load average
is printed at the start and the end: throughput on a loaded machine is not comparable.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import darkcfg
from darkcfg import detector_map, pipeline
from darkcfg.image import load_image, network_input
from darkcfg.sources import open_image

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DARKCFG_SHARED", HERE.parent.parent / "shared"))


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = cpu_seconds() - self.cpu


def line(name: str, clock: Clock, n: int, extra: str = "") -> float:
    per = clock.wall / n
    print(f"{name:<26}{1 / per:7.2f} images/s  {per * 1e3:7.1f} ms/image  "
          f"{clock.cpu / n * 1e3:7.1f} CPU ms/image{extra}")
    return per


def make_dataset(folder: Path, images: int, root: Path, name: str = "bench"
                 ) -> tuple[Path, list[str]]:
    """A .data file whose valid list repeats the sample images up to `images` lines."""
    samples = sorted(str(p) for p in (root / "images").glob("*.png"))
    if not samples:
        sys.exit(f"no sample images in {root / 'images'}")
    paths = [samples[i % len(samples)] for i in range(images)]
    (folder / f"{name}.txt").write_text("".join(p + "\n" for p in paths))
    names = SHARED / "official" / "coco.names"
    data = folder / f"{name}.data"
    data.write_text(f"valid={folder / f'{name}.txt'}\nnames={names}\n")
    return data, paths


def per_image(model: darkcfg.DarknetModel, paths: list[str]) -> Clock:
    """The per-image loop (decode, resize, forward, decode, NMS), one image at a time."""
    with Clock() as c:
        for p in paths:
            detector_map.map_detections(model, load_image(open_image(p)))
    return c


def opencv(cfg: str, weights: str, paths: list[str], size: tuple[int, int]) -> tuple[Clock, str]:
    """OpenCV DNN, one image at a time, with darkcfg's decode and Darknet resize."""
    import cv2

    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = net.getUnconnectedOutLayersNames()

    def one(p: str) -> None:
        x = network_input(load_image(open_image(p)), *size)[None].numpy()
        net.setInput(x)
        net.forward(names)

    one(paths[0])  # warm-up (OpenCV allocates on the first forward)
    with Clock() as c:
        for p in paths:
            one(p)
    return c, cv2.__version__


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", default=str(SHARED / "official" / "yolov3-tiny.cfg"))
    ap.add_argument("--weights", default=str(SHARED / "official" / "yolov3-tiny.weights"))
    ap.add_argument("--set", default=str(SHARED / "official" / "map" / "sets" / "clean"),
                    help="a folder with images/*.png and their label files")
    ap.add_argument("--images", type=int, default=304, help="lines of the image list (304)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None,
                    help="decoding processes (default: the pipeline's, min(4, CPUs - 2))")
    ap.add_argument("--per-image", type=int, default=48,
                    help="images timed through the per-image loops and OpenCV (48)")
    ap.add_argument("--threads", type=int, help="torch threads of the forward (default: torch's)")
    ap.add_argument("--no-opencv", action="store_true")
    ap.add_argument("--map-only", action="store_true", help="time darkcfg map alone")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", darkcfg.CfgWarning)
    darkcfg.tune_malloc()
    workers = pipeline.default_workers() if args.workers is None else args.workers
    print(f"bench_map: {Path(args.cfg).name}, {args.images} images, batch {args.batch}, "
          f"{workers} workers, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs")
    print(f"load average at start: {load_average()}")
    model = darkcfg.load(args.cfg, args.weights)
    net = model.network.net
    with tempfile.TemporaryDirectory() as tmp:
        data, paths = make_dataset(Path(tmp), args.images, Path(args.set))
        sample = paths[:args.per_image]
        warm, _ = make_dataset(Path(tmp), args.batch, Path(args.set), "warm-up")
        darkcfg.evaluate(warm, model, batch=args.batch, workers=0)  # first-use costs
        with Clock() as c:
            result = darkcfg.evaluate(data, model, batch=args.batch, workers=workers)
        t_map = line("darkcfg map (pipeline)", c, len(paths),
                     f"  (mAP {result.map:.4f}, {result.detections_count} records)")
        if args.map_only:
            print(f"load average at end:   {load_average()}")
            return 0
        t_loop = line("per-image loop (unfused)", per_image(model, sample), len(sample))
        fast = pipeline.prepare_model(model)
        t_fused = line("per-image loop (fused-cl)", per_image(fast, sample), len(sample))
        print(f"pipeline / per-image      {t_loop / t_map:.2f}x faster than the unfused loop, "
              f"{t_fused / t_map:.2f}x than the fused one")
        if not args.no_opencv:
            c_cv, version = opencv(args.cfg, args.weights, sample, (net.width, net.height))
            t_cv = line(f"OpenCV {version} DNN", c_cv, len(sample),
                        "  (forward only, one image at a time)")
            print(f"darkcfg map / OpenCV      {t_cv / t_map:.2f}x OpenCV's throughput")
    print(f"load average at end:   {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
