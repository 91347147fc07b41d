#!/usr/bin/env python3
"""Train cfgs/shapes-tiny.cfg from scratch on a synthetic shapes dataset on this machine and report
mAP@0.5 on its held-out list, and the training throughput.

    python tools/bench_train.py [--iterations 300] [--train 400] [--valid 100] [--workers 2]
                                [--darknet gpu] [--out /tmp/bench_train]

Writes the dataset (tools/make_shapes.py) under --out, trains with `darkcfg train` semantics
(darkcfg.train.job.TrainJob, the cfg's max_batches set to --iterations) and evaluates the final
weights with `darkcfg map`'s code. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--valid", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--darknet", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/bench_train")
    args = ap.parse_args(argv)

    import darkcfg
    from darkcfg.detector_map import evaluate
    from darkcfg.train.job import JobOptions, TrainJob

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)
    if not Path("shapes/obj.data").exists():
        subprocess.run([sys.executable, str(REPO / "tools" / "make_shapes.py"), "shapes",
                        "--train", str(args.train), "--valid", str(args.valid), "--seed",
                        str(args.seed)], check=True)
    cfg = (REPO / "cfgs" / "shapes-tiny.cfg").read_text()
    steps = f"steps={int(args.iterations * .8)},{int(args.iterations * .9)}"
    cfg = cfg.replace("max_batches=1000", f"max_batches={args.iterations}") \
        .replace("steps=800,900", steps)
    Path("shapes-tiny.cfg").write_text(cfg)
    for p in Path("shapes/backup").glob("shapes-tiny_*"):
        p.unlink()
    net = darkcfg.parse("shapes-tiny.cfg")
    batch = int(cfg.split("batch=")[1].split()[0])
    print(f"darkcfg bench_train: shapes-tiny {net.net.width}x{net.net.height}, batch {batch}, "
          f"{args.iterations} iterations, {args.train} training / {args.valid} held-out images, "
          f"darknet={args.darknet}, {args.workers} workers, load {os.getloadavg()[0]:.2f}")
    options = JobOptions("shapes/obj.data", "shapes-tiny.cfg", seed=args.seed,
                         workers=args.workers, darknet=args.darknet, chart=True,
                         out=lambda line: None)
    start = time.perf_counter()
    TrainJob(options).run()
    seconds = time.perf_counter() - start
    result = evaluate("shapes/obj.data", "shapes-tiny.cfg", "shapes/backup/shapes-tiny_final.weights")
    print(f"trained {args.iterations * batch} images in {seconds:.0f} s: "
          f"{args.iterations * batch / seconds:.1f} images/s ({seconds / args.iterations:.2f} s "
          f"per iteration)")
    print(f"mAP@0.50 on the held-out list: {100 * result.map:.2f} %  "
          + "  ".join(f"{c.name} {100 * c.ap:.1f}" for c in result.classes))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
