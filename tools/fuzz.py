#!/usr/bin/env python
"""Fuzz darkcfg with broken cfg and weights files (not part of CI; run by hand).

Cfg mutations of real cfgs (the public corpus in ../shared/darknet-cfgs, the micro cfgs in
../shared/oracle/micro/cfg and tests/invalid): lines deleted, duplicated, swapped or garbled,
numbers replaced by edge values, random sections and options inserted, the text truncated.
Every mutant must parse to a Network or raise darkcfg.CfgError within a second; every few
mutants that parse and are small are also built and run once, which must not raise anything but
CfgError either. Weights mutations of files written for small cfgs (truncated, extended, bytes
and header fields garbled, NaN/Inf injected, random bytes) must load or raise WeightsError, and a
failed load must leave every parameter as it was.

    python tools/fuzz.py --cfg 10000 --weights 1000 [--seed 1] [--findings DIR]

Prints counts and timings; any finding (another exception type, a slow case, a changed model)
is printed and its input saved under --findings. Exit code 1 when there are findings.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import darkcfg  # noqa: E402

SLOW_S = 1.0
INTERESTING = ["0", "-1", "1", "-3", "2", "3", "7", "16", "255", "-2", "2147483647", "2147483648",
               "-2147483648", "4294967296", "1000000000", "100000", "65536", "99999999999999999999",
               "1" * 60, "3.5", "-0.5", "1e9", "1e40", "1e-40", "nan", "inf", "-inf", "0x10",
               "+4", "", "1,2", "-1,-2,-3", "4#c", "a", "1.", ".5", "1e", "--1"]
KEYS = ["filters", "size", "stride", "pad", "padding", "groups", "layers", "from", "mask", "num",
        "classes", "anchors", "width", "height", "channels", "batch", "activation", "dontload",
        "share_index", "dilation", "output", "hidden", "stride_x", "stride_y", "antialiasing",
        "maxpool_depth", "out_channels", "coords", "side", "crop_height", "crop_width",
        "history_size", "group_id", "weights_type", "weights_normalization", "reverse", "xnor",
        "bin_output", "scale_wh", "yolo_layer", "tree", "peephole", "batch_normalize", "atoms"]
SECTIONS = ["net", "convolutional", "conv", "route", "shortcut", "maxpool", "avgpool", "upsample",
            "yolo", "region", "connected", "dropout", "softmax", "crop", "reorg", "reorg3d",
            "scale_channels", "sam", "local_avgpool", "batchnorm", "empty", "implicit",
            "normalization", "local", "rnn", "gru", "lstm", "crnn", "conv_lstm", "history",
            "detection", "Gaussian_yolo", "cost", "contrastive", "activation", "foo", ""]
GARBAGE = "[]=#;,- \t.0123456789abcxyz\x00\x01\x7f\xe9\u2028\r"


@dataclass
class Stats:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    slowest: float = 0.0
    slowest_case: str = ""
    total_s: float = 0.0

    def time(self, dt: float, name: str) -> None:
        self.total_s += dt
        if dt > self.slowest:
            self.slowest, self.slowest_case = dt, name


# --- cfg mutations ------------------------------------------------------------------------------

def _number_spans(line: str) -> list[tuple[int, int]]:
    import re
    return [m.span() for m in re.finditer(r"-?\d+(?:\.\d*)?", line)]


def mutate_cfg(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 4)):
        if not lines:
            lines = [""]
        op = rng.choice(["delete", "duplicate", "swap", "garble", "number", "number", "number",
                         "section", "option", "truncate", "value"])
        i = rng.randrange(len(lines))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == "swap":
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "garble":
            chars = list(lines[i]) or [" "]
            for _ in range(rng.randint(1, 3)):
                k = rng.randrange(len(chars) + 1)
                c = rng.choice(GARBAGE)
                if rng.random() < 0.5 and k < len(chars):
                    chars[k] = c
                else:
                    chars.insert(k, c)
            lines[i] = "".join(chars)
        elif op == "number":
            candidates = [(n, s) for n, l in enumerate(lines) for s in _number_spans(l)]
            if candidates:
                n, (a, b) = rng.choice(candidates)
                value = rng.choice(INTERESTING) if rng.random() < 0.7 else str(rng.randint(-50, 5000))
                lines[n] = lines[n][:a] + value + lines[n][b:]
        elif op == "section":
            lines.insert(i, f"[{rng.choice(SECTIONS)}]")
        elif op == "option":
            lines.insert(i, f"{rng.choice(KEYS)}={rng.choice(INTERESTING)}")
        elif op == "value":
            if "=" in lines[i]:
                key = lines[i].split("=", 1)[0]
                lines[i] = f"{key}={rng.choice(INTERESTING)}"
        elif op == "truncate":
            joined = "\n".join(lines)
            lines = joined[:rng.randrange(len(joined) + 1)].split("\n")
    return "\n".join(lines)


def cfg_sources() -> list[tuple[str, str]]:
    shared = REPO.parent / "shared"
    paths = sorted((shared / "darknet-cfgs").rglob("*.cfg")) + \
        sorted((shared / "oracle" / "micro" / "cfg").rglob("*.cfg")) + \
        sorted((REPO / "tests" / "invalid").glob("*.cfg"))
    out = []
    for p in paths:
        data = p.read_bytes()
        out.append((str(p), data.decode("utf-8", errors="replace")))
    return out


def _small(net: darkcfg.Network) -> bool:
    """Quick enough to build and run here (a mutant may legitimately need TFLOPs, e.g. a conv
    with size=878: a valid cfg within the limits, just slow; that is not what is looked for)."""
    acts = sum(l.out_shape.size for l in net) + net.net.input_shape.size
    return net.weight_count <= 70_000_000 and acts <= 8_000_000 and net.total_bflops <= 5


def run_cfg(n: int, rng: random.Random, stats: Stats, findings: Path, build_every: int) -> None:
    sources = cfg_sources()
    built = 0
    for case in range(n):
        name, text = rng.choice(sources)
        mutant = mutate_cfg(text, rng)
        label = f"cfg#{case} from {Path(name).name}"
        _progress(findings, label, mutant)
        t = time.perf_counter()
        net = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # tree= files are looked up beside the original cfg
                net = darkcfg.graph.parse_text(mutant, name)
                stats.outcomes["parsed"] += 1
            except darkcfg.CfgError as e:
                stats.outcomes["CfgError"] += 1
                if "\n" in str(e):
                    _finding(stats, findings, label, mutant, f"multi-line message: {e!r}")
            except Exception:  # noqa: BLE001 - that is the finding
                _finding(stats, findings, label, mutant, traceback.format_exc())
        dt = time.perf_counter() - t
        stats.time(dt, label)
        if dt > SLOW_S:
            _finding(stats, findings, label, mutant, f"slow parse: {dt:.2f} s")
        if net is not None and case % build_every == 0:
            net = _shrunk(net)
            if net is not None and _small(net):
                built += 1
                _build_and_run(net, label, mutant, stats, findings)
        stats.cases += 1
    stats.outcomes["built and run"] = built


def _shrunk(net: darkcfg.Network) -> darkcfg.Network | None:
    """The mutant at a 64x64 input when it is too big to build quickly (None if it cannot be)."""
    if _small(net) or net.net.width * net.net.height == 0:
        return net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return darkcfg.parse(net, width=64, height=64)
        except darkcfg.CfgError:
            return None


def _build_and_run(net: darkcfg.Network, label: str, mutant: str, stats: Stats,
                   findings: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = darkcfg.build(net)
            shape = net.net.input_shape
            with torch.no_grad():
                model(torch.zeros(1, shape.c, shape.h, shape.w))
            stats.outcomes["ran"] += 1
        except darkcfg.CfgError:
            stats.outcomes["build/run CfgError"] += 1
        except Exception:  # noqa: BLE001
            _finding(stats, findings, label + " (build/run)", mutant, traceback.format_exc())


def _progress(folder: Path, label: str, data: str) -> None:
    """The case being run, so a crash of the whole process (killed, hung) still shows its input."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "current.txt").write_text(f"{label}\n{data}", encoding="utf-8",
                                        errors="surrogateescape")


def _finding(stats: Stats, folder: Path, label: str, data: str | bytes, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    k = len(stats.findings)
    ext = "cfg" if isinstance(data, str) else "weights"
    path = folder / f"finding{k:04d}.{ext}"
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", errors="surrogateescape")
    else:
        path.write_bytes(data)
    (folder / f"finding{k:04d}.txt").write_text(f"{label}\n{what}\n")
    last = what.strip().splitlines()[-1] if what.strip() else what
    stats.findings.append(f"{label}: {last} -> {path}")
    print(f"FINDING {label}: {last}", flush=True)


# --- weights mutations --------------------------------------------------------------------------

WEIGHT_CFGS = {
    "conv-bn-fc": """[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nbatch_normalize=1
filters=4\nsize=3\npad=1\nactivation=leaky\n[convolutional]\nfilters=6\nsize=1\nactivation=linear
[maxpool]\nsize=2\nstride=2\n[connected]\noutput=5\nactivation=linear\n[connected]\noutput=3
batch_normalize=1\nactivation=relu\n""",
    "shortcut-weights": """[net]\nwidth=6\nheight=6\nchannels=2\n[convolutional]\nfilters=2
size=1\n[convolutional]\nfilters=2\nsize=3\npad=1\n[shortcut]\nfrom=-2\nweights_type=per_channel\nweights_normalization=softmax
[local]\nfilters=2\nsize=3\n[batchnorm]\n""",
    "rnn": """[net]\nwidth=1\nheight=1\nchannels=4\n[rnn]\noutput=3\nhidden=5\nbatch_normalize=1
[gru]\noutput=2\n[lstm]\noutput=2\n""",
}


def mutate_weights(data: bytes, rng: random.Random) -> bytes:
    op = rng.choice(["truncate", "truncate", "append", "flip", "flip_header", "header_field",
                     "nan", "random", "empty", "header_only", "zip", "cfg_text", "odd"])
    b = bytearray(data)
    if op == "truncate":
        return bytes(b[:rng.randrange(len(b) + 1)])
    if op == "append":
        return bytes(b) + rng.randbytes(rng.choice([1, 2, 3, 4, 8, 40, 4000]))
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op == "flip_header":
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(min(20, len(b)))] = rng.randrange(256)
        return bytes(b)
    if op == "header_field":
        field_ = rng.randrange(3)
        value = rng.choice([-1, 0, 1, 2, 5, 1000, 1001, 65535, 65536, 2**31 - 1, -2**31])
        b[4 * field_:4 * field_ + 4] = np.array([value], "<i4").tobytes()
        return bytes(b)
    if op == "nan":
        body = np.frombuffer(bytes(b[20:]), "<f4").copy()
        if len(body):
            for _ in range(rng.randint(1, 5)):
                body[rng.randrange(len(body))] = rng.choice([np.nan, np.inf, -np.inf])
        return bytes(b[:20]) + body.tobytes()
    if op == "random":
        return rng.randbytes(rng.randrange(0, 2 * len(b)))
    if op == "empty":
        return b""
    if op == "header_only":
        return bytes(b[:rng.choice([12, 16, 20])])
    if op == "zip":
        return b"PK\x03\x04" + bytes(b[4:])
    if op == "cfg_text":
        return b"[net]\nwidth=8\nheight=8\nchannels=3\n"
    return bytes(b) + b"\x00" * rng.choice([1, 2, 3])


def run_weights(n: int, rng: random.Random, stats: Stats, findings: Path) -> None:
    models = {}
    originals = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, cfg in WEIGHT_CFGS.items():
            model = darkcfg.build(cfg)
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "w.weights"
                model.save_darknet_weights(p)
                originals[name] = p.read_bytes()
            models[name] = model
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.weights"
        for case in range(n):
            name = rng.choice(sorted(models))
            model = models[name]
            data = mutate_weights(originals[name], rng)
            path.write_bytes(data)
            before = {k: v.clone() for k, v in model.state_dict().items()}
            strict = rng.random() < 0.7
            cutoff = rng.choice([None, None, None, 0, 1, 2, 100, -1])
            label = f"weights#{case} for {name} (strict={strict}, cutoff={cutoff})"
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    model.load_darknet_weights(path, strict=strict, cutoff=cutoff)
                    stats.outcomes["loaded"] += 1
                    _check_nan_warning(model, caught, label, data, stats, findings)
                except darkcfg.WeightsError as e:
                    stats.outcomes["WeightsError"] += 1
                    after = model.state_dict()
                    if any(not torch.equal(before[k], after[k], ) for k in before
                           if not (before[k].isnan().any())):
                        _finding(stats, findings, label, data, f"failed load changed the model: {e}")
                except Exception:  # noqa: BLE001
                    _finding(stats, findings, label, data, traceback.format_exc())
            dt = time.perf_counter() - t
            stats.time(dt, label)
            if dt > SLOW_S:
                _finding(stats, findings, label, data, f"slow load: {dt:.2f} s")
            stats.cases += 1


def _check_nan_warning(model, caught, label, data, stats, findings) -> None:
    has_nan = any(not torch.isfinite(t).all() for t in model.state_dict().values()
                  if t.is_floating_point())
    warned = any("NaN or infinite" in str(w.message) for w in caught)
    if has_nan and not warned:
        _finding(stats, findings, label, data, "NaN/Inf loaded without a warning")
    if has_nan:
        stats.outcomes["loaded with NaN/Inf (warned)"] += 1
        # start the next case from finite values again
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.nan_to_num_(0.0, 0.0, 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", type=int, default=10_000, help="cfg mutants")
    ap.add_argument("--weights", type=int, default=1_000, help="weights mutants")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build-every", type=int, default=10,
                    help="build and run every k-th parsed mutant (when small)")
    ap.add_argument("--findings", type=Path, default=Path(tempfile.gettempdir()) / "darkcfg-fuzz")
    ap.add_argument("--max-memory-gb", type=float, default=8.0,
                    help="address-space limit of this process: an allocation beyond it is a "
                         "MemoryError (a finding), not the machine's OOM killer")
    args = ap.parse_args(argv)
    cap = int(args.max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    rng = random.Random(args.seed)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg, wts = Stats(), Stats()
    run_cfg(args.cfg, rng, cfg, args.findings, args.build_every)
    run_weights(args.weights, rng, wts, args.findings)
    for what, s in (("cfg", cfg), ("weights", wts)):
        mean = s.total_s / max(1, s.cases) * 1000
        print(f"{what}: {s.cases} mutants, {dict(s.outcomes)}, mean {mean:.1f} ms, slowest "
              f"{s.slowest * 1000:.0f} ms ({s.slowest_case}), findings {len(s.findings)}")
    print(f"total {time.perf_counter() - t0:.0f} s, findings in {args.findings}")
    return 1 if cfg.findings or wts.findings else 0


if __name__ == "__main__":
    sys.exit(main())
