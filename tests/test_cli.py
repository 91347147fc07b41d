"""`darkcfg build`: the layer table and Darknet's Total BFLOPS; errors are one line."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import darkcfg
from darkcfg.cli import main
from oracle import NETS, REPO, needs_shared, net_case
from test_shipped_cfgs import SHIPPED


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _total(out: str) -> str:
    m = re.search(r"^Total BFLOPS (\S+)$", out, re.M)
    assert m, out[-500:]
    return m.group(1)


@needs_shared
@pytest.mark.parametrize("name", NETS)
def test_total_bflops_equals_darknets(capsys, name) -> None:
    case = net_case(name)
    code, out, _ = _run(capsys, "build", str(case.cfg_path))
    assert code == 0
    assert _total(out) == f"{case.meta['native_total_bflops']:.3f}"
    code, out, _ = _run(capsys, "build", str(case.cfg_path), "--width", str(case.meta["input_w"]),
                        "--height", str(case.meta["input_h"]))
    assert _total(out) == f"{case.meta['total_bflops']:.3f}"
    # and the summary Darknet printed says the same
    native = (case.folder / "summary_native.txt").read_text()
    assert f"Total BFLOPS {case.meta['native_total_bflops']:.3f}" in native


@needs_shared
@pytest.mark.parametrize("cfg,detector,n,features", SHIPPED)
def test_shipped_cfg_bflops_are_darknets_for_those_layers(capsys, cfg, detector, n, features) -> None:
    case = net_case(detector)
    size = str(case.meta["input_w"])
    code, out, _ = _run(capsys, "build", str(REPO / "cfgs" / cfg), "--width", size, "--height", size)
    assert code == 0
    total = np.float32(0)
    for layer in case.layout["layers"][:n]:
        if layer["bflops"] > 0:
            total = np.float32(total + np.float32(layer["bflops"]))
    assert _total(out) == f"{float(total):.3f}"


@pytest.mark.parametrize("cfg,detector,n,features", SHIPPED)
def test_table_lists_every_layer(capsys, cfg, detector, n, features) -> None:
    code, out, _ = _run(capsys, "build", str(REPO / "cfgs" / cfg))
    assert code == 0
    rows = [l for l in out.splitlines() if re.match(r"^\s+\d+\s+\w", l)]
    assert [int(r.split()[0]) for r in rows] == list(range(n))
    assert "conv" in rows[0] and "->" in rows[0]


def test_weights_option_loads_and_reports(capsys, tmp_path) -> None:
    cfg = REPO / "cfgs" / "darknet53-tiny.cfg"
    model = darkcfg.build(cfg)
    model.save_darknet_weights(tmp_path / "w.weights")
    code, out, _ = _run(capsys, "build", str(cfg), "--weights", str(tmp_path / "w.weights"))
    assert code == 0
    assert f"{model.network.weight_count:,} floats loaded into 13 layers" in out


def test_errors_are_one_line(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n[route]\nlayers=-4\n")
    code, out, err = _run(capsys, "build", str(bad))
    assert code == 1 and out == ""
    assert err == "darkcfg: error: route index -4 points before layer 0 (at bad.cfg line 6, in [route] #0)\n"
    code, out, err = _run(capsys, "build", str(REPO / "cfgs" / "darknet53-tiny.cfg"), "--weights",
                          str(tmp_path / "missing.weights"))
    assert code == 1 and err.count("\n") == 1 and "cannot read weights file" in err


def test_python_dash_m_works_like_the_command(tmp_path) -> None:
    cfg = REPO / "cfgs" / "cspdarknet53-tiny.cfg"
    res = subprocess.run([sys.executable, "-m", "darkcfg", "build", str(cfg)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _total(res.stdout) == f"{darkcfg.parse(cfg).total_bflops:.3f}"
    bad = subprocess.run([sys.executable, "-m", "darkcfg", "build", str(tmp_path / "x.cfg")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("argv", [["--debug", "build"], ["build", "--debug"]])
def test_debug_shows_the_exception(tmp_path, argv) -> None:
    with pytest.raises(darkcfg.CfgError):
        main([*argv, str(tmp_path / "missing.cfg")])
