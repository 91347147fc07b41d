"""Darknet's training chart (`chart_<cfg>.png`, draw_train_chart / draw_train_loss in
image_opencv.cpp): average loss over iterations, and mAP where it was measured, drawn with Pillow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["draw_chart"]

SIZE = 1000
MARGIN = 60


def draw_chart(points: Sequence[tuple[int, float, float | None]], max_batches: int,
               path: Path, max_loss: float | None = None) -> None:
    """`points`: (iteration, average loss, mAP or None). Loss in blue on the left axis (up to
    `max_loss`, by default the largest loss), mAP in red in percent on the right."""
    img = Image.new("RGB", (SIZE, SIZE), "white")
    d = ImageDraw.Draw(img)
    top = max_loss or max((p[1] for p in points), default=1.0) or 1.0  # higher losses clip
    plot = (MARGIN, MARGIN, SIZE - MARGIN, SIZE - MARGIN)
    d.rectangle(plot, outline="black")
    width, height = plot[2] - plot[0], plot[3] - plot[1]

    def xy(it: float, frac: float) -> tuple[float, float]:
        return (plot[0] + width * it / max(max_batches, 1),
                plot[3] - height * min(max(frac, 0.0), 1.0))

    for k in range(11):
        y = plot[3] - height * k / 10
        d.line((plot[0], y, plot[2], y), fill=(220, 220, 220))
        d.text((4, y - 6), f"{top * k / 10:.2f}", fill="blue")
        d.text((plot[2] + 6, y - 6), f"{10 * k}%", fill="red")
    d.text((plot[0], plot[3] + 10), f"iteration 0 .. {max_batches}", fill="black")
    losses = [xy(it, loss / top) for it, loss, _ in points]
    if len(losses) > 1:
        d.line(losses, fill="blue", width=2)
    maps = [xy(it, m) for it, _, m in points if m is not None]
    if len(maps) > 1:
        d.line(maps, fill="red", width=2)
    for x, y in maps:
        d.ellipse((x - 3, y - 3, x + 3, y + 3), fill="red")
    last = points[-1] if points else None
    if last is not None:
        d.text((plot[0] + 10, 20), f"iteration {last[0]}, avg loss {last[1]:.4f}"
               + (f", mAP {100 * last[2]:.2f}%" if last[2] is not None else ""), fill="black")
    img.save(path, format="PNG")
