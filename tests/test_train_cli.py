"""`darkcfg train` end to end on a synthetic Darknet dataset (tools/make_shapes.py): a few
iterations only, on the shipped cfgs/shapes-tiny.cfg at a small size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from darkcfg.cli import main

REPO = Path(__file__).resolve().parents[1]


def _make_shapes():
    spec = importlib.util.spec_from_file_location("make_shapes", REPO / "tools" / "make_shapes.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_shapes"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _make_shapes().main(["shapes", "--train", "12", "--valid", "4", "--min-size", "96",
                         "--max-size", "128", "--seed", "3"])
    cfg = (REPO / "cfgs" / "shapes-tiny.cfg").read_text()
    cfg = cfg.replace("batch=16", "batch=4").replace("width=160", "width=64") \
        .replace("height=160", "height=64").replace("max_batches=1000", "max_batches=3") \
        .replace("burn_in=50", "burn_in=1")
    Path("tiny.cfg").write_text(cfg)
    return tmp_path


def test_train_writes_weights_chart_and_darknet_lines(dataset, capsys) -> None:
    assert main(["train", "shapes/obj.data", "tiny.cfg", "--workers", "0", "--seed", "1",
                 "--map"]) == 0
    out = capsys.readouterr().out.splitlines()
    progress = [line for line in out if line.startswith(" ") and "avg loss" in line]
    assert [line.split(":")[0] for line in progress] == [" 1", " 2", " 3"]
    assert any(line.startswith(" mean_average_precision (mAP@0.50) = ") for line in out)
    backup = Path("shapes/backup")
    names = sorted(p.name for p in backup.iterdir())
    assert names == ["tiny_best.weights", "tiny_final.weights", "tiny_last.state",
                     "tiny_last.weights"]
    seen = np.frombuffer((backup / "tiny_final.weights").read_bytes()[12:20], "<u8")[0]
    assert seen == 3 * 4
    assert Path("chart_tiny.png").read_bytes()[:4] == b"\x89PNG"


def test_train_continues_from_its_last_weights(dataset, capsys) -> None:
    assert main(["train", "shapes/obj.data", "tiny.cfg", "--workers", "0", "--seed", "1"]) == 0
    capsys.readouterr()
    Path("more.cfg").write_text(Path("tiny.cfg").read_text().replace("max_batches=3",
                                                                    "max_batches=5"))
    last = "shapes/backup/tiny_last.weights"
    Path("shapes/backup/more_last.weights").write_bytes(Path(last).read_bytes())
    assert main(["train", "shapes/obj.data", "more.cfg", "shapes/backup/more_last.weights",
                 "--workers", "0", "--seed", "1"]) == 0
    progress = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()
                if "avg loss" in line]
    assert progress == [" 4", " 5"]


def test_missing_data_file_is_one_line(dataset, capsys) -> None:
    assert main(["train", "nope.data", "tiny.cfg"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("darkcfg: error: ") and err.count("\n") == 1 and "nope.data" in err


def test_torchrun_two_processes_train_what_one_process_trains(dataset) -> None:
    """torchrun --nproc_per_node 2 -m darkcfg train: gloo on the loopback address; the cfg's
    two subdivisions are shared out, and the weights equal a one-process run."""
    import os
    import socket
    import subprocess

    Path("two.cfg").write_text(Path("tiny.cfg").read_text().replace("subdivisions=1",
                                                                   "subdivisions=2"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["train", "shapes/obj.data", "two.cfg", "--workers", "0", "--seed", "1", "--no-chart"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "darkcfg",
                    *args], check=True, env=env, capture_output=True, timeout=300)
    final = Path("shapes/backup/two_final.weights")
    ddp = np.fromfile(final, "<f4", offset=20)
    final.unlink()
    assert main(args) == 0
    single = np.fromfile(final, "<f4", offset=20)
    assert np.abs(ddp - single).max() <= 1e-4 * np.abs(single).max()
