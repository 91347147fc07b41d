"""Access to ../shared/oracle: Darknet's own layer outputs, layouts and summaries."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def find_shared() -> tuple[Path | None, str]:
    """The shared data folder, or None and why not. DARKCFG_SHARED, when set, is the only place
    looked at: a wrong path must say so, not quietly test against another copy."""
    env = os.environ.get("DARKCFG_SHARED")
    if env:
        path = Path(env)
        if not path.is_dir():
            return None, f"DARKCFG_SHARED={env} is not a folder"
        if not (path / "oracle").is_dir():
            return None, f"DARKCFG_SHARED={env} has no oracle folder (Darknet's outputs)"
        return path, ""
    for cand in (REPO.parent / "shared", REPO / "shared"):
        if (cand / "oracle").is_dir():
            return cand, ""
    return None, ("../shared (Darknet's oracle outputs and cfg corpus) is not present next to "
                  "the repository; set DARKCFG_SHARED to its path")


def shared_dir() -> Path | None:
    return find_shared()[0]


SHARED, SKIP_REASON = find_shared()
needs_shared = pytest.mark.skipif(SHARED is None, reason=SKIP_REASON)

NETS = ["yolov3-tiny", "yolov4-tiny", "yolov3", "yolov4", "darknet53", "csdarknet53-omega"]


@dataclass
class OracleCase:
    name: str
    folder: Path

    @functools.cached_property
    def meta(self) -> dict:
        return json.loads((self.folder / "meta.json").read_text())

    @functools.cached_property
    def layout(self) -> dict:
        return json.loads((self.folder / "layout.json").read_text())

    @property
    def cfg_path(self) -> Path:
        return SHARED / self.meta["cfg"]

    def input(self) -> np.ndarray:
        return np.load(self.folder / "input.npy")

    def outputs(self, name: str = "outputs.npz") -> dict[str, np.ndarray]:
        with np.load(self.folder / name) as z:
            return {k: z[k] for k in z.files}

    def write_weights(self, path: Path) -> Path:
        gen_weights().write_weights(self.layout, self.meta["seed"], str(path))
        return path


def net_case(name: str) -> OracleCase:
    return OracleCase(name, SHARED / "oracle" / "nets" / name)


def micro_cases() -> list[OracleCase]:
    if SHARED is None:
        return []
    root = SHARED / "oracle" / "micro"
    return [OracleCase(p.parent.name, p.parent) for p in sorted(root.glob("*/*/meta.json"))]


@functools.cache
def gen_weights():
    """The oracle's own deterministic weights generator (numpy only)."""
    spec = importlib.util.spec_from_file_location("oracle_gen_weights",
                                                  SHARED / "oracle" / "gen_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """The oracle README's measure: max|ours - darknet| / max(1, max|darknet|)."""
    if ref.size == 0:
        return 0.0
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(1.0, float(np.abs(ref).max())))


def sample_err(ours_flat: np.ndarray, stats: dict) -> float:
    """For layers whose full tensor is not stored: compare Darknet's 32 samples."""
    ref = np.asarray(stats["sample"], np.float64)
    got = ours_flat[np.asarray(stats["sample_idx"])]
    scale = max(1.0, abs(stats["max"]), abs(stats["min"]))
    return float(np.abs(got - ref).max() / scale)
