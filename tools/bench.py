#!/usr/bin/env python3
"""darkcfg benchmark: parse+build, weights load (vs. a raw read), forward, memory; optionally
against OpenCV's Darknet importer on the same cfg and weights, in the same process.

Usage:
  python tools/bench.py CFG [--weights FILE] [--size 416 | --width W --height H] [--batch 1]
                        [--repeat 10] [--mode eager|fused|fused-cl|compiled] [--compare opencv]
  python tools/bench.py CFG --train [--size 416] [--batch 16] [--subdivisions 1] [--repeat 3]

--train times one darkcfg.Trainer iteration (the cfg's batch set to --batch, subdivisions to
--subdivisions, random boxes) against the same model's eval forward on the same batch, side by
side, and reports the peak RSS.

Without --weights a file with Darknet's layout and random values is written to a temporary folder
(BN variances positive, so the numbers stay finite). Every figure is the median over the repeats,
with the min and max as its spread. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import darkcfg
from darkcfg.graph import Network
from darkcfg.weights import WeightsHeader

MODES = ("eager", "fused", "fused-cl", "compiled")


# -- measuring ---------------------------------------------------------------------------------

def timed(fn: Callable[[], object], repeat: int, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def fmt(times: list[float]) -> str:
    return (f"median {statistics.median(times) * 1e3:9.1f} ms  "
            f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}, n={len(times)})")


def peak_rss_mb() -> float:
    """The process's peak resident set size so far."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_activation_mb(model: darkcfg.DarknetModel, batch: int) -> float:
    """Largest total size of the layer outputs the forward plan holds at once (float32)."""
    specs = model.network.layers
    live: dict[int, int] = {}
    peak = 0
    for i, _inputs, keep, free in model._steps:
        size = batch * specs[i].out_shape.size * 4
        peak = max(peak, sum(live.values()) + size)
        for j in free:
            live.pop(j, None)
        if keep:
            live[i] = size
    return peak / 2**20


# -- inputs ------------------------------------------------------------------------------------

def random_weights(network: Network, path: Path, seed: int = 0) -> None:
    """A .weights file with the cfg's layout and values that keep activations in range: weights
    N(0, 1/fan_in), BN scales and variances in [0.5, 1.5], biases and means in [-0.1, 0.1]
    (exploding values would time inf/NaN arithmetic instead of the network)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(WeightsHeader(0, 2, 5, 0).to_bytes())
        for spec in network:
            outputs = 1
            for seg in spec.segments:
                if seg.kind == "bias":
                    outputs = seg.count
                if seg.kind == "weight":
                    fan_in = max(1, seg.count // outputs)
                    values = rng.standard_normal(seg.count, np.float32)
                    values *= np.float32(1 / np.sqrt(fan_in))
                elif seg.kind in ("scale", "variance", "other"):
                    values = rng.uniform(0.5, 1.5, seg.count).astype(np.float32)
                else:
                    values = rng.uniform(-0.1, 0.1, seg.count).astype(np.float32)
                values.astype("<f4").tofile(fh)


def load_rss_child(cfg: str, weights: str, overrides: dict[str, int]) -> dict[str, float]:
    """Peak RSS of darkcfg.load in a fresh interpreter, above its RSS just before the call
    (torch and darkcfg imported and warmed up by a tiny build).

    Linux's peak counter (VmHWM) is reset first (/proc/self/clear_refs), so the imports' own
    peak does not hide the load's."""
    code = (
        "import json, warnings, darkcfg, torch, numpy\n"
        "warnings.simplefilter('ignore')\n"
        "def status(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key):\n"
        "            return int(line.split()[1]) / 1024\n"
        "darkcfg.build('[net]\\nwidth=8\\nheight=8\\nchannels=3\\n[conv]\\nfilters=2\\n', init=False)"
        "  # torch's lazy first-use set-up belongs to the baseline\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = status('VmRSS:')\n"
        f"m = darkcfg.load({cfg!r}, {weights!r}, **{overrides!r})\n"
        "print(json.dumps({'base_mb': base, 'peak_mb': status('VmHWM:')}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- models ------------------------------------------------------------------------------------

def prepare(model: darkcfg.DarknetModel, mode: str, x: torch.Tensor
            ) -> tuple[Callable[[torch.Tensor], object], torch.Tensor, float]:
    """The callable to time for `mode`, its input, and the seconds spent preparing it."""
    t = time.perf_counter()
    if mode != "eager":
        model.fuse()
    if mode in ("fused-cl", "compiled"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fn: Callable[[torch.Tensor], object] = model
    if mode == "compiled":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold the weights, prepack them for oneDNN
        fn = torch.compile(model)
        with torch.inference_mode():
            fn(x)  # compiles
    return fn, x, time.perf_counter() - t


def opencv_forward(cfg: str, weights: str, x: np.ndarray, repeat: int, warmup: int
                   ) -> tuple[list[float], str]:
    """cv2.dnn's Darknet importer on the same files (its outputs are decoded boxes, so only the
    time is compared)."""
    import cv2

    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = net.getUnconnectedOutLayersNames()

    def run() -> list[np.ndarray]:
        net.setInput(x)
        return net.forward(names)

    return timed(run, repeat, warmup), cv2.__version__


# -- main --------------------------------------------------------------------------------------

def random_targets(batch: int, classes: int, boxes: int = 8, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.randint(0, classes, (boxes, 1), generator=g).float(),
                       torch.rand(boxes, 2, generator=g) * 0.8 + 0.1,
                       torch.rand(boxes, 2, generator=g) * 0.3 + 0.05], 1)
            for _ in range(batch)]


def bench_train(args: argparse.Namespace, overrides: dict[str, int], tuned: bool) -> int:
    """One Trainer iteration against the eval forward of the same model on the same batch."""
    from darkcfg.train import Trainer

    network = darkcfg.parse(args.cfg, **overrides)
    network.set("net", batch=args.batch, subdivisions=args.subdivisions)
    s = network.net.input_shape
    print(f"darkcfg bench --train: {Path(args.cfg).name} {s.w}x{s.h}, batch {args.batch}, "
          f"subdivisions {args.subdivisions}, darknet={args.darknet}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), malloc {'tuned' if tuned else 'as is'}")
    model = darkcfg.build(network)
    trainer = Trainer(model, darknet=args.darknet)
    heads = [network[i].options.classes for i in trainer.losses
             if hasattr(network[i].options, "classes")]
    x = torch.rand(args.batch, s.c, s.h, s.w)
    targets = random_targets(args.batch, min(heads) if heads else 1) if heads \
        else torch.eye(network[-1].out_shape.size)[torch.randint(0, network[-1].out_shape.size,
                                                                  (args.batch,))]
    model.eval()
    with torch.inference_mode():
        t_fwd = timed(lambda: model(x), args.repeat, 1)
    t_step = timed(lambda: trainer.step(x, targets), args.repeat, 1)
    print(f"eval forward (eager)     {fmt(t_fwd)}")
    print(f"training iteration       {fmt(t_step)}")
    print(f"iteration / forward      {statistics.median(t_step) / statistics.median(t_fwd):.2f}x"
          f"  ({args.batch / statistics.median(t_step):.2f} images/s trained)")
    print(f"peak RSS of this process {peak_rss_mb():.0f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cfg")
    ap.add_argument("--weights", help="Darknet .weights (default: random, with the cfg's layout)")
    ap.add_argument("--size", type=int, help="input width and height (default: the cfg's)")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mode", choices=MODES, default="fused-cl",
                    help="eager: as built; fused: fuse(); fused-cl: fuse() + channels-last "
                         "(default); compiled: that under torch.compile (inductor, freezing)")
    ap.add_argument("--threads", type=int, help="torch/OpenCV threads (default: their own)")
    ap.add_argument("--compare", choices=["opencv"], action="append", default=[])
    ap.add_argument("--no-load-rss", action="store_true", help="skip the child-process RSS run")
    ap.add_argument("--quiet", action="store_true",
                    help="do not say on stderr what a long step (torch.compile) is doing")
    ap.add_argument("--train", action="store_true",
                    help="time a training iteration against the eval forward (see above)")
    ap.add_argument("--subdivisions", type=int, default=1, help="with --train (1)")
    ap.add_argument("--darknet", choices=["gpu", "cpu"], default="gpu",
                    help="with --train: the Darknet build the trainer follows (gpu)")
    ap.add_argument("--no-tune-malloc", action="store_true",
                    help="leave glibc's malloc as it is (default: darkcfg.tune_malloc())")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", darkcfg.CfgWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = not args.no_tune_malloc and darkcfg.tune_malloc()

    overrides = {k: v for k, v in (("width", args.width or args.size),
                                   ("height", args.height or args.size)) if v}
    if args.train:
        return bench_train(args, overrides, tuned)
    name = Path(args.cfg).name
    print(f"darkcfg bench: {name}, mode {args.mode}, batch {args.batch}, torch {torch.__version__}"
          f" ({torch.get_num_threads()} threads), malloc {'tuned' if tuned else 'as is'}")

    t_parse = timed(lambda: darkcfg.parse(args.cfg, **overrides), args.repeat)
    network = darkcfg.parse(args.cfg, **overrides)
    s = network.net.input_shape
    print(f"input {s.w}x{s.h}x{s.c}, {len(network)} layers, {network.weight_count:,} weights, "
          f"{network.total_bflops:.3f} BFLOPs")
    print(f"parse                    {fmt(t_parse)}")
    t_build = timed(lambda: darkcfg.build(network, init=False), args.repeat)
    print(f"build, no init (load's)  {fmt(t_build)}")
    t_init = timed(lambda: darkcfg.build(network), max(3, args.repeat // 3))
    print(f"build, Darknet's init    {fmt(t_init)}")

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            weights = str(Path(tmp) / "random.weights")
            random_weights(network, Path(weights))
        size_mb = Path(weights).stat().st_size / 2**20
        header = WeightsHeader(0, 2, 5, 0).nbytes

        def raw_read() -> np.ndarray:
            return np.fromfile(weights, "<f4", offset=header)

        t_raw = timed(raw_read, args.repeat, 1)
        model = darkcfg.build(network, init=False)
        t_load = timed(lambda: model.load_darknet_weights(weights), args.repeat, 1)
        print(f"raw numpy.fromfile       {fmt(t_raw)}  ({size_mb:.1f} MiB)")
        print(f"load_darknet_weights     {fmt(t_load)}  "
              f"= {statistics.median(t_load) / statistics.median(t_raw):.2f}x the raw read")
        if not args.no_load_rss:
            rss = load_rss_child(args.cfg, weights, overrides)
            above = rss["peak_mb"] - rss["base_mb"]
            print(f"darkcfg.load peak RSS    {above:.1f} MiB above the interpreter's "
                  f"{rss['base_mb']:.0f} MiB = {above / size_mb:.2f}x the file")

        model = darkcfg.load(network, weights)
        x = torch.rand(args.batch, s.c, s.h, s.w)
        if args.mode == "compiled" and not args.quiet:
            print("compiling with torch.compile (the first call takes 10-60 s) ...",
                  file=sys.stderr, flush=True)
        fn, xin, t_prep = prepare(model, args.mode, x)
        if args.mode == "compiled":
            print(f"torch.compile            {t_prep:.1f} s (first call)")
        with torch.inference_mode():
            t_fwd = timed(lambda: fn(xin), args.repeat, args.warmup)
        print(f"forward ({args.mode:<8})       {fmt(t_fwd)}")
        print(f"peak activations         {peak_activation_mb(model, args.batch):.1f} MiB "
              f"(layer outputs held at once)")
        print(f"peak RSS of this process {peak_rss_mb():.0f} MiB")

        if "opencv" in args.compare:
            import cv2

            if args.threads:
                cv2.setNumThreads(args.threads)
            t_cv, version = opencv_forward(args.cfg, weights, x.numpy(), args.repeat,
                                           args.warmup)
            ratio = statistics.median(t_fwd) / statistics.median(t_cv)
            print(f"OpenCV {version} forward   {fmt(t_cv)}")
            print(f"darkcfg / OpenCV         {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
