"""CLI and API manners: messages that help, warnings that point at the caller's line, short
reprs, quiet pipes, --version/--quiet, torch imported only where needed, shared-data skips."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import darkcfg
from darkcfg.cli import COMMANDS, _parser, main

REPO = Path(__file__).resolve().parents[1]
NET = "[net]\nwidth=8\nheight=8\nchannels=3\n"


def _warnings_of(fn, *args, **kwargs) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [w for w in caught if issubclass(w.category, darkcfg.CfgWarning)]


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parent, env={**os.environ, **env}, timeout=120)


# -- messages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    (NET + "[convolutional]\nfliters=4\n",
     "unused option 'fliters' (Darknet ignores it too; did you mean 'filters'?) "
     "(at line 6, in [convolutional] #0)"),
    (NET + "[maxpool]\nszie=2\n",
     "unused option 'szie' (Darknet ignores it too; did you mean 'size'?) "
     "(at line 6, in [maxpool] #0)"),
    (NET + "widht=8\n[convolutional]\nfilters=4\nbath_normalize=1\n",
     "unused option 'bath_normalize' (Darknet ignores it too; did you mean 'batch_normalize'?) "
     "(at line 8, in [convolutional] #0)"),
    # nothing close: no guess
    (NET + "[convolutional]\nfilters=4\nxyz=1\n",
     "unused option 'xyz' (Darknet ignores it too) (at line 7, in [convolutional] #0)"),
])
def test_misspelt_option_gets_a_did_you_mean(text, message) -> None:
    assert message in [str(w.message) for w in _warnings_of(darkcfg.parse, text)]


def test_did_you_mean_skips_keys_the_section_already_sets() -> None:
    # [net] sets width itself, so 'widht' is junk, not a misspelling to correct
    messages = [str(w.message) for w in _warnings_of(darkcfg.parse, NET + "widht=8\n[maxpool]\n")]
    assert messages == ["unused option 'widht' (Darknet ignores it too) (at line 5, in [net])"]


BOM_MESSAGE = ("the cfg starts with a UTF-8 byte order mark (BOM), which is skipped (Darknet cannot "
               "read a cfg with one: save it as UTF-8 without BOM)")


def test_utf8_bom_is_named_and_skipped(tmp_path) -> None:
    plain = NET + "[convolutional]\nfilters=4\n"
    path = tmp_path / "bom.cfg"
    path.write_bytes(b"\xef\xbb\xbf" + plain.encode())
    caught = _warnings_of(darkcfg.parse, path)
    assert [str(w.message) for w in caught] == [f"{BOM_MESSAGE} (at bom.cfg line 1)"]
    with pytest.warns(darkcfg.CfgWarning):
        net = darkcfg.parse(path)
    assert net.source == plain and net[0].out_shape == darkcfg.parse(plain)[0].out_shape
    # text given directly, and a file whose rest is not UTF-8 (read as Latin-1)
    caught = _warnings_of(darkcfg.parse, "\ufeff" + plain)
    assert [str(w.message) for w in caught] == [f"{BOM_MESSAGE} (at line 1)"]
    path.write_bytes(b"\xef\xbb\xbf" + plain.encode() + b"# caf\xe9\n")
    assert [str(w.message) for w in _warnings_of(darkcfg.parse, path)] == \
        [f"{BOM_MESSAGE} (at bom.cfg line 1)"]


# -- warnings point at the caller ----------------------------------------------------------------

def test_warnings_point_at_the_callers_line(tmp_path) -> None:
    text = NET + "[convolutional]\nfilters=4\nfliters=4\n"
    for fn in (darkcfg.parse, darkcfg.build, darkcfg.load):
        caught = _warnings_of(fn, text)
        assert caught and {w.filename for w in caught} == {__file__}, fn
    # a warning from deep inside the weights reader (a longer file loaded with strict=False)
    long_cfg = NET + "[convolutional]\nfilters=4\n[convolutional]\nfilters=4\n"
    darkcfg.build(long_cfg).save_darknet_weights(tmp_path / "long.weights")
    caught = _warnings_of(darkcfg.load, NET + "[convolutional]\nfilters=4\n",
                          tmp_path / "long.weights", strict=False)
    assert caught and {w.filename for w in caught} == {__file__}
    # not only CfgWarnings: detect_batch on a model left in training mode
    import torch

    model = darkcfg.build(NET + "[convolutional]\nfilters=18\n[yolo]\nmask=0,1,2\n"
                          "anchors=1,2,3,4,5,6\nclasses=1\nnum=3\n").train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        darkcfg.detect_batch(model, torch.rand(1, 3, 8, 8))
    assert [(w.filename, w.category) for w in caught] == [(__file__, UserWarning)]


# -- reprs ---------------------------------------------------------------------------------------

def test_network_and_layer_reprs_are_one_line() -> None:
    net = darkcfg.parse(REPO / "cfgs" / "cspdarknet53.cfg")
    assert repr(net) == "Network('cspdarknet53.cfg', 117 layers, 608x608x3, 82.472 BFLOPs)"
    assert str(net) == repr(net)
    assert repr(net[0]) == ("LayerSpec(0, 'convolutional', 608x608x3 -> 608x608x32, 0.639 BFLOPs, "
                            "992 weights)")
    assert max(len(repr(layer)) for layer in net) < 120
    assert repr(darkcfg.parse("[net]\ninputs=10\n[connected]\noutput=3\n")) == \
        "Network(<cfg text>, 1 layer, 1x1x10, 0.000 BFLOPs)"


# -- CLI -----------------------------------------------------------------------------------------

def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"darkcfg {darkcfg.__version__}\n"


def test_every_positional_argument_has_help() -> None:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    checked = 0
    for name, command in sub.choices.items():
        if name == "detect":  # being rewritten elsewhere; it gets its own help there
            continue
        for action in command._actions:
            if not action.option_strings:
                assert action.help, f"darkcfg {name} {action.dest}"
                checked += 1
    assert checked >= len(COMMANDS) - 1


def test_output_cut_short_by_its_reader_ends_quietly(tmp_path) -> None:
    cfg = tmp_path / "long.cfg"
    cfg.write_text(NET + "[maxpool]\nsize=1\nstride=1\n" * 2000)  # ~0.5 MB of JSON, > a pipe
    proc = subprocess.Popen([sys.executable, "-m", "darkcfg", "summary", str(cfg), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout.read(10) == b'{\n "cfg": '
    proc.stdout.close()  # what `| head -c 10` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_quiet_silences_the_export_message(capsys, monkeypatch, tmp_path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import torch

    def stop(*args, **kwargs):  # the slow step itself is test_onnx's business
        raise RuntimeError("stopped")

    monkeypatch.setattr(torch.onnx, "export", stop)
    cfg = tmp_path / "m.cfg"
    cfg.write_text(NET + "[convolutional]\nfilters=4\n")
    out = str(tmp_path / "m.onnx")
    for argv, says in ((["export", str(cfg), "--onnx", out], True),
                       (["--quiet", "export", str(cfg), "--onnx", out], False),
                       (["export", str(cfg), "--onnx", out, "--quiet"], False)):
        assert main(argv) == 1
        err = capsys.readouterr().err.splitlines()
        assert err[-1] == "darkcfg: internal error: RuntimeError: stopped (--debug shows the " \
                          "traceback)"
        assert err[:-1] == (["exporting to ONNX with torch's exporter (10-20 s) ..."] if says
                            else []), argv


# -- start-up ------------------------------------------------------------------------------------

def test_parsing_and_the_cfg_commands_do_not_import_torch(tmp_path) -> None:
    cfg = REPO / "cfgs" / "cspdarknet53.cfg"
    code = (
        "import sys, darkcfg\n"
        f"net = darkcfg.parse({str(cfg)!r})\n"
        "darkcfg.dump(net); darkcfg.feature_info(net, [0])\n"
        "from darkcfg.cli import main\n"
        f"assert main(['summary', {str(cfg)!r}]) == 0\n"
        f"assert main(['diff', {str(cfg)!r}, {str(cfg)!r}]) == 0\n"
        f"assert main(['graph', {str(cfg)!r}, '-o', {str(tmp_path / 'g.dot')!r}]) == 0\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
        "assert set(darkcfg.__all__) <= set(dir(darkcfg))\n"
        "assert darkcfg.load.__module__ == 'darkcfg.model' and darkcfg.DarknetModel\n"
        "print('torch' in sys.modules, file=sys.stderr)\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["False", "True"]


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'darkcfg' has no attribute 'nope'"):
        darkcfg.nope  # noqa: B018


# -- shared data ---------------------------------------------------------------------------------

def test_missing_darkcfg_shared_skips_with_that_reason(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    code = ("import oracle\n"
            "print(oracle.SHARED)\n"
            "print(oracle.needs_shared.args[0], oracle.needs_shared.kwargs['reason'])\n")
    done = _python(code, DARKCFG_SHARED=str(missing))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["None", f"True DARKCFG_SHARED={missing} is not a folder"]
    (missing / "official").mkdir(parents=True)
    done = _python(code, DARKCFG_SHARED=str(missing))
    assert done.stdout.splitlines()[1] == \
        f"True DARKCFG_SHARED={missing} has no oracle folder (Darknet's outputs)"
