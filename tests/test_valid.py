"""`darkcfg valid` / darkcfg.coco: Darknet's `detector valid` (eval=coco) results file, its
image_id and category_id rules, print_cocos' pixel boxes, and COCO AP through pycocotools
(skipped when it is not installed).

A tiny random-weight yolo cfg makes the detections; the reference for each record is an
independent computation from the unfused per-image forward with valid's settings
(objectness > 0.001, hier 0.5, NMS 0.6).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import darkcfg
from darkcfg import coco
from darkcfg.cli import main
from darkcfg.detection import decode, nms
from darkcfg.image import load_image, network_input

TINY_CFG = """[net]
width=32
height=32
channels=3
{net}

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

NAMES = ["000000000139.png", "000000000285.png", "000000000632.png"]


@pytest.fixture()
def tiny(tmp_path, monkeypatch) -> Path:
    """The current directory: tiny.cfg/.weights, images named as COCO 2017's, x.data."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.cfg").write_text(TINY_CFG.format(net=""))
    (tmp_path / "lb.cfg").write_text(TINY_CFG.format(net="letter_box=1"))
    torch.manual_seed(0)
    darkcfg.build(tmp_path / "tiny.cfg").save_darknet_weights(tmp_path / "tiny.weights")
    (tmp_path / "images").mkdir()
    for i, name in enumerate(NAMES):
        size = [(40, 30), (30, 50), (64, 20)][i]
        pixels = np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / name)
    (tmp_path / "valid.txt").write_text("".join(f"images/{n}\n" for n in NAMES))
    (tmp_path / "results").mkdir()
    (tmp_path / "x.data").write_text("classes=2\nvalid=valid.txt\nnames=names\neval=coco\n")
    return tmp_path


def _run(capsys, *argv) -> tuple[int, str, list[str]]:
    code = main(["--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def _reference(cfg: str, path: Path, ids: list[int]) -> list[tuple]:
    """print_cocos from the unfused per-image forward, in float64 (an independent loop)."""
    model = darkcfg.load(cfg, "tiny.weights")
    letter = bool(model.network.net.letter_box)
    im = load_image(path)
    w, h = im.shape[2], im.shape[1]
    with torch.no_grad():
        out = model(network_input(im, 32, 32, letter)[None])
    raw = nms(decode(model, out, [(w, h)], thresh=0.001, hier_thresh=0.5, letterbox=letter)[0],
              0.6)
    rows = []
    for box, probs in zip(raw.boxes.tolist(), raw.probs.tolist()):
        x, y, bw, bh = box[0] * w, box[1] * h, box[2] * w, box[3] * h
        x0, y0 = max(x - bw / 2, 0), max(y - bh / 2, 0)
        x1, y1 = min(x + bw / 2, w), min(y + bh / 2, h)
        for j, p in enumerate(probs):
            if p > 0:
                rows.append((coco.image_id(path), ids[j], x0, y0, x1 - x0, y1 - y0, p))
    return rows


def _assert_rows(got: list[dict], want: list[tuple]) -> None:
    assert [(r["image_id"], r["category_id"]) for r in got] == [w[:2] for w in want]
    for r, w in zip(got, want):
        np.testing.assert_allclose(r["bbox"], w[2:6], atol=2e-3)
        assert r["score"] == pytest.approx(w[6], abs=2e-6)


# --- ids ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, expected", [
    ("val2017/000000000139.jpg", 139),
    ("/data/coco/images/val2017/000000581781.jpg", 581781),
    ("COCO_val2014_000000000042.jpg", 0),  # Darknet's atoi stops at the C
    ("C:\\data\\images\\17.jpg", 17),
    ("a.b/12.tar.jpg", 12),  # up to the first '.' of the name
    ("dir/ 7x.png", 7),  # atoi skips spaces and stops at the first non-digit
    ("dir/-3.png", -3),
    ("dir/4294967297.png", 1),  # an int keeps the low 32 bits
    ("", 0),
])
def test_image_id_is_atoi_of_basecfg(path, expected) -> None:
    assert coco.image_id(path) == expected


def test_coco_ids_are_darknets() -> None:
    assert len(coco.COCO_IDS) == 80 and list(coco.COCO_IDS) == sorted(set(coco.COCO_IDS))
    assert set(range(1, 91)) - set(coco.COCO_IDS) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert coco.category_ids(80)[:3] == [1, 2, 3] and coco.category_ids(80)[-1] == 90
    assert coco.category_ids(3, "index") == [0, 1, 2]
    with pytest.raises(darkcfg.CfgError) as e:
        coco.category_ids(81)
    assert str(e.value) == ("the network has 81 classes, but Darknet's COCO category ids "
                            "(coco_ids) cover 80: use --category-ids index (category_id = "
                            "class number)")


# --- print_cocos -------------------------------------------------------------------------------

def test_records_are_print_cocos() -> None:
    boxes = np.array([[0.5, 0.5, 0.25, 0.5],  # inside
                      [0.05, 0.9, 0.2, 0.4],  # past the left and bottom edges: clipped
                      [0.95, 0.05, 0.2, 0.2],  # past the right and top edges
                      [100.0, 50.0, 20.0, 10.0]], np.float32)  # a [detection] box in pixels
    probs = np.array([[0.75, 0.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.125]],
                     np.float32)
    recs = coco.records(boxes, probs, (640, 480), 139, [1, 2, 90],
                        pixels=np.array([False, False, False, True]))
    assert [(r.category_id, r.score) for r in recs] == [(1, 0.75), (90, 0.5), (2, 0.25),
                                                       (90, 0.125)]
    assert recs[0].line() == ('{"image_id":139, "category_id":1, "bbox":[240.000000, '
                              '120.000000, 160.000000, 240.000000], "score":0.750000}')
    x0 = np.float32(np.float32(0.95) * np.float32(640)) - np.float64(np.float32(0.2) * 640) / 2
    np.testing.assert_allclose(recs[2].bbox, (np.float32(x0), 0, 640 - np.float32(x0),
                                              np.float32(0.05 * 480 + 0.1 * 480)), rtol=1e-6)
    assert recs[3].bbox == (90.0, 45.0, 20.0, 10.0)
    assert coco.format_results(recs[:2]) == "[\n" + recs[0].line() + ",\n" + recs[1].line() + \
        "\n]\n"
    assert coco.format_results([]) == "[]\n"
    assert json.loads(coco.format_results(recs))[1] == recs[1].as_dict()


# --- darkcfg valid -----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", ["tiny.cfg", "lb.cfg"])
def test_valid_writes_darknets_records(tiny, capsys, cfg) -> None:
    code, out, err = _run(capsys, "valid", "x.data", cfg, "tiny.weights", "--category-ids",
                          "index", "--workers", "2", "--batch", "2")
    assert (code, err) == (0, [])
    text = (tiny / "results" / "coco_results.json").read_text()
    got = json.loads(text)
    assert out == f"wrote {len(got)} detections of 3 images to results/coco_results.json\n"
    assert text.splitlines()[1] == coco.Record(**{**got[0], "bbox": tuple(got[0]["bbox"])}) \
        .line() + ","
    want = [row for name in NAMES for row in _reference(cfg, Path("images") / name, [0, 1])]
    assert len(want) > 20
    _assert_rows(got, want)
    assert {r["image_id"] for r in got} == {139, 285, 632}


def test_valid_coco_ids_out_json_and_bad_images(tiny, capsys) -> None:
    (tiny / "valid.txt").write_text("images/000000000139.png\nimages/missing.png\n")
    code, out, err = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", "--out",
                          "r.json", "--json", "--workers", "0")
    assert code == 0
    assert err == ["warning: 1 of 2 image names do not start with a number (e.g. missing.png): "
                   "Darknet's image_id for them is 0",
                   "warning: cannot read image images/missing.png: no such file; evaluated as a "
                   "black 10x10 image, as Darknet does",
                   "warning: 1 of 2 images could not be read; each was evaluated as a black "
                   "10x10 image, as Darknet does"]
    summary = json.loads(out)
    got = json.loads((tiny / "r.json").read_text())
    assert summary == {"out": "r.json", "images": 2, "detections": len(got),
                       "unreadable_images": 1}
    assert {r["category_id"] for r in got} <= {1, 2}  # coco_ids of classes 0 and 1
    want = _reference("tiny.cfg", Path("images/000000000139.png"), [1, 2])
    _assert_rows([r for r in got if r["image_id"] == 139], want)
    stand_in = [r for r in got if r["image_id"] == 0]
    assert all(r["bbox"][0] + r["bbox"][2] <= 10 for r in stand_in)  # a 10x10 image's pixels


def test_valid_warns_about_ids_and_data_keys(tiny, capsys) -> None:
    (tiny / "images" / "000000000139.png").rename(tiny / "images" / "COCO_val_139.png")
    (tiny / "valid.txt").write_text("images/COCO_val_139.png\nimages/000000000285.png\n")
    (tiny / "x.data").write_text("valid=valid.txt\neval=voc\nmap=x.map\n")
    code, _, err = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", "--workers", "0")
    assert code == 0
    assert err == [
        "warning: x.data has eval=voc; darkcfg valid writes COCO results (Darknet's eval=coco)",
        "warning: x.data has map=x.map; darkcfg valid ignores it (Darknet's class map for "
        "yolo9000 trees)",
        "warning: 1 of 2 image names do not start with a number (e.g. COCO_val_139.png): "
        "Darknet's image_id for them is 0"]


@pytest.mark.parametrize("data, extra, message", [
    ("valid=valid.txt\nresults=nope\n", [],
     "cannot write nope/coco_results.json: folder nope does not exist"),
    ("valid=none.txt\n", [], "cannot read image list none.txt: no such file (valid= of x.data)"),
    ("valid=empty.txt\n", [],
     "the image list empty.txt (valid= of x.data) is empty: no images to validate"),
    ("valid=valid.txt\n", ["--out", "results"], "cannot write results: it is a folder"),
    ("valid=valid.txt\n", ["--image-ids", "annotations"],
     "--image-ids annotations needs --annotations (the file names are looked up there)"),
])
def test_valid_errors_before_the_model_loads(tiny, capsys, monkeypatch, data, extra,
                                             message) -> None:
    (tiny / "empty.txt").write_text("")
    (tiny / "x.data").write_text(data)
    monkeypatch.setattr(darkcfg.model, "load", lambda *a, **k: pytest.fail("model loaded"))
    code, out, err = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", *extra)
    assert (code, out, err) == (1, "", [f"darkcfg: error: {message}"])


def test_valid_api_keeps_the_callers_model(tiny) -> None:
    from darkcfg.detector_valid import validate

    model = darkcfg.load("tiny.cfg", "tiny.weights")
    a = validate("x.data", model, out="a.json", category_ids="index", workers=0)
    b = validate("x.data", "tiny.cfg", "tiny.weights", out="b.json", category_ids="index",
                 workers=0)
    assert not model.fused and a.detections == b.detections > 0
    for ra, rb in zip(coco.read_results("a.json"), coco.read_results("b.json")):
        assert (ra["image_id"], ra["category_id"]) == (rb["image_id"], rb["category_id"])
        np.testing.assert_allclose(ra["bbox"], rb["bbox"], atol=1e-4)


# --- pycocotools -------------------------------------------------------------------------------

def _annotations(path: Path, truths: list[dict], images: list[tuple[int, str, int, int]],
                 categories=(0, 1)) -> Path:
    anns = [{"id": k + 1, "image_id": t["image_id"], "category_id": t["category_id"],
             "bbox": t["bbox"], "area": t["bbox"][2] * t["bbox"][3], "iscrowd": 0}
            for k, t in enumerate(truths)]
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
        "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in categories]}))
    return path


def _images_meta() -> list[tuple[int, str, int, int]]:
    sizes = [(40, 30), (30, 50), (64, 20)]
    return [(coco.image_id(n), n, w, h) for n, (w, h) in zip(NAMES, sizes)]


def test_valid_reports_coco_ap_with_pycocotools(tiny, capsys) -> None:
    pytest.importorskip("pycocotools")
    assert _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", "--category-ids",
                "index", "--workers", "0")[0] == 0
    results = coco.read_results("results/coco_results.json")
    cut = float(np.median([r["score"] for r in results]))
    truths = [r for r in results if r["score"] > cut]  # the top half of every class
    assert len(truths) > 5
    # an image that is not in the list, with a truth nothing detects: not evaluated
    images = _images_meta() + [(999, "other.png", 40, 30)]
    other = {"image_id": 999, "category_id": 0, "bbox": [1, 1, 5, 5]}
    _annotations(tiny / "ann.json", truths + [other], images)
    code, out, err = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", "--category-ids",
                          "index", "--workers", "0", "--annotations", "ann.json")
    assert (code, err) == (0, [])
    lines = out.splitlines()
    assert lines[1].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | "
                               "maxDets=100 ] = 1.000")
    assert len(lines) == 14
    assert lines[-1] == "AP@[.5:.95] = 1.000000, AP@.5 = 1.000000 (pycocotools, 3 images)"
    # a truth that nothing detects, on an image of the list: AP drops below 1
    missed = {"image_id": 139, "category_id": 1, "bbox": [0.5, 0.5, 2, 2]}
    _annotations(tiny / "ann.json", truths + [missed], images)
    code, out, _ = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", "--category-ids",
                        "index", "--workers", "0", "--annotations", "ann.json", "--json")
    got = json.loads(out)
    assert code == 0 and 0.4 < got["ap"] < 1 and got["evaluated_images"] == 3
    assert list(got)[4:16] == list(coco.STAT_NAMES)


def test_coco_image_ids_by_file_name_and_unknown_ids(tiny, capsys) -> None:
    pytest.importorskip("pycocotools")
    for n in NAMES:
        (tiny / "images" / n).rename(tiny / "images" / f"COCO_val2014_{n}")
    (tiny / "valid.txt").write_text("".join(f"images/COCO_val2014_{n}\n" for n in NAMES))
    meta = [(i, f"COCO_val2014_{n}", w, h) for i, n, w, h in _images_meta()]
    _annotations(tiny / "ann.json", [], meta)
    code, _, err = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", "--workers", "0",
                        "--annotations", "ann.json", "--category-ids", "index")
    assert code == 1
    assert err[-1] == ("darkcfg: error: 1 image ids of the results are not images of ann.json "
                       "(0); Darknet's image_id is the number the file name starts with "
                       "(--image-ids annotations looks the file names up instead)")
    code, out, err = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights", "--workers",
                          "0", "--annotations", "ann.json", "--category-ids", "index",
                          "--image-ids", "annotations", "--json")
    assert code == 0, err
    assert {r["image_id"] for r in coco.read_results("results/coco_results.json")} == \
        {139, 285, 632}
    assert json.loads(out)["ap"] == -1.0  # no truths at all: COCOeval's -1


def test_missing_pycocotools_is_one_line(tiny, capsys, monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def no_pycocotools(name, *a, **kw):
        if name.startswith("pycocotools"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pycocotools)
    (tiny / "ann.json").write_text("{}")
    code, out, err = _run(capsys, "valid", "x.data", "tiny.cfg", "tiny.weights",
                          "--annotations", "ann.json")
    assert (code, out, err) == (1, "", ["darkcfg: error: --annotations needs pycocotools: pip "
                                        "install 'darkcfg[coco]'"])
