#!/usr/bin/env python3
"""Write a synthetic Darknet-format detection dataset: coloured shapes on noise.

    python tools/make_shapes.py OUT [--train 200] [--valid 50] [--classes 3] [--seed 0]

OUT/ then holds what `darknet detector train` (and `darkcfg train`) reads:

- ``obj/NNNNNN.png`` images and, beside each, ``obj/NNNNNN.txt`` labels (``class x y w h``
  relative to the image: the exact pixel box of each shape, Darknet's custom-dataset layout);
- ``train.txt`` and ``valid.txt`` (one image path per line, as OUT/obj/... so they resolve from
  the directory the tool ran in, as Darknet's do; --absolute writes absolute paths);
- ``obj.names`` (rectangle, ellipse, triangle, ... one per class) and ``obj.data``
  (classes, train, valid, names, backup=OUT/backup/).

Shapes never overlap, so every label box is the shape's own pixels. The same --seed writes the
same files, byte for byte. Images are PNG (lossless: a test can find a shape's pixels exactly).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("rectangle", "ellipse", "triangle", "diamond", "cross")


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its class and its pixel box (x0, y0, x1, y1), ends exclusive."""

    cls: int
    box: tuple[int, int, int, int]

    def label(self, width: int, height: int) -> str:
        x0, y0, x1, y1 = self.box
        return (f"{self.cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")


def draw_shape(draw: ImageDraw.ImageDraw, cls: int, box: tuple[int, int, int, int],
               colour: tuple[int, ...]) -> None:
    """Draws shape kind `cls` filling the pixel box (x0, y0, x1, y1), ends exclusive: every
    kind touches all four sides of its box, so the box is the shape's exact pixel box."""
    x0, y0, x1, y1 = box
    r, b = x1 - 1, y1 - 1  # PIL's coordinates are inclusive
    kind = KINDS[cls % len(KINDS)]
    if kind == "rectangle":
        draw.rectangle((x0, y0, r, b), fill=colour)
    elif kind == "ellipse":
        draw.ellipse((x0, y0, r, b), fill=colour)
    elif kind == "triangle":
        draw.polygon([((x0 + r) // 2, y0), (r, b), (x0, b)], fill=colour)
    elif kind == "diamond":
        draw.polygon([((x0 + r) // 2, y0), (r, (y0 + b) // 2), ((x0 + r) // 2, b),
                      (x0, (y0 + b) // 2)], fill=colour)
    else:
        tx, ty = max((r - x0) // 3, 1), max((b - y0) // 3, 1)
        draw.rectangle((x0 + tx, y0, r - tx, b), fill=colour)
        draw.rectangle((x0, y0 + ty, r, b - ty), fill=colour)


def shape_pixels_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The pixel box (x0, y0, x1, y1), ends exclusive, of the True pixels of `mask`."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def make_image(rng: np.random.Generator, width: int, height: int, classes: int,
               max_objects: int, min_side: int = 12) -> tuple[Image.Image, list[Shape]]:
    """One image: noise around a random grey level, then 1..max_objects non-overlapping shapes
    of random class, size and colour. The labels are measured from the drawn pixels."""
    base = int(rng.integers(40, 216))
    noise = rng.normal(base, 24, size=(height, width, 3))
    im = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    placed: list[tuple[int, int, int, int]] = []
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            sw = int(rng.integers(min_side, max(min_side + 1, width // 2)))
            sh = int(rng.integers(min_side, max(min_side + 1, height // 2)))
            x0 = int(rng.integers(0, max(width - sw, 1)))
            y0 = int(rng.integers(0, max(height - sh, 1)))
            box = (x0, y0, min(x0 + sw, width), min(y0 + sh, height))
            if all(box[2] <= p[0] or p[2] <= box[0] or box[3] <= p[1] or p[3] <= box[1]
                   for p in placed):
                break
        else:
            continue
        cls = int(rng.integers(0, classes))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        mask = Image.new("1", (width, height), 0)
        draw_shape(ImageDraw.Draw(mask), cls, box, 1)
        exact = shape_pixels_box(np.asarray(mask))
        if exact is None:
            continue
        draw_shape(draw, cls, box, colour)
        placed.append(box)
        shapes.append(Shape(cls, exact))
    return im, shapes


def make_shapes(out: str | os.PathLike, *, train: int = 200, valid: int = 50,
                classes: int = 3, seed: int = 0, min_size: int = 256, max_size: int = 512,
                max_objects: int = 4, absolute: bool = False) -> Path:
    """Writes the dataset (see the module docstring) and returns the path of its .data file.
    Image sides are drawn in [min_size, max_size]."""
    if not 1 <= classes <= len(KINDS):
        raise ValueError(f"classes must be 1..{len(KINDS)}, not {classes}")
    if train < 1 or valid < 0:
        raise ValueError("need at least one training image and a non-negative valid count")
    out = Path(out)
    folder = out / "obj"
    folder.mkdir(parents=True, exist_ok=True)
    (out / "backup").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(train + valid):
        width = int(rng.integers(min_size, max_size + 1))
        height = int(rng.integers(min_size, max_size + 1))
        im, shapes = make_image(rng, width, height, classes, max_objects)
        image = folder / f"{i:06d}.png"
        im.save(image, compress_level=1)
        image.with_suffix(".txt").write_text(
            "".join(s.label(width, height) + "\n" for s in shapes))
        paths.append(image.resolve() if absolute else image)
    (out / "train.txt").write_text("".join(f"{p}\n" for p in paths[:train]))
    (out / "valid.txt").write_text("".join(f"{p}\n" for p in paths[train:]))
    (out / "obj.names").write_text("".join(f"{k}\n" for k in KINDS[:classes]))
    root = out.resolve() if absolute else out
    data = out / "obj.data"
    data.write_text(f"classes = {classes}\ntrain = {root / 'train.txt'}\n"
                    f"valid = {root / 'valid.txt'}\nnames = {root / 'obj.names'}\n"
                    f"backup = {root / 'backup'}/\n")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write (created)")
    ap.add_argument("--train", type=int, default=200, help="training images (default 200)")
    ap.add_argument("--valid", type=int, default=50, help="validation images (default 50)")
    ap.add_argument("--classes", type=int, default=3,
                    help=f"shape kinds, 1..{len(KINDS)} (default 3: {', '.join(KINDS[:3])})")
    ap.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    ap.add_argument("--min-size", type=int, default=256, help="smallest image side (256)")
    ap.add_argument("--max-size", type=int, default=512, help="largest image side (512)")
    ap.add_argument("--max-objects", type=int, default=4, help="shapes per image, 1..N (4)")
    ap.add_argument("--absolute", action="store_true", help="write absolute paths")
    args = ap.parse_args(argv)
    try:
        data = make_shapes(args.out, train=args.train, valid=args.valid, classes=args.classes,
                           seed=args.seed, min_size=args.min_size, max_size=args.max_size,
                           max_objects=args.max_objects, absolute=args.absolute)
    except (ValueError, OSError) as exc:
        print(f"make_shapes: {exc}", file=sys.stderr)
        return 2
    print(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
