"""What a model's requested outputs are, for building your own head (like timm's `features_only`).

``darkcfg.load(cfg, weights, out_indices=[...]).feature_info`` describes each output the model
returns, in order: its layer, channels, reduction (cumulative stride) and shape. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

from .graph import Network, Shape
from .summary import Geometry, geometry

__all__ = ["Feature", "FeatureInfo", "feature_info"]

Reduction = int | float | tuple[int | float, int | float]


@dataclass(frozen=True)
class Feature:
    """One requested output.

    `reduction`: input pixels per output pixel, an int for every usual network (a float below 1
    after upsampling past the input size, (x, y) when the two differ). `shape`: (C, H, W) at the
    cfg's input size. `receptive_field`: (x, y) input pixels, "all" when the output can depend
    on the whole input, None when unknown."""

    index: int
    type: str
    channels: int
    reduction: Reduction
    shape: tuple[int, int, int]
    receptive_field: tuple[int, int] | str | None

    def as_dict(self) -> dict:
        return asdict(self)


class FeatureInfo(Sequence[Feature]):
    """The features a model returns, in the order of `out_indices` (timm's FeatureInfo API:
    ``channels()``, ``reduction()``, ``get_dicts()``; plus ``indices()`` of the Darknet layers)."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self._features = tuple(features)

    def __len__(self) -> int:
        return len(self._features)

    def __getitem__(self, i):  # int -> Feature, slice -> FeatureInfo
        if isinstance(i, slice):
            return FeatureInfo(self._features[i])
        return self._features[i]

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._features)

    def __repr__(self) -> str:
        parts = ", ".join(f"{f.index}: {f.channels}ch/{f.reduction}" for f in self._features)
        return f"FeatureInfo({parts})"

    def _pick(self, key: str, idx: int | Sequence[int] | None):
        if idx is None:
            return [getattr(f, key) for f in self._features]
        if isinstance(idx, int):
            return getattr(self._features[idx], key)
        return [getattr(self._features[i], key) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None):
        """Channels of every feature (or of feature `idx`)."""
        return self._pick("channels", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        """Cumulative stride of every feature (or of feature `idx`)."""
        return self._pick("reduction", idx)

    def indices(self) -> list[int]:
        """The Darknet layer index of each feature (the model's `out_indices`)."""
        return [f.index for f in self._features]

    def shapes(self) -> list[tuple[int, int, int]]:
        return [f.shape for f in self._features]

    def get_dicts(self, keys: Sequence[str] | None = None,
                  idx: int | Sequence[int] | None = None) -> list[dict] | dict:
        """Each feature as a dict (only `keys` if given), as timm's FeatureInfo.get_dicts."""
        def one(f: Feature) -> dict:
            d = f.as_dict()
            return d if keys is None else {k: d[k] for k in keys}
        if isinstance(idx, int):
            return one(self._features[idx])
        chosen = self._features if idx is None else [self._features[i] for i in idx]
        return [one(f) for f in chosen]


def _number(v: Fraction) -> int | float:
    return int(v) if v.denominator == 1 else float(v)


def _reduction(network: Network, shape: Shape, g: Geometry) -> Reduction:
    """From the layer geometry; where it has no pixel grid (flat or unknown layers), from the
    ratio of the input size to the output size."""
    sx, sy = g.stride_x, g.stride_y
    if sx is None or sy is None:
        net = network.net
        sx = Fraction(net.width or 1, shape.w)
        sy = Fraction(net.height or 1, shape.h)
    return _number(sx) if sx == sy else (_number(sx), _number(sy))


def _rf(g: Geometry) -> tuple[int, int] | str | None:
    if g.scope == "local":
        return (g.rf_x, g.rf_y)
    return {"all": "all", "none": "none"}.get(g.scope)


def feature_info(network: Network, out_indices: Sequence[int] | None = None) -> FeatureInfo:
    """The features of `out_indices` (default: the network's outputs; negative indices count
    from the end, as the model's)."""
    n = len(network.layers)
    chosen = network.output_layers if out_indices is None else list(out_indices)
    geo = geometry(network)
    features = []
    for i in chosen:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"out index {i} is outside the network's {n} layers")
        spec, g = network[j], geo[j]
        s = spec.out_shape
        features.append(Feature(j, spec.type, s.c, _reduction(network, s, g), (s.c, s.h, s.w),
                                _rf(g)))
    return FeatureInfo(features)
