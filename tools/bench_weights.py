#!/usr/bin/env python3
"""Weights-load benchmark: darkcfg's load_darknet_weights vs. a raw numpy.fromfile of the same file.

Usage: python tools/bench_weights.py [CFG] [--weights FILE] [--repeat N]
Without --weights a file of the cfg's size (random floats) is written to a temporary folder.
Prints median and spread over the repeats; run on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import darkcfg
from darkcfg.weights import WeightsHeader


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _fmt(times: list[float]) -> str:
    return (f"median {statistics.median(times) * 1e3:8.1f} ms   "
            f"min {min(times) * 1e3:8.1f}   max {max(times) * 1e3:8.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cfg", nargs="?", default=str(Path(__file__).resolve().parents[1] / ".." /
                                                  "shared" / "darknet-cfgs" / "yolov4.cfg"))
    ap.add_argument("--weights")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    warnings.simplefilter("ignore", darkcfg.CfgWarning)

    t = time.perf_counter()
    model = darkcfg.build(args.cfg)
    print(f"build {Path(args.cfg).name}: {(time.perf_counter() - t) * 1e3:.0f} ms, "
          f"{model.network.weight_count:,} floats")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.weights
        if path is None:
            path = str(Path(tmp) / "bench.weights")
            rng = np.random.default_rng(0)
            with open(path, "wb") as fh:
                fh.write(WeightsHeader(0, 2, 5, 0).to_bytes())
                rng.standard_normal(model.network.weight_count, np.float32).tofile(fh)
        size = Path(path).stat().st_size
        print(f"file: {size / 1e6:.1f} MB")
        raw = _timed(lambda: np.fromfile(path, np.uint8), args.repeat)
        load = _timed(lambda: model.load_darknet_weights(path), args.repeat)
        print(f"raw numpy.fromfile      {_fmt(raw)}")
        print(f"load_darknet_weights    {_fmt(load)}")
        print(f"ratio (median)          {statistics.median(load) / statistics.median(raw):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
