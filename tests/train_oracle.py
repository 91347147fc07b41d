"""Checking darkcfg.Trainer against ../shared/oracle/train: Darknet's own training iterations.

The measure is the oracle README's: per iteration, the loss within 1e-3 relative, and for every
weights segment the update (after - before) within 1e-3 of Darknet's largest update of that
segment, after allowing 2 ulp of the weight per element (or within 2x the recorded
float_sensitivity of Darknet against itself for the real nets).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from oracle import SHARED, gen_weights

TOLERANCE = 1e-3


def train_cases() -> list[str]:
    if SHARED is None:
        return []
    root = SHARED / "oracle" / "train"
    return sorted(p.parent.name for p in root.glob("*/meta.json"))


@dataclass
class IterationResult:
    loss: float
    darknet_loss: float
    loss_err: float
    seg_err: float
    worst: str
    allowed: float  # the tolerance this iteration is held to
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.loss_err <= max(TOLERANCE, self.allowed_loss) and self.seg_err <= self.allowed

    allowed_loss: float = TOLERANCE


class TrainCase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = SHARED / "oracle" / "train" / name
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.layout = json.loads((self.folder / "layout.json").read_text())

    @property
    def cfg(self) -> Path:
        return self.folder / "case.cfg"

    def weights(self, directory: Path) -> Path:
        path = directory / f"{self.name}.weights"
        gen_weights().write_weights(self.layout, self.meta["seed"], str(path))
        return path

    def targets(self, inputs: dict, it: int):
        if self.meta["task"] == "classifier":
            return torch.from_numpy(inputs["truths"][it])
        rows = inputs["truths"][it]
        return [torch.from_numpy(r[r[:, 0] >= 0]) for r in rows]

    @property
    def resyncable(self) -> bool:
        """Every segment is stored in full, so Darknet's weights after an iteration are known."""
        return all(s["stored"] == "full" for s in self.meta["segments"])

    def run(self, darknet: str = "cpu", iterations: int | None = None, *,
            resync: bool = False) -> list[IterationResult]:
        """Train the case's iterations. `resync`: each iteration starts from Darknet's weights
        after the previous one (momentum buffers stay the trainer's), so an iteration is judged
        on its own and float noise of the earlier ones (a near-zero leaky input whose sign
        differs) cannot flip a decision in it."""
        import darkcfg
        from darkcfg.train import Trainer

        inputs = dict(np.load(self.folder / "inputs.npz"))
        after = np.load(self.folder / "after.npz")
        segs = self.meta["segments"]
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            model = darkcfg.load(self.cfg, self.weights(tmp))
            trainer = Trainer(model, darknet=darknet)
            before_dn = self._floats(tmp / f"{self.name}.weights")
            header = (tmp / f"{self.name}.weights").read_bytes()[:20]
            for it in range(iterations or self.meta["iterations"]):
                if resync and it:
                    synced = tmp / "darknet.weights"
                    synced.write_bytes(header + before_dn.astype("<f4").tobytes())
                    model.load_darknet_weights(synced)
                before = self._save(model, tmp / "before.weights")
                loss = trainer.step(torch.from_numpy(inputs["images"][it]),
                                    self.targets(inputs, it))
                now = self._save(model, tmp / "after.weights")
                errors = {}
                for s in segs:
                    key = f"l{s['layer']:03d}_{s['name']}"
                    o, n = s["offset"], s["count"]
                    ours_b, ours_a = before[o:o + n], now[o:o + n]
                    d_ours = ours_a.astype(np.float64) - ours_b
                    if s["stored"] == "full":
                        dn_a = after[f"i{it}_{key}"].astype(np.float64)
                        d_dn = dn_a - before_dn[o:o + n]
                        before_dn[o:o + n] = dn_a
                    else:
                        idx = after[f"{key}_idx"]
                        d_dn = after[f"i{it}_{key}_dsample"]
                        d_ours = d_ours[idx]
                        ours_a = ours_a[idx]
                    ulp = 2 * np.spacing(np.abs(ours_a).astype(np.float32)).astype(np.float64)
                    excess = np.maximum(0, np.abs(d_ours - d_dn) - ulp)
                    errors[key] = float(excess.max() / max(1e-12, np.abs(d_dn).max())) \
                        if excess.size else 0.0
                dn_loss = self.meta["losses"][it]
                sens = self.meta.get("float_sensitivity", {}).get("per_iteration", [])
                sens_it = sens[it] if it < len(sens) else {}
                worst = max(errors, key=errors.get)
                results.append(IterationResult(
                    loss, dn_loss, abs(loss - dn_loss) / max(abs(dn_loss), 1e-12),
                    errors[worst], worst,
                    allowed=max(TOLERANCE, 2 * sens_it.get("seg_err", 0.0)),
                    errors=errors,
                    allowed_loss=max(TOLERANCE, 2 * sens_it.get("loss_err", 0.0))))
        return results

    @staticmethod
    def _floats(path: Path) -> np.ndarray:
        return np.fromfile(path, "<f4", offset=20).astype(np.float64)

    def _save(self, model, path: Path) -> np.ndarray:
        model.save_darknet_weights(path)
        return np.fromfile(path, "<f4", offset=20)
