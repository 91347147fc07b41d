"""Darknet's image handling: loading to its float planar layout, its own bilinear `resize_image`,
`letterbox_image`, and drawing detections the way `draw_detections_v3` does.

Darknet feeds the network an RGB image, planar (C, H, W), as ``uint8 / 255`` in float32, resized
by its own two-pass bilinear filter (image.c) — not OpenCV's or Pillow's. The functions here repeat
its float32 arithmetic operation by operation, so from the same decoded pixels the network input
is bit-identical to Darknet's. Decoding itself is Pillow's (libjpeg), which can differ from
Darknet's stb_image by a few levels per pixel for JPEGs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

if TYPE_CHECKING:
    from .detection import Detection

__all__ = ["ImageSource", "load_image", "image_from_array", "resize_image", "letterbox_image",
           "letterbox_size", "network_input", "to_pil", "class_color", "draw_detections"]

ImageSource = str | os.PathLike | Image.Image | np.ndarray | Tensor

_F32 = np.float32


# --- loading -----------------------------------------------------------------------------------

def load_image(source: ImageSource, channels: int = 3) -> Tensor:
    """An image as Darknet's float image: (channels, H, W) float32, ``uint8 / 255``.

    `source` is a path, a PIL image, a uint8 array (H, W) or (H, W, C), or a float tensor
    (C, H, W) in [0, 1] that is already a Darknet image (returned as is). Like Darknet's
    `load_image`, EXIF orientation is ignored."""
    if isinstance(source, Tensor):
        if source.dim() != 3 or source.shape[0] != channels:
            raise ValueError(f"expected a ({channels}, H, W) image tensor, got shape "
                             f"{tuple(source.shape)}")
        return source.float()
    if isinstance(source, np.ndarray):
        return image_from_array(_channels_from_array(source, channels))
    if isinstance(source, (str, os.PathLike)):
        with Image.open(Path(source)) as im:
            return image_from_array(_pil_pixels(im, channels))
    if isinstance(source, Image.Image):
        return image_from_array(_pil_pixels(source, channels))
    raise TypeError(f"cannot read an image from {type(source).__name__}")


def image_from_array(pixels: np.ndarray) -> Tensor:
    """uint8 (H, W, C) or (H, W) pixels → Darknet's float image (C, H, W): exactly u8 / 255.f."""
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected (H, W) or (H, W, C) pixels, got shape {a.shape}")
    planar = np.ascontiguousarray(a.transpose(2, 0, 1)).astype(_F32) / _F32(255)
    return torch.from_numpy(planar)


def _pil_pixels(im: Image.Image, channels: int) -> np.ndarray:
    """Decoded pixels with the channel count Darknet asks stb_image for."""
    if channels == 3:
        return np.asarray(im.convert("RGB"))
    if channels == 4:
        return np.asarray(im.convert("RGBA"))
    if channels == 1:
        if im.mode == "L":
            return np.asarray(im)
        return _stb_luma(np.asarray(im.convert("RGB")))
    raise ValueError(f"cannot load an image with {channels} channels (Darknet loads 1, 3 or 4)")


def _channels_from_array(a: np.ndarray, channels: int) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected (H, W) or (H, W, C) pixels, got shape {a.shape}")
    have = a.shape[2]
    if have == channels:
        return a
    if channels == 1 and have in (3, 4):
        return _stb_luma(a[:, :, :3])
    if channels == 3 and have == 1:
        return np.repeat(a, 3, axis=2)
    if channels == 3 and have == 4:
        return a[:, :, :3]
    raise ValueError(f"cannot make {channels} channels from an array with {have}")


def _stb_luma(rgb: np.ndarray) -> np.ndarray:
    """stb_image's RGB → grey conversion (what Darknet gets for a 1-channel net)."""
    r, g, b = (rgb[:, :, i].astype(np.int32) for i in range(3))
    return ((r * 77 + g * 150 + b * 29) >> 8).astype(np.uint8)


# --- Darknet's resize and letterbox ------------------------------------------------------------

def resize_image(im: Tensor, w: int, h: int) -> Tensor:
    """Darknet's `resize_image`: bilinear over the corner-aligned grid, columns first, then rows,
    in float32 exactly as image.c computes it. `im` is (C, H, W) or (N, C, H, W)."""
    if w <= 0 or h <= 0:
        raise ValueError(f"cannot resize to {w}x{h}")
    src_h, src_w = im.shape[-2:]
    if (src_w, src_h) == (w, h):
        return im.clone()
    im = im.float()
    part = _resize_columns(im, src_w, w)
    return _resize_rows(part, src_h, h)


def _scale(src: int, dst: int) -> np.float32:
    """`(float)(src - 1) / (dst - 1)`; only used when dst > 1 (dst == 1 reads index 0)."""
    return _F32(src - 1) / _F32(dst - 1) if dst > 1 else _F32(0)


def _split(positions: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer part (C's truncation), fraction in float32, and the next index clamped to the image
    (Darknet would read past it only where float rounding lands exactly on the last pixel)."""
    ix = positions.astype(np.int64)
    frac = (positions - ix.astype(_F32)).astype(_F32)
    return ix, frac, np.minimum(ix + 1, limit - 1)


def _resize_columns(im: Tensor, src_w: int, w: int) -> Tensor:
    last = im[..., src_w - 1:src_w]
    if src_w == 1:
        return last.expand(*im.shape[:-1], w).clone()
    sx = np.arange(w - 1, dtype=_F32) * _scale(src_w, w)
    ix, dx, ix1 = _split(sx, src_w)
    d = torch.from_numpy(dx).to(im.device)
    inner = (1 - d) * im[..., torch.from_numpy(ix).to(im.device)] + \
        d * im[..., torch.from_numpy(ix1).to(im.device)]
    return torch.cat((inner, last), -1)


def _resize_rows(part: Tensor, src_h: int, h: int) -> Tensor:
    sy = np.arange(h, dtype=_F32) * _scale(src_h, h)
    iy, dy, iy1 = _split(sy, src_h)
    if src_h == 1:
        iy = np.zeros_like(iy)
    d = torch.from_numpy(dy).to(part.device)[:, None]
    out = (1 - d) * part[..., torch.from_numpy(iy).to(part.device), :]
    if src_h > 1 and h > 1:
        # every row but the last adds its lower neighbour's share (Darknet skips it for r == h-1)
        lower = d[:-1] * part[..., torch.from_numpy(iy1[:-1]).to(part.device), :]
        out = torch.cat((out[..., :-1, :] + lower, out[..., -1:, :]), -2)
    return out


def letterbox_size(im_w: int, im_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """The size Darknet's `letterbox_image` resizes to (aspect kept, C integer arithmetic)."""
    if _F32(net_w) / _F32(im_w) < _F32(net_h) / _F32(im_h):
        return net_w, (im_h * net_w) // im_w
    return (im_w * net_h) // im_h, net_h


def letterbox_image(im: Tensor, w: int, h: int) -> Tensor:
    """Darknet's `letterbox_image`: resize keeping the aspect ratio, centred on 0.5 grey."""
    src_h, src_w = im.shape[-2:]
    new_w, new_h = letterbox_size(src_w, src_h, w, h)
    resized = resize_image(im, new_w, new_h)
    boxed = torch.full((*im.shape[:-2], h, w), 0.5, dtype=torch.float32, device=im.device)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    # embed_image: pixels that fall outside the canvas are dropped
    x0, y0 = max(dx, 0), max(dy, 0)
    x1, y1 = min(dx + new_w, w), min(dy + new_h, h)
    boxed[..., y0:y1, x0:x1] = resized[..., y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return boxed


def network_input(im: Tensor, w: int, h: int, letterbox: bool = False) -> Tensor:
    """What Darknet's `detector test` feeds the network: `letterbox_image` or `resize_image`."""
    return letterbox_image(im, w, h) if letterbox else resize_image(im, w, h)


# --- drawing -----------------------------------------------------------------------------------

_COLORS = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))


def _get_color(c: int, x: int, classes: int) -> float:
    """Darknet's get_color: a colour ramp through _COLORS."""
    ratio = _F32(_F32(x) / _F32(classes)) * _F32(5)
    i, j = int(np.floor(ratio)), int(np.ceil(ratio))
    ratio = _F32(ratio - _F32(i))
    return float((_F32(1) - ratio) * _F32(_COLORS[i][c]) + ratio * _F32(_COLORS[j][c]))


def class_color(class_id: int, classes: int) -> tuple[float, float, float]:
    """The (r, g, b) in [0, 1] Darknet draws class `class_id` with."""
    offset = class_id * 123457 % classes
    return _get_color(2, offset, classes), _get_color(1, offset, classes), \
        _get_color(0, offset, classes)


def to_pil(source: ImageSource) -> Image.Image:
    """An RGB PIL image to draw on (a copy)."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (str, os.PathLike)):
        with Image.open(Path(source)) as im:
            return im.convert("RGB")
    if isinstance(source, Tensor):
        a = source.detach().cpu().float().clamp(0, 1).numpy()
        a = (a * 255).astype(np.uint8).transpose(1, 2, 0)  # Darknet truncates when it saves
        return Image.fromarray(a if a.shape[2] != 1 else a[:, :, 0]).convert("RGB")
    a = np.asarray(source)
    return Image.fromarray(a).convert("RGB")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def draw_detections(image: ImageSource, detections: Sequence[Detection], *,
                    classes: int | None = None) -> Image.Image:
    """The image with Darknet-style boxes and labels (a new RGB PIL image).

    As Darknet's `draw_detections_v3`: one box per detected object in its best class's colour,
    ``im.h * 0.002`` pixels wide (at least 1), the label ``name: prob`` plus the object's other
    classes on a 0.7-opaque tab of that colour above the box; boxes with higher probability are
    drawn last. The font is Pillow's default, not Darknet's letter images.
    `classes` is the number of classes of the net (for the colours); default: the largest class id
    + 1 among the detections, so pass it to get Darknet's exact colours."""
    out = to_pil(image)
    objects = _group_objects(detections)
    if not objects:
        return out
    n_classes = classes or max(d.class_id for d in detections) + 1
    im_w, im_h = out.size
    width = max(int(im_h * 0.002), 1)
    font = _font(max(int(im_h * 0.03), 10))
    draw = ImageDraw.Draw(out)
    labels = []
    for best, others in sorted(objects, key=lambda o: o[0].prob):
        rgb = class_color(best.class_id, n_classes)
        color = tuple(int(255 * v) for v in rgb)
        left, top, right, bot = _box_corners(best, im_w, im_h)
        for i in range(width):
            x1, y1, x2, y2 = left + i, top + i, right - i, bot - i
            draw.rectangle([min(max(x1, 0), im_w - 1), min(max(y1, 0), im_h - 1),
                            min(max(x2, 0), im_w - 1), min(max(y2, 0), im_h - 1)], outline=color)
        text = f"{best.label}: {best.prob:.2f}" + "".join(f", {d.label}" for d in others)
        labels.append((text, left, top + width, rgb))
    pixels = np.asarray(out, dtype=np.float32) / 255
    for text, left, row, rgb in labels:
        _draw_label(pixels, text, left, row, rgb, font)
    return Image.fromarray(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8))


def _group_objects(detections: Sequence[Detection]) -> list[tuple[Detection, list[Detection]]]:
    """One entry per object (same `index`): its best class first, then its other classes."""
    objects: dict[int, tuple[Detection, list[Detection]]] = {}
    for d in detections:
        if d.index in objects:
            objects[d.index][1].append(d)
        else:
            objects[d.index] = (d, [])
    return list(objects.values())


def _box_corners(d: Detection, im_w: int, im_h: int) -> tuple[int, int, int, int]:
    """Darknet's int conversion (toward zero) of the box edges, clipped to the image."""
    x, y, w, h = (float(v) for v in d.bbox)
    left = int((x - w / 2.0) * im_w)
    right = int((x + w / 2.0) * im_w)
    top = int((y - h / 2.0) * im_h)
    bot = int((y + h / 2.0) * im_h)
    return max(left, 0), max(top, 0), min(right, im_w - 1), min(bot, im_h - 1)


def _draw_label(pixels: np.ndarray, text: str, left: int, row: int,
                rgb: tuple[float, float, float], font: ImageFont.ImageFont) -> None:
    """Darknet's draw_weighted_label: tab = 0.7·colour + 0.3·image, letters = 0.3·image."""
    x0, y0, x1, y1 = font.getbbox(text)
    pad = max((y1 - y0) // 4, 1)
    tw, th = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    mask = Image.new("L", (tw, th), 0)
    ImageDraw.Draw(mask).text((pad - x0, pad - y0), text, fill=255, font=font)
    letters = np.asarray(mask, dtype=np.float32) / 255
    im_h, im_w = pixels.shape[:2]
    if row - th >= 0:
        row -= th
    h, w = min(th, im_h - row), min(tw, im_w - left)
    if h <= 0 or w <= 0:
        return
    region = pixels[row:row + h, left:left + w]
    tab = (1 - letters[:h, :w])[:, :, None] * np.asarray(rgb, np.float32)
    pixels[row:row + h, left:left + w] = tab * 0.7 + region * 0.3
