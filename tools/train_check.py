#!/usr/bin/env python3
"""Run darkcfg.Trainer on every case of ../shared/oracle/train and print, per case and iteration,
the loss error and the worst segment's update error against Darknet's own iterations.

    python tools/train_check.py [CASE ...] [--darknet cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from train_oracle import TrainCase, train_cases  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*")
    p.add_argument("--darknet", default="cpu")
    p.add_argument("--resync", action="store_true",
                   help="start each iteration from Darknet's weights after the previous one "
                        "(cases whose segments are all stored), as tests/test_train_oracle.py")
    args = p.parse_args()
    names = args.cases or train_cases()
    bad = 0
    print(f"{'case':28} it  {'loss err':>9}  {'worst seg err':>13}  {'allowed':>8}  worst segment")
    for name in names:
        start = time.perf_counter()
        try:
            case = TrainCase(name)
            results = case.run(args.darknet, resync=args.resync and case.resyncable)
        except Exception as exc:  # report and go on with the other cases
            print(f"{name:28} --  error: {type(exc).__name__}: {exc}")
            bad += 1
            continue
        for it, r in enumerate(results):
            flag = "" if r.ok else "  FAIL"
            bad += not r.ok
            print(f"{name:28} {it:2d}  {r.loss_err:9.2e}  {r.seg_err:13.2e}  {r.allowed:8.1e}  "
                  f"{r.worst}{flag}")
        print(f"{'':28}     ({time.perf_counter() - start:.1f} s)")
    print(f"{bad} failing iterations" if bad else "all iterations within tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
