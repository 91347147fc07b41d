"""darkcfg.pipeline: the batched pipeline of `detect`, `map` and `valid` gives the per-image
path's detections (within float tolerance: kernels differ between batch sizes and the model is
BN-fused and channels-last), in input order, with bad images reported and the run going on;
the progress bar; `detect` on a video file (PyAV, skipped when absent).

Most tests use a tiny random-weight cfg with a BN layer (so fusing changes parameters); one
uses the official yolov3-tiny under ../shared (skipped when absent).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import darkcfg
from darkcfg import pipeline
from darkcfg.cli import main
from darkcfg.detection import decode, detect, nms, select
from darkcfg.image import load_image, network_input
from oracle import SHARED, needs_shared

TINY_CFG = """[net]
width=32
height=32
channels=3
{net}

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=14
size=1
stride=4
activation=linear

[yolo]
mask=1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
{yolo}
"""

SIZES = [(40, 30), (25, 50), (32, 32), (61, 17), (40, 30)]


def _png(path: Path, seed: int, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _model(root: Path, net: str = "", yolo: str = "") -> darkcfg.DarknetModel:
    cfg = root / f"tiny{abs(hash((net, yolo)))}.cfg"
    cfg.write_text(TINY_CFG.format(net=net, yolo=yolo))
    torch.manual_seed(0)
    model = darkcfg.build(cfg)
    with torch.no_grad():  # BN statistics that fusing has to fold for real
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture()
def images(tmp_path) -> list[Path]:
    return [_png(tmp_path / f"img{i}.png", i, size) for i, size in enumerate(SIZES)]


def _same(got: list, want: list, tol: float = 1e-4) -> None:
    """Two lists of Detection: same objects and classes in the same order, numbers close."""
    assert [(d.class_id, d.index) for d in got] == [(d.class_id, d.index) for d in want]
    for a, b in zip(got, want):
        assert a.prob == pytest.approx(b.prob, abs=tol)
        np.testing.assert_allclose(a.bbox, b.bbox, atol=tol)
        assert a.image_size == b.image_size


# --- the batched pipeline equals the per-image path --------------------------------------------

@pytest.mark.parametrize("letterbox", [False, True])
@pytest.mark.parametrize("batch, workers", [(2, 0), (3, 2)])
def test_batched_detections_equal_per_image(tmp_path, images, letterbox, batch, workers) -> None:
    model = _model(tmp_path, net="letter_box=1" if letterbox else "")
    want = [detect(model, p, thresh=0.05) for p in images]
    assert sum(len(w) for w in want) > 10, "the random net detects enough to compare"
    settings = pipeline.Settings(thresh=0.05)
    results = list(pipeline.run(model, images, settings, batch=batch, workers=workers))
    assert [r.index for r in results] == list(range(len(images)))
    assert [r.path for r in results] == [str(p) for p in images]
    assert [r.size for r in results] == SIZES
    for r, w in zip(results, want):
        assert r.error is None
        _same(select(r.raw, r.size, thresh=0.05), w)
    assert not model.fused, "run prepares a copy: the caller's model keeps its BN layers"


def test_map_settings_equal_map_detections(tmp_path, images) -> None:
    """pipeline.MAP = detector_map.map_detections: boxes above 0.005 relative to the image,
    hier 0, NMS 0.45 of the cfg's kind (diounms here), the cfg's letterbox."""
    from darkcfg.detector_map import map_detections

    model = _model(tmp_path, net="letter_box=1", yolo="nms_kind=diounms\nbeta_nms=0.8")
    results = list(pipeline.run(model, images, pipeline.MAP, batch=4, workers=0))
    for r, path in zip(results, images):
        boxes, probs = map_detections(model, load_image(path))
        assert len(r.raw) == len(boxes) > 0
        np.testing.assert_allclose(r.raw.boxes.numpy(), boxes, atol=1e-5)
        np.testing.assert_allclose(r.raw.probs.numpy(), probs, atol=1e-5)


def test_settings_reach_decode_and_nms(tmp_path, images) -> None:
    """thresh, hier_thresh, nms and letterbox are the ones passed: against decode + nms by hand
    on the unfused model, image by image."""
    model = _model(tmp_path)
    settings = pipeline.Settings(thresh=0.01, nms=0.3, letterbox=True)
    results = list(pipeline.run(model, images[:3], settings, batch=3, workers=0))
    for r, path in zip(results, images):
        im = load_image(path)
        with torch.no_grad():
            out = model(network_input(im, 32, 32, True)[None])
        raw = decode(model, out, [r.size], thresh=0.01, letterbox=True)[0]
        want = nms(raw, 0.3)
        np.testing.assert_allclose(r.raw.boxes.numpy(), want.boxes.numpy(), atol=1e-5)
        np.testing.assert_allclose(r.raw.probs.numpy(), want.probs.numpy(), atol=1e-5)


@needs_shared
def test_official_yolov3_tiny_batched_equals_per_image() -> None:
    """The real network (BN everywhere, fused for the pipeline): same detections as the
    unfused per-image path on Darknet's sample images, batch 3, 2 workers."""
    folder = SHARED / "official" / "map" / "sets" / "clean" / "images"
    paths = sorted(folder.glob("*.png"))[:6]
    model = darkcfg.load(SHARED / "official" / "yolov3-tiny.cfg",
                         SHARED / "official" / "yolov3-tiny.weights")
    want = [detect(model, p) for p in paths]
    got = [select(r.raw, r.size) for r in pipeline.run(model, paths, batch=3, workers=2)]
    assert sum(len(w) for w in want) >= 6
    for g, w in zip(got, want):
        _same(g, w, tol=2e-4)


# --- the model ---------------------------------------------------------------------------------

def test_prepare_model_fuses_a_copy_unless_told(tmp_path) -> None:
    model = _model(tmp_path)
    fast = pipeline.prepare_model(model)
    assert fast is not model and fast.fused and not model.fused
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipeline.prepare_model(model, copy_model=False) is model and model.fused
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(_model(tmp_path)(x), fast(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_loader_checks_and_caps_workers(tmp_path, images) -> None:
    prep = pipeline.Preprocess(32, 32, 3, False)
    data = pipeline.ImageDataset(images, prep)
    with pytest.raises(ValueError, match=r"^batch 0: must be at least 1$"):
        pipeline.loader(data, batch=0)
    with pytest.raises(ValueError, match=r"^workers -1: must be 0 or more$"):
        pipeline.loader(data, workers=-1)
    assert pipeline.loader(pipeline.ImageDataset(images[:1], prep), workers=4).num_workers == 0
    assert pipeline.loader(data, workers=2).num_workers == 2

def test_default_workers_leave_two_cores_to_the_forward(monkeypatch) -> None:
    import os

    for cpus, workers in ((1, 0), (2, 0), (3, 1), (6, 4), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert pipeline.default_workers() == workers


# --- bad input ---------------------------------------------------------------------------------

def test_bad_images_are_one_line_each_and_the_run_goes_on(tmp_path, images) -> None:
    model = _model(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(images[0].read_bytes()[:200])
    paths = [images[0], tmp_path / "missing.png", bad, images[1], truncated, ""]
    results = list(pipeline.run(model, paths, pipeline.Settings(thresh=0.05), batch=2,
                                workers=2))
    assert [r.index for r in results] == list(range(6))
    errors = [r.error for r in results]
    assert errors[0] is None and errors[3] is None
    assert errors[1] == f"cannot read image {tmp_path / 'missing.png'}: no such file"
    assert errors[2] == f"cannot read image {bad}: not an image file Pillow can decode"
    assert errors[4].startswith(f"cannot read image {truncated}: ") and "\n" not in errors[4]
    assert errors[5] == "an empty path names no image"
    assert all(r.raw is None for r in results if r.error)
    _same(select(results[3].raw, results[3].size, thresh=0.05),
          detect(model, images[1], thresh=0.05))


def test_stand_in_is_darknets_black_10x10(tmp_path) -> None:
    model = _model(tmp_path)
    missing = tmp_path / "missing.png"
    r, = pipeline.run(model, [missing], pipeline.MAP, stand_in=True, workers=0)
    assert r.error == f"cannot read image {missing}: no such file" and r.size == (10, 10)
    want = detect(model, torch.zeros(3, 10, 10), thresh=0.005)
    assert [(d.class_id, round(d.prob, 4)) for d in select(r.raw, (10, 10), thresh=0.005)] == \
        [(d.class_id, round(d.prob, 4)) for d in want]


# --- progress ----------------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_for_several_items_on_a_terminal() -> None:
    term = _Terminal()
    assert list(pipeline.progress_bar(range(3), 3, term)) == [0, 1, 2]
    shown = term.getvalue()
    assert "/3" in shown and "image" in shown  # tqdm, which clears the bar when done
    one = _Terminal()
    assert list(pipeline.progress_bar(range(1), 1, one)) == [0] and one.getvalue() == ""
    pipe = io.StringIO()
    assert list(pipeline.progress_bar(range(3), 3, pipe)) == [0, 1, 2] and pipe.getvalue() == ""
    assert list(pipeline.progress_bar(range(3), 3, False)) == [0, 1, 2]


def test_progress_bar_without_tqdm_is_a_counter(monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def no_tqdm(name, *a, **kw):
        if name == "tqdm":
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    term = _Terminal()
    assert list(pipeline.progress_bar("ab", 2, term)) == ["a", "b"]
    assert term.getvalue() == "\r1/2 images\r2/2 images\r\x1b[K"


def test_detect_cli_bar_on_a_terminal_and_quiet_silences_it(tmp_path, images, monkeypatch,
                                                            capsys) -> None:
    model = _model(tmp_path)
    model.save_darknet_weights(tmp_path / "t.weights")
    cfg = next(tmp_path.glob("tiny*.cfg"))
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert main(["detect", str(cfg), str(tmp_path / "t.weights"), *map(str, images[:3]),
                 "--workers", "0"]) == 0
    assert "/3" in term.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    assert main(["--quiet", "detect", str(cfg), str(tmp_path / "t.weights"),
                 *map(str, images[:3]), "--workers", "0"]) == 0
    assert quiet.getvalue() == ""


# --- detect on the pipeline --------------------------------------------------------------------

def test_detect_cli_output_does_not_depend_on_batch_or_workers(tmp_path, images, capsys) -> None:
    model = _model(tmp_path)
    model.save_darknet_weights(tmp_path / "t.weights")
    cfg = next(tmp_path.glob("tiny*.cfg"))
    outs = []
    for batch, workers in [(1, 0), (4, 2)]:
        code = main(["detect", str(cfg), str(tmp_path / "t.weights"), *map(str, images),
                     "--thresh", "0.05", "--json", "--batch", str(batch), "--workers",
                     str(workers)])
        assert code == 0
        outs.append(json.loads(capsys.readouterr().out))
    a, b = outs
    assert [f["frame_id"] for f in a] == [f["frame_id"] for f in b] == [1, 2, 3, 4, 5]
    for fa, fb in zip(a, b):
        assert [o["class_id"] for o in fa["objects"]] == [o["class_id"] for o in fb["objects"]]
        for oa, ob in zip(fa["objects"], fb["objects"]):
            assert oa["confidence"] == pytest.approx(ob["confidence"], abs=1e-4)
    for bad in (["--batch", "0"], ["--workers", "-2"]):
        assert main(["detect", str(cfg), str(tmp_path / "t.weights"), str(images[0]), *bad]) \
            == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["darkcfg: error: --batch 0: must be at least 1",
                   "darkcfg: error: --workers -2: must be 0 or more"]


# --- video (PyAV) ------------------------------------------------------------------------------

def _video(path: Path, frames: list[np.ndarray], rate: int = 5) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _decoded(path: Path) -> list[np.ndarray]:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_video_is_darknets_demo_on_a_file(tmp_path, capsys) -> None:
    pytest.importorskip("av")
    model = _model(tmp_path)
    model.save_darknet_weights(tmp_path / "t.weights")
    cfg = next(tmp_path.glob("tiny*.cfg"))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    video = _video(tmp_path / "in.mp4", frames)
    decoded = _decoded(video)  # what the detector sees (after the lossy encode)
    out = tmp_path / "annotated.mp4"
    code = main(["--quiet", "detect", str(cfg), str(tmp_path / "t.weights"), str(video),
                 "--out", str(out), "--json", "--thresh", "0.05", "--batch", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    got = json.loads(captured.out)
    assert [f["frame_id"] for f in got] == [1, 2, 3, 4, 5, 6]
    assert {f["filename"] for f in got} == {str(video)}
    total = 0
    for frame, rgb in zip(got, decoded):
        want = sorted(detect(model, rgb, thresh=0.05), key=lambda d: (d.index, d.class_id))
        assert [o["class_id"] for o in frame["objects"]] == [d.class_id for d in want]
        for o, d in zip(frame["objects"], want):
            assert o["confidence"] == pytest.approx(d.prob, abs=1e-4)
        total += len(want)
    assert total > 0
    drawn = _decoded(out)
    assert len(drawn) == 6 and drawn[0].shape == (48, 64, 3)
    # boxes were drawn: the annotated frames differ from the input beyond codec noise
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(drawn, decoded)) > 100


def test_video_text_output_and_bad_video(tmp_path, capsys) -> None:
    pytest.importorskip("av")
    model = _model(tmp_path)
    model.save_darknet_weights(tmp_path / "t.weights")
    cfg = str(next(tmp_path.glob("tiny*.cfg")))
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)]
    video = _video(tmp_path / "v.avi", frames)
    assert main(["--quiet", "detect", cfg, str(tmp_path / "t.weights"), str(video),
                 "--thresh", "0"]) == 0
    headers = [line for line in capsys.readouterr().out.splitlines() if line.endswith(":")]
    assert headers == [f"{video}#1:", f"{video}#2:", f"{video}#3:"]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    for args, message in [
        ([str(broken)], f"cannot read video {broken}: "),
        ([str(video), "--out", str(tmp_path / "x.png")],
         f"--out {tmp_path / 'x.png'}: for a video, --out is a video file (.mp4, "),
        ([str(video), "--out", str(video)], f"--out {video}: drawing {video} there would "
                                            f"overwrite it"),
    ]:
        assert main(["--quiet", "detect", cfg, str(tmp_path / "t.weights"), *args]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"darkcfg: error: {message}"), err


# --- map on the pipeline -----------------------------------------------------------------------

def test_map_numbers_do_not_depend_on_batch_or_workers(tmp_path, images, monkeypatch,
                                                       capsys) -> None:
    model = _model(tmp_path)
    model.save_darknet_weights(tmp_path / "t.weights")
    cfg = next(tmp_path.glob("tiny*.cfg"))
    for p in images:
        p.with_suffix(".txt").write_text("0 0.5 0.5 0.4 0.4\n1 0.3 0.3 0.2 0.2\n")
    (tmp_path / "valid.txt").write_text("".join(f"{p}\n" for p in images) + "missing.png\n")
    (tmp_path / "names").write_text("a\nb\n")
    (tmp_path / "x.data").write_text(f"valid={tmp_path / 'valid.txt'}\n"
                                     f"names={tmp_path / 'names'}\n")
    monkeypatch.chdir(tmp_path)
    runs = []
    for batch, workers in [(1, 0), (3, 2)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", darkcfg.CfgWarning)
            code = main(["--quiet", "map", "x.data", str(cfg), "t.weights", "--json", "--thresh",
                         "0.05", "--batch", str(batch), "--workers", str(workers)])
        assert code == 0
        runs.append(json.loads(capsys.readouterr().out))
    a, b = runs
    assert a["images"] == 6 and a["detections_count"] == b["detections_count"] > 10
    assert (a["tp"], a["fp"], a["fn"]) == (b["tp"], b["fp"], b["fn"])
    assert a["map"] == pytest.approx(b["map"], abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        api = darkcfg.evaluate("x.data", darkcfg.load(cfg, "t.weights"), thresh=0.05,
                                   workers=0)
    assert api.detections_count == a["detections_count"]
    assert api.map == pytest.approx(a["map"], abs=1e-6)
