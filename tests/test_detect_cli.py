"""`darkcfg detect` on many images (folders, list files, stdin), its Darknet `-out` JSON, the
checks made before any inference (--out, names), and errors naming the image.

Most tests use a tiny random-weight yolo cfg (fast); the Darknet comparisons use the official
yolov3-tiny weights under ../shared/official (skipped when absent).
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
import darkcfg.model
from darkcfg.cli import main
from darkcfg.detection import check_names, read_names
from darkcfg.sources import SourceError, expand, names_one_image, open_image, parse_list
from oracle import SHARED, needs_shared

TINY_CFG = """[net]
width=32
height=32
channels=3

[convolutional]
filters=14
size=1
stride=8
activation=linear

[yolo]
mask=1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


# --- helpers -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[str, str]:
    """A 2-class yolo cfg and random weights whose detections at --thresh 0 are many."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = root / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    darkcfg.build(cfg).save_darknet_weights(root / "tiny.weights")
    return str(cfg), str(root / "tiny.weights")


def _png(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _cli(capsys, *args) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _count_loads(monkeypatch) -> list[str]:
    """Record every darkcfg.model.load the CLI makes."""
    calls: list[str] = []
    real = darkcfg.model.load

    def counting(cfg, *a, **kw):
        calls.append(str(cfg))
        return real(cfg, *a, **kw)

    monkeypatch.setattr(darkcfg.model, "load", counting)
    return calls


def _no_load(monkeypatch) -> None:
    """Make loading the model (hence any inference) fail the test."""
    def refuse(*a, **kw):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(darkcfg.model, "load", refuse)


def _blocks(out: str) -> dict[str, list[str]]:
    """Several-image text output: `path:` headers, each followed by its detection lines."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.endswith(":") and "\t" not in line:
            current = line[:-1]
            blocks[current] = []
        else:
            blocks[current].append(line)
    return blocks


# --- sources -----------------------------------------------------------------------------------

def test_folders_list_their_images_sorted_by_name(tmp_path) -> None:
    for name in ["b.png", "a.JPG", "c.jpeg", ".hidden.png", "notes.txt", "x.npy"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"")
    assert expand([tmp_path]) == [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "c.jpeg"]
    empty = tmp_path / "sub" / "empty"
    empty.mkdir()
    with pytest.raises(SourceError) as e:
        expand([empty])
    assert str(e.value) == (f"no images in folder {empty} (looked for .jpg, .jpeg, .png, .bmp, "
                            f".gif, .tif, .tiff, .webp, .ppm, .pgm, .pbm, .pnm, .tga)")


def test_list_files_are_darknets_one_path_per_line(tmp_path, monkeypatch) -> None:
    listed = tmp_path / "valid.txt"
    listed.write_bytes(b"data/a.jpg\r\n\r\n  /abs/b.png  \nc d.jpg")
    assert expand([listed]) == [Path("data/a.jpg"), Path("/abs/b.png"), Path("c d.jpg")]
    # relative paths stay relative: they resolve against the current directory, as in Darknet
    assert not expand([listed])[0].is_absolute()
    monkeypatch.setattr("sys.stdin", io.StringIO("x.jpg\ny.jpg\n"))
    assert expand(["-", "z.png", listed]) == [Path("x.jpg"), Path("y.jpg"), Path("z.png"),
                                              Path("data/a.jpg"), Path("/abs/b.png"),
                                              Path("c d.jpg")]
    with pytest.raises(SourceError) as e:
        expand([tmp_path / "missing.txt"])
    assert str(e.value) == f"cannot read list file {tmp_path / 'missing.txt'}: no such file"
    with pytest.raises(SourceError) as e:
        parse_list("\n  \n", "list file empty.txt")
    assert str(e.value) == "no image paths in list file empty.txt"
    with pytest.raises(SourceError, match="^no images given$"):
        expand([])


def test_one_image_form(tmp_path) -> None:
    assert names_one_image(["dog.jpg"]) and names_one_image([tmp_path / "missing.png"])
    assert not names_one_image(["a.jpg", "b.jpg"])
    assert not names_one_image([tmp_path]) and not names_one_image(["list.txt"])
    assert not names_one_image(["-"])


def test_open_image_errors_are_one_line_naming_the_file(tmp_path) -> None:
    good = _png(tmp_path / "good.png", 1)
    assert open_image(good).size == (40, 30)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    cases = {tmp_path / "missing.jpg": "no such file",
             tmp_path / "bad.jpg": "not an image file Pillow can decode",
             tmp_path / "cut.png": "image file is truncated",
             tmp_path: "it is a folder"}
    for path, reason in cases.items():
        with pytest.raises(SourceError) as e:
            open_image(path)
        assert str(e.value) == f"cannot read image {path}: {reason}"


# --- names against the network -----------------------------------------------------------------

def test_names_count_must_match_the_classes(tmp_path, tiny, capsys) -> None:
    names = tmp_path / "three.names"
    names.write_text("a\nb\nc\n")
    assert read_names(names) == ["a", "b", "c"]  # without a class count: any file reads
    with pytest.raises(darkcfg.CfgError) as e:
        read_names(names, 2)
    message = (f"the names file {names} has 3 lines, but the network has 2 classes (one name "
               f"per line, in class order)")
    assert str(e.value) == message
    model = darkcfg.load(*tiny)
    with pytest.raises(darkcfg.CfgError) as e:
        darkcfg.detect(model, np.zeros((30, 40, 3), np.uint8), names=names)
    assert str(e.value) == message
    with pytest.raises(darkcfg.CfgError) as e:
        darkcfg.detect(model, np.zeros((30, 40, 3), np.uint8), names=["one"])
    assert str(e.value) == ("got 1 names, but the network has 2 classes (one name per class, in "
                            "class order)")
    assert check_names(["x", "y"], model) == ["x", "y"]
    image = _png(tmp_path / "i.png", 2)
    code, out, err = _cli(capsys, "detect", *tiny, image, "--names", names)
    assert (code, out, err) == (1, "", f"darkcfg: error: {message}\n")


# --- several images ----------------------------------------------------------------------------

def test_several_images_folder_and_list_load_the_model_once(tmp_path, tiny, capsys,
                                                            monkeypatch) -> None:
    folder = tmp_path / "imgs"
    images = [_png(folder / f"{n}.png", i, (40 + 8 * i, 30)) for i, n in enumerate("cab")]
    singles = {}
    for image in images:  # the one-image form: just the lines, as before
        code, out, err = _cli(capsys, "detect", *tiny, image, "--thresh", "0.05")
        assert code == 0, err
        assert out and all("%\t(left_x:" in line for line in out.splitlines())  # no header
        singles[str(image)] = out.splitlines()
    assert len(set(map(tuple, singles.values()))) == 3  # the images give different detections

    loads = _count_loads(monkeypatch)
    code, out, err = _cli(capsys, "detect", *tiny, images[2], images[0], "--thresh", "0.05")
    assert (code, err) == (0, "")
    assert list(_blocks(out)) == [str(images[2]), str(images[0])]
    assert _blocks(out) == {str(p): singles[str(p)] for p in (images[2], images[0])}
    assert len(loads) == 1

    code, out, _ = _cli(capsys, "detect", *tiny, folder, "--thresh", "0.05")
    assert code == 0
    assert list(_blocks(out)) == [str(folder / n) for n in ("a.png", "b.png", "c.png")]
    assert _blocks(out) == singles

    monkeypatch.chdir(tmp_path)  # list entries are relative to the current directory
    (tmp_path / "list.txt").write_text("imgs/b.png\r\n\r\nimgs/a.png\r\n")
    code, out, _ = _cli(capsys, "detect", *tiny, "list.txt", "--thresh", "0.05")
    assert code == 0
    assert _blocks(out) == {"imgs/b.png": singles[str(folder / "b.png")],
                            "imgs/a.png": singles[str(folder / "a.png")]}
    assert len(loads) == 3  # one per call


def test_a_bad_image_is_reported_and_the_others_still_run(tmp_path, tiny, capsys) -> None:
    good1, good2 = _png(tmp_path / "g1.png", 3), _png(tmp_path / "g2.png", 4)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    missing = tmp_path / "missing.jpg"
    out_dir = tmp_path / "drawn"
    out_dir.mkdir()
    code, out, err = _cli(capsys, "detect", *tiny, good1, missing, bad, good2, "--thresh", "0.05",
                          "--out", out_dir)
    assert code == 1
    assert err.splitlines() == [
        f"darkcfg: error: cannot read image {missing}: no such file",
        f"darkcfg: error: cannot read image {bad}: not an image file Pillow can decode"]
    assert list(_blocks(out)) == [str(good1), str(good2)]
    assert sorted(p.name for p in out_dir.iterdir()) == ["g1.png", "g2.png"]
    code, out, err = _cli(capsys, "detect", *tiny, missing, bad, "--json")
    assert (code, json.loads(out)) == (1, [])
    assert len(err.splitlines()) == 2


def test_one_image_errors_are_one_line_naming_it(tmp_path, tiny, capsys) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    for name, reason in [("missing.jpg", "no such file"),
                         ("bad.jpg", "not an image file Pillow can decode")]:
        code, out, err = _cli(capsys, "detect", *tiny, tmp_path / name)
        assert (code, out) == (1, "")
        assert err == f"darkcfg: error: cannot read image {tmp_path / name}: {reason}\n"


# --- --out -------------------------------------------------------------------------------------

def test_out_is_checked_before_the_model_loads(tmp_path, tiny, capsys, monkeypatch) -> None:
    image = _png(tmp_path / "x.png", 5)
    other = _png(tmp_path / "more" / "x.png", 6)
    (tmp_path / "file.jpg").write_bytes(b"")
    _no_load(monkeypatch)
    cases = [
        ([image], tmp_path / "nope" / "o.jpg",
         f"--out {tmp_path / 'nope' / 'o.jpg'}: folder {tmp_path / 'nope'} does not exist"),
        ([image], tmp_path / "o.xyz",
         f"--out {tmp_path / 'o.xyz'}: Pillow cannot write images with suffix '.xyz' "
         f"(e.g. .jpg, .png)"),
        ([image], tmp_path / "drawn",
         f"--out {tmp_path / 'drawn'}: no image suffix (e.g. .jpg, .png) and not a folder"),
        ([image], image, f"--out {image}: drawing {image} there would overwrite it"),
        ([image, other], tmp_path / "nope",
         f"--out {tmp_path / 'nope'}: no such folder (with several images, --out is an "
         f"existing folder)"),
        ([tmp_path / "more"], tmp_path / "file.jpg",
         f"--out {tmp_path / 'file.jpg'}: not a folder (with several images, --out is an "
         f"existing folder)"),
        ([image, other], tmp_path / "more",
         f"--out {tmp_path / 'more'}: {image} and {other} would both be drawn to "
         f"{tmp_path / 'more' / 'x.png'}"),
    ]
    for images, out, message in cases:
        code, stdout, err = _cli(capsys, "detect", *tiny, *images, "--out", out)
        assert (code, stdout, err) == (1, "", f"darkcfg: error: {message}\n"), message


def test_out_names_each_drawing_after_its_input(tmp_path, tiny, capsys) -> None:
    image = _png(tmp_path / "in" / "a.png", 7)
    odd = tmp_path / "in" / "b.foo"  # a PNG under a suffix Pillow cannot write: gets .png
    odd.write_bytes(_png(tmp_path / "tmp.png", 8).read_bytes())
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    code, _, err = _cli(capsys, "detect", *tiny, image, odd, "--out", drawn, "--thresh", "0.05")
    assert code == 0, err
    assert sorted(p.name for p in drawn.iterdir()) == ["a.png", "b.foo.png"]
    with Image.open(drawn / "a.png") as im:
        assert im.size == (40, 30)
        assert not np.array_equal(np.asarray(im), np.asarray(Image.open(image)))  # boxes drawn
    # one image and an existing folder: the drawing goes into it, named after the input
    solo = tmp_path / "solo"
    solo.mkdir()
    code, _, _ = _cli(capsys, "detect", *tiny, image, "--out", solo)
    assert code == 0 and [p.name for p in solo.iterdir()] == ["a.png"]


# --- --json ------------------------------------------------------------------------------------

def test_json_is_one_document_in_darknets_out_layout(tmp_path, tiny, capsys) -> None:
    images = [_png(tmp_path / f"{i}.png", 10 + i) for i in range(3)]
    (tmp_path / "1.png").write_bytes(b"broken")
    code, out, err = _cli(capsys, "detect", *tiny, *images, "--json", "--thresh", "0.05")
    assert code == 1 and len(err.splitlines()) == 1
    frames = json.loads(out)
    # frame ids count the inputs (Darknet's json_image_id), so a failed image leaves a gap
    assert [(f["frame_id"], f["filename"]) for f in frames] == [(1, str(images[0])),
                                                               (3, str(images[2]))]
    model = darkcfg.load(*tiny)
    for frame, image in zip(frames, (images[0], images[2])):
        found = darkcfg.detect(model, image, thresh=0.05)
        assert frame["objects"], "the random net detects something at 0.05"
        assert list(frame) == ["frame_id", "filename", "objects"]
        for obj in frame["objects"]:
            assert list(obj) == ["class_id", "name", "relative_coordinates", "confidence"]
            assert list(obj["relative_coordinates"]) == ["center_x", "center_y", "width",
                                                         "height"]
            assert obj["name"] is None  # no --names
        # Darknet's detection_to_json order: detection index, then class id
        want = sorted(found, key=lambda d: (d.index, d.class_id))
        assert [(o["class_id"], o["confidence"]) for o in frame["objects"]] == \
            [(d.class_id, pytest.approx(d.prob)) for d in want]
        assert [list(o["relative_coordinates"].values()) for o in frame["objects"]] == \
            [pytest.approx(list(d.bbox)) for d in want]
    code, out, _ = _cli(capsys, "detect", *tiny, images[0], "--json", "--thresh", "0.05")
    one = json.loads(out)  # one image: the same layout, one frame
    assert code == 0 and [f["frame_id"] for f in one] == [1] and one[0] == frames[0]


def test_json_leaves_out_classes_darknet_does_not_write(tmp_path, tiny, capsys) -> None:
    model = darkcfg.load(*tiny)
    with torch.no_grad():  # class 1 (entry 6 of each anchor's 7): sigmoid(-7) * obj < 0.005
        for ch in (6, 13):
            model.layers[0].conv.weight[ch] = 0
            model.layers[0].conv.bias[ch] = -7
    weights = tmp_path / "rare.weights"
    model.save_darknet_weights(weights)
    image = _png(tmp_path / "a.png", 20)
    code, out, _ = _cli(capsys, "detect", tiny[0], weights, image, "--json", "--thresh", "0")
    assert code == 0
    objects = json.loads(out)[0]["objects"]
    assert objects and min(o["confidence"] for o in objects) > 0.005  # detection_to_json's floor
    found = darkcfg.detect(model, image, thresh=0)
    assert {d.class_id for d in found} == {0, 1}  # --thresh 0 selects the rare class too
    assert [(o["class_id"], o["confidence"]) for o in objects] == \
        [(d.class_id, pytest.approx(d.prob)) for d in sorted(found, key=lambda d: d.index)
         if np.float32(d.prob) > np.float32(0.005)]


def _official_png(tmp_path: Path, name: str) -> Path:
    """The image as Darknet's stb_image decoded it, lossless, so the lines are Darknet's."""
    path = tmp_path / f"{name}.png"
    pixels = np.load(SHARED / "official" / "detections" / name / "image_decoded_u8_hwc.npy")
    Image.fromarray(pixels).save(path)
    return path


@needs_shared
def test_official_several_images_and_json_match_darknet(tmp_path, capsys) -> None:
    root = SHARED / "official"
    model = [str(root / "yolov3-tiny.cfg"), str(root / "yolov3-tiny.weights"), "--names",
             str(root / "coco.names")]
    names = ["dog", "eagle", "person"]
    images = [_official_png(tmp_path, n) for n in names]
    refs = [json.loads((root / "detections" / n / "detections.json").read_text()) for n in names]
    code, out, err = _cli(capsys, "detect", *model, tmp_path)  # the folder: sorted by name
    assert code == 0, err
    assert _blocks(out) == {str(p): r["darknet_printed"] for p, r in zip(images, refs)}
    code, out, _ = _cli(capsys, "detect", *model, *images, "--json")
    frames = json.loads(out)
    coco = read_names(root / "coco.names")
    for i, (frame, image, ref) in enumerate(zip(frames, images, refs), 1):
        assert (frame["frame_id"], frame["filename"]) == (i, str(image))
        # what Darknet's detection_to_json writes: the array after NMS in order, each entry's
        # classes above thresh in class order
        after = sorted(ref["boxes_after_nms"], key=lambda e: e["i"])
        want = [(int(c), p, e["det"]) for e in after
                for c, p in sorted(e["det"]["probs"].items(), key=lambda kv: int(kv[0]))
                if p > ref["settings"]["thresh"]]
        assert len(want) == len(ref["darknet_printed"])  # the same classes, another order
        got = frame["objects"]
        assert [o["class_id"] for o in got] == [c for c, _, _ in want]
        assert [o["name"] for o in got] == [coco[c] for c, _, _ in want]
        for o, (_, prob, det) in zip(got, want):  # test_detect.py's tolerances for these
            assert o["confidence"] == pytest.approx(prob, rel=1e-4)
            rel = o["relative_coordinates"]
            assert [rel["center_x"], rel["center_y"], rel["width"], rel["height"]] == \
                pytest.approx([det["x"], det["y"], det["w"], det["h"]], rel=1e-4, abs=1e-6)
