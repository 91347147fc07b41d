"""Video files for `darkcfg detect` (Darknet's `detector demo` on a file), through PyAV (the
``video`` extra: ``pip install 'darkcfg[video]'``).

:class:`VideoFrames` gives the frames as the pipeline's samples (decoded in one worker, each
resized or letterboxed as Darknet does); :class:`VideoWriter` writes the annotated frames at the
input's frame rate. PyAV is imported only when a video is actually read or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from . import image as _image
from .pipeline import Preprocess, Sample
from .sources import SourceError

__all__ = ["VIDEO_SUFFIXES", "is_video", "VideoFrames", "VideoWriter", "check_video_out"]

# What `darkcfg detect` reads as a video (case-insensitive).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".ts")
# Encoders tried in order for an output suffix (the first PyAV's FFmpeg has).
_ENCODERS = {".webm": ("libvpx-vp9", "libvpx"), ".avi": ("mpeg4", "mjpeg")}
_DEFAULT_ENCODERS = ("libx264", "h264", "mpeg4")


def is_video(path: str | os.PathLike) -> bool:
    """True for a path with a video suffix (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _import_av():
    try:
        import av
    except ImportError:
        raise SourceError("reading or writing video needs PyAV: pip install 'darkcfg[video]'") \
            from None
    return av


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IndexError):
        return "it has no video stream"
    text = getattr(exc, "strerror", None) or str(exc)
    return (text.split(": '")[0] if text else type(exc).__name__).rstrip(";:")


class VideoFrames(IterableDataset):
    """The frames of a video file as :class:`~darkcfg.pipeline.Sample` s, in order: RGB, each
    resized or letterboxed as Darknet's demo does; `path` is ``file#frame`` (from 1). Read it
    with at most one worker: frames come out of one decoder."""

    def __init__(self, path: str | os.PathLike, prep: Preprocess, *, keep_pixels: bool = True
                 ) -> None:
        self.path = str(path)
        self.prep = prep
        self.keep_pixels = keep_pixels

    def info(self) -> tuple[int, Fraction]:
        """(frames, frames per second) from the container (frames 0 when it does not say)."""
        av = _import_av()
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.base_rate or Fraction(25)
                return int(stream.frames or 0), Fraction(rate)
        except (OSError, IndexError, av.FFmpegError) as exc:
            raise SourceError(f"cannot read video {self.path}: {_reason(exc)}") from None

    def __iter__(self) -> Iterator[Sample]:
        av = _import_av()
        worker = get_worker_info()
        if worker is not None and worker.id > 0:
            return  # only one worker decodes
        try:
            container = av.open(self.path)
        except (OSError, av.FFmpegError) as exc:
            raise SourceError(f"cannot read video {self.path}: {_reason(exc)}") from None
        with container:
            for index, frame in enumerate(container.decode(video=0)):
                rgb = frame.to_ndarray(format="rgb24")
                im = _image.load_image(rgb, channels=self.prep.channels)
                yield Sample(index, f"{self.path}#{index + 1}", self.prep(im),
                             (int(rgb.shape[1]), int(rgb.shape[0])), None,
                             rgb if self.keep_pixels else None)


def check_video_out(out: str | os.PathLike, video: str | os.PathLike) -> None:
    """`--out` for a video input, checked before the model loads: a video suffix, an existing
    folder, not the input itself."""
    target = Path(out)
    if not is_video(target):
        raise SourceError(f"--out {out}: for a video, --out is a video file "
                          f"({', '.join(VIDEO_SUFFIXES)})")
    if not target.parent.is_dir():
        raise SourceError(f"--out {out}: folder {target.parent} does not exist")
    if Path(video).exists() and target.resolve() == Path(video).resolve():
        raise SourceError(f"--out {out}: drawing {video} there would overwrite it")
    _import_av()


class VideoWriter:
    """Frames (PIL images or RGB uint8 arrays, all one size) into a video file at `rate` frames
    per second. H.264 where PyAV's FFmpeg has it (MPEG-4 part 2 otherwise; VP9 for .webm).
    yuv420p needs even sizes: an odd width or height gets one replicated edge column or row."""

    def __init__(self, path: str | os.PathLike, rate: Fraction | float) -> None:
        self.path = str(path)
        self.rate = Fraction(rate).limit_denominator(1001 * 1000)
        self._container = None
        self._stream = None

    def _open(self, width: int, height: int) -> None:
        av = _import_av()
        suffix = Path(self.path).suffix.lower()
        available = av.codec.codecs_available
        codec = next((c for c in _ENCODERS.get(suffix, _DEFAULT_ENCODERS) if c in available),
                     "mpeg4")
        try:
            self._container = av.open(self.path, mode="w")
            self._stream = self._container.add_stream(codec, rate=self.rate)
        except (OSError, ValueError, av.FFmpegError) as exc:
            raise SourceError(f"cannot write video {self.path}: {_reason(exc)}") from None
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"

    def write(self, picture: Image.Image | np.ndarray) -> None:
        av = _import_av()
        rgb = np.asarray(picture.convert("RGB") if isinstance(picture, Image.Image) else picture)
        rgb = _even(rgb)
        if self._stream is None:
            self._open(rgb.shape[1], rgb.shape[0])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))  # flush the encoder
        finally:
            self._container.close()
            self._container = None


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return rgb
