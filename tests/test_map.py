"""`darkcfg map` / `darkcfg.evaluate`: Darknet's `detector map`, number by number.

Against Darknet (../shared/official/map, skipped when absent): the 4 official cases through the
CLI's --json and text and through darkcfg.evaluate; Darknet's own detections through the pure
evaluation (every number to ~1e-9, which separates "my detections differ" from "my evaluation
differs"); our map detections against Darknet's. Without shared data: the evaluation's quirks on
hand-made records, the .data / list / label-path / label-file rules, and bad input on a tiny
random-weight model.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import darkcfg
import darkcfg.detector_map as detector_map
from darkcfg.cli import main
from darkcfg.datafile import (LABEL_RULES, Labels, label_path, label_path_note, parse_data,
                              parse_image_list, parse_labels)
from darkcfg.evaluation import (EvalImage, MapAccumulator, box_iou, check_points,
                                evaluate_images, format_darknet, recall_levels)
from oracle import SHARED, needs_shared

MAP = SHARED / "official" / "map" if SHARED is not None else None
CASES = ["clean-416-iou50-p0", "clean-416-iou50-p101", "hard-416-iou50-p0", "hard-416-iou50-p101"]


# --- helpers -----------------------------------------------------------------------------------

def _expected(case: str) -> dict:
    return json.loads((MAP / "cases" / case / "expected.json").read_text())


def _weights() -> str:
    return str(SHARED / "official" / "yolov3-tiny.weights")


@pytest.fixture(scope="module")
def official_model():
    return darkcfg.load(MAP / "cfg" / "yolov3-tiny.cfg", _weights())


def _case_args(case: str) -> list[str]:
    s = _expected(case)["settings"]
    return ["case.data", "../../cfg/yolov3-tiny.cfg", _weights(), "--iou-thresh",
            str(s["iou_thresh"]), "--points", str(s["points"]), "--thresh", str(s["thresh"])]


def _assert_matches(got: dict, exp: dict, *, ap_tol: float, float_tol: float) -> None:
    """Every number of a --json object against expected.json."""
    assert abs(got["map"] - exp["map"]) <= ap_tol
    assert len(got["classes"]) == len(exp["classes"]) == 80
    for g, e in zip(got["classes"], exp["classes"]):
        assert (g["id"], g["name"]) == (e["id"], e["name"])
        assert abs(g["ap"] - e["ap"]) <= ap_tol, (g, e)
        assert (g["tp"], g["fp"], g["truths"], g["detections"]) == \
            (e["tp"], e["fp"], e["truths"], e["detections"]), (g, e)
    for key in ("tp", "fp", "fn", "detections_count", "unique_truth_count"):
        assert got[key] == exp[key], key
    for key in ("precision", "recall", "f1", "average_iou"):
        assert abs(got[key] - exp[key]) <= float_tol, key


def _darknet_block(case: str) -> str:
    """Darknet's stdout from `detections_count` to the mAP line, its rank counter removed."""
    raw = (MAP / "cases" / case / "darknet_stdout.txt").read_bytes().decode()
    raw = re.sub(r" rank = \d+ of ranks = \d+ \r", "", raw)
    start = raw.index(" detections_count")
    end = raw.index("\n", raw.index(" mean average precision"))
    return raw[start:end]


# --- the official cases ------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("case", CASES)
def test_official_case_cli_json(case, monkeypatch, capsys) -> None:
    monkeypatch.chdir(MAP / "cases" / case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--quiet", "map", *_case_args(case), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    _assert_matches(got, _expected(case), ap_tol=1e-9, float_tol=1e-5)
    assert got["settings"]["points"] == _expected(case)["settings"]["points"]


@needs_shared
@pytest.mark.parametrize("case", CASES)
def test_official_case_text_is_darknets(case, monkeypatch, capsys) -> None:
    monkeypatch.chdir(MAP / "cases" / case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--quiet", "map", *_case_args(case)]) == 0
    assert capsys.readouterr().out == _darknet_block(case) + "\n"


@needs_shared
@pytest.mark.parametrize("case", CASES)
def test_official_case_api(case, monkeypatch, official_model) -> None:
    monkeypatch.chdir(MAP / "cases" / case)
    s = _expected(case)["settings"]
    with pytest.warns(darkcfg.CfgWarning, match="used as written"):
        result = darkcfg.evaluate("case.data", official_model, iou_thresh=s["iou_thresh"],
                                  points=s["points"], thresh=s["thresh"])
    assert isinstance(result, darkcfg.MapResult)
    _assert_matches(result.as_dict(), _expected(case), ap_tol=1e-9, float_tol=1e-5)
    assert result.format() == _darknet_block(case)


def _darknet_images(case: str):
    """EvalImages from Darknet's own post-NMS boxes (detections/yolov3-tiny.json)."""
    from darkcfg.datafile import read_data, read_image_list, read_labels

    dets = json.loads((MAP / "detections" / "yolov3-tiny.json").read_text())
    by_name = {d["image"]: d for d in dets["images"]}
    folder = MAP / "cases" / case
    data = read_data(folder / "case.data")
    for line in read_image_list(folder / data.get("valid")):
        d = by_name[Path(line).name]
        boxes = np.array([b[:4] for b in d["boxes"]], np.float32).reshape(-1, 4)
        probs = np.zeros((len(d["boxes"]), 80), np.float32)
        for i, b in enumerate(d["boxes"]):
            for c, p in b[5]:
                probs[i, c] = p
        yield EvalImage(boxes, probs, read_labels(folder / label_path(line), 80))


@needs_shared
@pytest.mark.parametrize("case", CASES)
def test_darknets_detections_give_darknets_numbers(case) -> None:
    """The evaluation alone, fed Darknet's detections: every number to ~1e-9."""
    exp = _expected(case)
    s = exp["settings"]
    names = (MAP / "coco.names").read_text().splitlines()
    r = evaluate_images(_darknet_images(case), 80, names=names, iou_thresh=s["iou_thresh"],
                        points=s["points"], thresh=s["thresh"])
    _assert_matches(r.as_dict(), exp, ap_tol=1e-12, float_tol=1e-9)
    assert r.images == exp["images"] == 16
    assert format_darknet(r) == _darknet_block(case)


@needs_shared
def test_map_detections_are_darknets(official_model) -> None:
    """Our boxes after map's decode (0.005) and NMS against Darknet's, image by image: same
    boxes in the same order, the same classes above 0 (so the same records)."""
    from darkcfg.image import load_image

    dets = json.loads((MAP / "detections" / "yolov3-tiny.json").read_text())
    assert len(dets["images"]) == 16
    for d in dets["images"]:
        image = load_image(MAP / "sets" / "clean" / "images" / d["image"])
        assert (image.shape[2], image.shape[1]) == (d["w"], d["h"])
        boxes, probs = detector_map.map_detections(official_model, image)
        ref = d["boxes"]
        assert len(boxes) == len(ref), d["image"]
        np.testing.assert_allclose(boxes, np.array([b[:4] for b in ref]), atol=2e-5)
        for i, b in enumerate(ref):
            got = {int(c): float(probs[i, c]) for c in np.flatnonzero(probs[i])}
            want = {c: p for c, p in b[5]}
            assert got.keys() == want.keys(), (d["image"], i)
            for c in want:
                assert got[c] == pytest.approx(want[c], abs=2e-5)


# --- other settings, against a Darknet build (tests/data/map_darknet) --------------------------

DARKNET_BUILD = {  # case: ([net] lines, [yolo] lines, difficult list, darkcfg map options)
    "iou75-p11-t50": ("", "", False, ["--iou-thresh", "0.75", "--points", "11", "--thresh",
                                      "0.5"]),
    "letterbox-p0": ("width=416\nheight=416\nletter_box=1", "", False, []),
    "320-p101": ("width=320\nheight=320", "", False, ["--points", "101"]),
    "diounms": ("", "nms_kind=diounms\nbeta_nms=0.8", False, ["--points", "11"]),
    "greedynms": ("", "nms_kind=greedynms", False, ["--iou-thresh", "0.6"]),
    "difficult": ("", "", True, ["--points", "11", "--thresh", "0.3"]),
    "lb-608x352-iou30": ("width=608\nheight=352\nletter_box=1", "", False,
                         ["--iou-thresh", "0.3", "--thresh", "0.1"]),
    "bad-lines": ("", "", False, []),
}


def _set_lines(name: str) -> list[str]:
    text = (MAP / "sets" / name / "valid.txt").read_text()
    return [line.replace("../..", str(MAP)) for line in text.splitlines()]


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("case", list(DARKNET_BUILD))
def test_darknet_build_case(case, tmp_path, monkeypatch, capsys) -> None:
    """Letterbox (also non-square), other sizes, NMS kinds, IoU thresholds, points, --thresh,
    a difficult list and unreadable list lines: darkcfg's printout is Darknet's."""
    net, yolo, difficult, options = DARKNET_BUILD[case]
    cfg = (MAP / "cfg" / "yolov3-tiny.cfg").read_text()
    if net:
        assert "width=416\nheight=416" in cfg
        cfg = cfg.replace("width=416\nheight=416", net)
    if yolo:
        cfg = cfg.replace("[yolo]\n", f"[yolo]\n{yolo}\n")
    monkeypatch.chdir(tmp_path)
    Path("net.cfg").write_text(cfg)
    lines = _set_lines("hard")
    if case == "bad-lines":
        lines += [str(MAP / "sets/hard/images/val2017/nothere.png"), "",
                  str(MAP / "sets/hard/images/val2017/dog.png")]
    Path("valid.txt").write_text("\n".join(lines) + "\n")
    Path("clean.txt").write_text("\n".join(_set_lines("clean")) + "\n")
    Path("names").write_text((MAP / "coco.names").read_text())
    Path("a.data").write_text("classes=80\nvalid=valid.txt\nnames=names\n" +
                              ("difficult=clean.txt\n" if difficult else ""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--quiet", "map", "a.data", "net.cfg", _weights(), *options]) == 0
    expected = (Path(__file__).parent / "data" / "map_darknet" / f"{case}.txt").read_text()
    assert capsys.readouterr().out == expected + "\n"


# --- the evaluation's rules on hand-made records -----------------------------------------------

def _labels(rows) -> Labels:
    rows = list(rows)
    ids = np.array([r[0] for r in rows], np.int64)
    boxes = np.array([r[1:] for r in rows], np.float32).reshape(-1, 4)
    return Labels(ids, boxes)


def _image(dets, truths, classes=3, difficult=None) -> EvalImage:
    """dets: [(box, {class: prob})] in Darknet's order."""
    boxes = np.array([d[0] for d in dets], np.float32).reshape(-1, 4)
    probs = np.zeros((len(dets), classes), np.float32)
    for i, (_, p) in enumerate(dets):
        for c, v in p.items():
            probs[i, c] = v
    return EvalImage(boxes, probs, _labels(truths),
                     None if difficult is None else _labels(difficult))


BOX = (0.5, 0.5, 0.2, 0.2)
NEAR = (0.51, 0.5, 0.2, 0.2)  # IoU with BOX ~0.905
FAR = (0.1, 0.1, 0.1, 0.1)


def test_earlier_weak_record_takes_the_truth_at_thresh() -> None:
    """Darknet's conf_thresh counts run in record order: a confident record after a weak one
    of the same truth is an FP there (the truth a FN), while the PR curve ranks it first."""
    img = _image([(NEAR, {0: 0.1}), (BOX, {0: 0.9})], [(0, *BOX)])
    r = evaluate_images([img], 3)
    assert (r.tp, r.fp, r.fn) == (0, 1, 1)
    assert r.classes[0].ap == 1.0  # the 0.9 record is the TP of the curve
    assert r.average_iou == 0.0  # 0 / (TP + FP)
    assert r.map == pytest.approx(1 / 3)  # over every class of the model


def test_average_iou_divides_by_tp_plus_fp() -> None:
    img = _image([(BOX, {0: 0.9}), (FAR, {1: 0.8})], [(0, *BOX)])
    r = evaluate_images([img], 3)
    assert (r.tp, r.fp) == (1, 1)
    assert r.average_iou == pytest.approx(0.5)
    assert (r.classes[0].tp, r.classes[1].fp) == (1, 1)


def test_difficult_record_leaves_the_curve_but_is_an_fp_at_thresh() -> None:
    truths = [(0, *BOX)]
    dets = [(BOX, {0: 0.5}), (FAR, {0: 0.9})]
    plain = evaluate_images([_image(dets, truths)], 3)
    hard = evaluate_images([_image(dets, truths, difficult=[(0, *FAR)])], 3)
    assert plain.detections_count == 2 and hard.detections_count == 1
    assert plain.classes[0].ap == 0.5 and hard.classes[0].ap == 1.0
    assert (hard.tp, hard.fp) == (plain.tp, plain.fp) == (1, 1)


def test_match_needs_the_same_class_and_iou_strictly_above() -> None:
    a, b = (0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.25)  # IoU exactly 0.5 in float32
    assert box_iou(np.array([a]), np.array([b]))[0, 0] == np.float32(0.5)
    at = evaluate_images([_image([(a, {0: 0.9})], [(0, *b)])], 3, iou_thresh=0.5)
    below = evaluate_images([_image([(a, {0: 0.9})], [(0, *b)])], 3, iou_thresh=0.49)
    other = evaluate_images([_image([(a, {1: 0.9})], [(0, *b)])], 3, iou_thresh=0.49)
    assert (at.tp, below.tp, other.tp) == (0, 1, 0)


def test_best_iou_truth_and_duplicates_in_the_curve() -> None:
    """Each record takes its best truth even if taken; in the curve the second is an FP."""
    truths = [(0, *NEAR), (0, *BOX)]
    img = _image([(BOX, {0: 0.9}), ((0.5, 0.5, 0.2, 0.21), {0: 0.8})], truths)
    r = evaluate_images([img], 3)
    assert r.classes[0].ap == pytest.approx(0.5)  # recall 1/2 at precision 1, then 1/2 FP
    assert (r.tp, r.fp) == (1, 1)


def test_points_use_the_ofast_recall_levels() -> None:
    """-points N: levels p * (1.0/(N-1)) as Darknet's -Ofast build computes them; a recall of
    exactly 3/10 does not reach level 0.30000000000000004."""
    assert recall_levels(11)[3] == 0.30000000000000004 > 3 / 10
    assert recall_levels(11) == list(np.linspace(0, 1, 11))
    assert [p for p in range(101) if recall_levels(101)[p] != p / 100] == \
        [35, 41, 47, 57, 69, 70, 82, 83, 94, 95]
    # 10 truths, 3 found by the 3 best records: recall 0.3 at precision 1, nothing after
    truths = [(0, 0.05 + 0.09 * k, 0.5, 0.05, 0.05) for k in range(10)]
    dets = [((0.05 + 0.09 * k, 0.5, 0.05, 0.05), {0: 0.9 - 0.1 * k}) for k in range(3)]
    r = evaluate_images([_image(dets, truths)], 1, points=11)
    assert r.classes[0].ap == pytest.approx(3 / 11)  # levels 0, 0.1, 0.2 only (not 0.3)
    r0 = evaluate_images([_image(dets, truths)], 1, points=0)
    assert r0.classes[0].ap == pytest.approx(0.3)


def test_area_under_curve_for_each_unique_recall() -> None:
    """points=0: recall steps times the best precision at that rank or later."""
    truths = [(0, 0.1, 0.5, 0.1, 0.1), (0, 0.5, 0.5, 0.1, 0.1)]
    dets = [((0.1, 0.5, 0.1, 0.1), {0: 0.9}), (FAR, {0: 0.8}), ((0.5, 0.5, 0.1, 0.1), {0: 0.7})]
    r = evaluate_images([_image(dets, truths)], 1)
    assert r.classes[0].ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    r101 = evaluate_images([_image(dets, truths)], 1, points=101)
    assert r101.classes[0].ap == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)


def test_class_without_truths_and_nan_printing() -> None:
    """No truths at all: recall and F1 are Darknet's -nan (JSON null); AP 0."""
    r = evaluate_images([_image([(BOX, {2: 0.9})], [])], 3)
    assert r.classes[2].ap == 0.0 and r.fp == 1
    assert math.isnan(r.recall) and math.isnan(r.f1) and r.precision == 0.0
    d = r.as_dict()
    assert d["recall"] is None and d["f1"] is None
    assert " precision = 0.00, recall = -nan, F1-score = -nan " in format_darknet(r)


def test_no_records_at_all_gives_zero_aps_with_a_note() -> None:
    r = evaluate_images([_image([], [(0, *BOX)])], 3)
    assert r.map == 0.0 and r.detections_count == 0 and r.fn == 1
    assert r.notes == ("no detection above 0.005 is left for the PR curve: every AP is 0 "
                       "(Darknet reads outside its arrays here)",)


def test_truths_with_a_class_outside_count_as_missed() -> None:
    img = _image([(BOX, {0: 0.9})], [(0, *BOX), (7, *FAR), (-1, *FAR)])
    r = evaluate_images([img], 3)
    assert (r.tp, r.fn, r.unique_truth_count) == (1, 2, 3)
    assert [c.truths for c in r.classes] == [1, 0, 0]


def test_truth_indices_are_global_across_images() -> None:
    a = _image([(BOX, {0: 0.9})], [(0, *BOX)])
    r = evaluate_images([a, a], 3)
    assert (r.tp, r.fp, r.classes[0].ap) == (2, 0, 1.0)


def test_points_are_checked() -> None:
    for bad in (1, -1, 2.5, True):
        with pytest.raises(ValueError):
            check_points(bad)
    with pytest.raises(ValueError, match="Darknet's -points 1 divides by zero"):
        MapAccumulator(3, points=1)
    assert check_points(101) == 101


def test_printout_rounds_as_printf() -> None:
    r = evaluate_images([_image([(BOX, {0: 0.9})], [(0, *BOX)])], 2, names=["a", "b c"],
                        iou_thresh=0.55, thresh=0.3)
    assert format_darknet(r).split("\n") == [
        " detections_count = 1, unique_truth_count = 1  ",
        "class_id = 0, name = a, ap = 100.00%   \t (TP = 1, FP = 0) ",
        "class_id = 1, name = b c, ap = 0.00%   \t (TP = 0, FP = 0) ",
        "",
        " for conf_thresh = 0.30, precision = 1.00, recall = 1.00, F1-score = 1.00 ",
        " for conf_thresh = 0.30, TP = 1, FP = 0, FN = 0, average IoU = 100.00 % ",
        "",
        " IoU threshold = 55 %, used Area-Under-Curve for each unique Recall ",
        " mean average precision (mAP@0.55) = 0.500000, or 50.00 % ",
    ]


# --- the .data file, lists, label paths, label files -------------------------------------------

@pytest.mark.parametrize("image, label", [
    ("../../sets/hard/images/val2017/dog.png", "../../sets/hard/labels/val2017/dog.txt"),
    ("/d/images/train2017/a.jpg", "/d/labels/train2017/a.txt"),
    ("/d/images/train2014/a.JPEG", "/d/labels/train2014/a.txt"),
    ("/d/images/val2014/a.bmp", "/d/labels/val2014/a.txt"),
    ("VOC/JPEGImages/a.jpg", "VOC/labels/a.txt"),
    ("C:\\d\\images\\val2017\\a.png", "C:\\d\\labels\\val2017\\a.txt"),
    ("C:\\VOC\\JPEGImages\\a.jpg", "C:\\VOC\\labels\\a.txt"),
    ("data/images/x.png", "data/images/x.txt"),  # a plain images/ folder is not mapped
    ("images/val2017/x.png", "images/val2017/x.txt"),  # the rule needs the leading /
    ("/a/images/val2017/images/val2017/x.png", "/a/labels/val2017/images/val2017/x.txt"),
    ("  a/b.PNG\t", "a/b.txt"),  # trimmed
    ("a/b.png.jpg", "a/b.png.txt"),  # only the very end
    ("a/b.tiff", "a/b.txt"), ("a/b.ppm", "a/b.txt"), ("a/b.TIFF", "a/b.txt"),
    ("a/b.Jpg", "a/b.Jpg"), ("a/b.gif", "a/b.gif"), ("a/b.webp", "a/b.webp"),
])
def test_label_path_rules(image, label) -> None:
    assert label_path(image) == label


def test_label_rules_order_and_notes() -> None:
    assert LABEL_RULES[:3] == (("/images/train2017/", "/labels/train2017/"),
                               ("/images/val2017/", "/labels/val2017/"),
                               ("/JPEGImages/", "/labels/"))
    assert label_path_note("a/b.png", "a/b.txt") is None
    assert label_path_note("a/b.gif", "a/b.gif") == (
        "no label file name for image a/b.gif: its suffix is not one Darknet maps to .txt "
        "(.jpg .JPG .jpeg .JPEG .png .PNG .bmp .BMP .ppm .PPM .tiff .TIFF)")


def test_data_file_quirks() -> None:
    d = parse_data("# comment\n; comment\nclasses = 80\nvalid = my data/v.txt\r\nnames=\n"
                   "names=a.names\nnames=b.names\ndifficult\n\n  train\t= t.txt ", "x.data")
    assert d.options == {"classes": "80", "valid": "mydata/v.txt", "names": "a.names",
                         "difficult": None, "train": "t.txt"}
    assert d.get("difficult") is None and d.get("difficult", "dflt") == "dflt"
    assert d.get_int("classes", 1) == 80 and d.get_int("nope", 3) == 3
    assert d.notes == (
        "x.data line 4: the spaces inside valid's value are deleted, as Darknet does: "
        "valid=mydata/v.txt",
        "x.data line 5: 'names=' has no value; Darknet ignores the line",
        "x.data line 7: names is set again; Darknet uses the first value (line 6)",
        "x.data line 8: 'difficult' has no '='; Darknet reads difficult as not set",
    )
    assert parse_data("classes=12abc").get_int("classes", 1) == 12
    assert parse_data("valid\nvalid=a.txt").get("valid", "data/train.txt") == "data/train.txt"


def test_image_list_is_every_line_untrimmed() -> None:
    assert parse_image_list("a.png\r\n b.png \n\nc.png") == ["a.png", " b.png ", "", "c.png"]
    assert parse_image_list("a.png\n") == ["a.png"]
    assert parse_image_list("") == [] and parse_image_list("\n") == [""]


def test_label_file_reads_as_fscanf() -> None:
    text = ("0 0.5 0.5 0.2 0.2\n"
            "1 0.25\t0.5 1.2 0.3\n"
            "  85 .5 .5 .1 .1\n"
            "1 0.5\n0.5 0.2 0.2\n"
            "2 0.5 0.5 0.2 0.2 oops\n"
            "3 0.5 0.5 0.2 0.2\n")
    lab = parse_labels(text, "a.txt", 80)
    assert lab.ids.tolist() == [0, 1, 85, 1, 2]
    assert lab.boxes.dtype == np.float32
    np.testing.assert_array_equal(lab.boxes[1], np.array([0.25, 0.5, 1.2, 0.3], np.float32))
    assert lab.lines == (1, 2, 3, 4, 6)
    assert [str(n) for n in lab.notes] == [
        "a.txt line 2: w=1.2 outside (0, 1]",
        "a.txt line 3: class 85 is not in 0..79",
        "a.txt line 4: this row is not five values on one line (fscanf reads on across values "
        "and lines, as Darknet does)",
        "a.txt line 6: reading stops at 'oops' (not 'class x y width height'); Darknet ignores "
        "the rest of the file",
    ]
    assert [n.kind for n in lab.notes] == ["row", "row", "layout", "stop"]
    assert len(parse_labels(b"", "e.txt")) == 0 and parse_labels(b"", "e.txt").notes == ()
    # "%d" then "%f": a float class splits into the class and the next value
    np.testing.assert_array_equal(parse_labels("1.5 0.5 0.5 0.2 0.2").boxes[0],
                                  np.array([0.5, 0.5, 0.5, 0.2], np.float32))


# --- bad input, on a tiny random-weight model --------------------------------------------------

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
{yolo}
"""


@pytest.fixture()
def tiny(tmp_path, monkeypatch) -> Path:
    """A dataset folder (the current directory) with tiny.cfg/tiny.weights, names, 3 images."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.cfg").write_text(TINY_CFG.format(net="", yolo=""))
    torch.manual_seed(0)
    darkcfg.build(tmp_path / "tiny.cfg").save_darknet_weights(tmp_path / "tiny.weights")
    (tmp_path / "img").mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "img" / f"a{i}.png")
        (tmp_path / "img" / f"a{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n1 0.3 0.3 0.2 0.2\n")
    (tmp_path / "names").write_text("a\nb\n")
    (tmp_path / "valid.txt").write_text("img/a0.png\nimg/a1.png\nimg/a2.png\n")
    (tmp_path / "x.data").write_text("classes=2\nvalid=valid.txt\nnames=names\n")
    return tmp_path


def _run(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(["--quiet", *argv])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def test_bad_inputs_are_warned_and_counted(tiny, capsys) -> None:
    (tiny / "img" / "a0.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 1.2 0.3\n2 0.1 0.1 0.1 "
                                         "0.1\n")
    (tiny / "img" / "a2.txt").unlink()
    (tiny / "valid.txt").write_text("img/a0.png\nimg/a1.png\nimg/a2.png\nimg/missing.png\n\n"
                                    "img/a1.png \nimg/a1.gif\n")
    code, out, err = _run(capsys, "map", "x.data", "tiny.cfg", "tiny.weights", "--json")
    assert code == 0
    assert err == [
        "warning: img/a0.txt line 2: w=1.2 outside (0, 1]; used as written, as Darknet does",
        "warning: img/a0.txt line 3: class 2 is not in 0..1; used as written, as Darknet does",
        "warning: no label file img/a2.txt for image img/a2.png: 0 truths (Darknet lists it in "
        "bad.list)",
        "warning: cannot read image img/missing.png: no such file; evaluated as a black 10x10 "
        "image, as Darknet does",
        "warning: no label file img/missing.txt for image img/missing.png: 0 truths (Darknet "
        "lists it in bad.list)",
        "warning: valid.txt line 5 is empty, so names no image; evaluated as a black 10x10 "
        "image, as Darknet does",
        "warning: cannot read image img/a1.png : no such file (Darknet keeps the spaces around a "
        "path); evaluated as a black 10x10 image, as Darknet does",
        "warning: cannot read image img/a1.gif: no such file; evaluated as a black 10x10 image, "
        "as Darknet does",
        "warning: no label file name for image img/a1.gif: its suffix is not one Darknet maps to "
        ".txt (.jpg .JPG .jpeg .JPEG .png .PNG .bmp .BMP .ppm .PPM .tiff .TIFF): 0 truths",
        "warning: 4 of 7 images could not be read; each was evaluated as a black 10x10 image, as "
        "Darknet does",
        "warning: 4 of 7 label files are missing or unnamed; those images count 0 truths "
        "(Darknet lists them in bad.list)",
        "warning: 2 label rows have a class outside the model's or x, y, w or h outside (0, 1]; "
        "used as written, as Darknet does (a class outside counts as a truth that nothing "
        "detects)",
    ]
    got = json.loads(out)
    # a0: 3 rows; a1 twice (once by the trimmed label path of "img/a1.png "): 2 + 2
    assert got["unique_truth_count"] == 7 and got["images"] == 7
    assert [c["truths"] for c in got["classes"]] == [3, 3]


def test_black_stand_in_is_darknets(tiny) -> None:
    """An unreadable image is evaluated as Darknet's make_image(10, 10, 3): zeros."""
    model = darkcfg.load("tiny.cfg", "tiny.weights")
    got = detector_map.map_detections(model, torch.zeros(3, 10, 10))
    (tiny / "valid.txt").write_text("img/nothing.png\n")
    with pytest.warns(darkcfg.CfgWarning):
        r = darkcfg.evaluate("x.data", model)
    assert r.detections_count == int((got[1] > 0).sum())
    assert r.notes[0] == ("1 of 1 images could not be read; each was evaluated as a black "
                          "10x10 image, as Darknet does")


@pytest.mark.parametrize("data, message", [
    ("names=names\n", "cannot read image list data/train.txt: no such file (valid= of x.data)"),
    ("valid=nope.txt\nnames=names\n",
     "cannot read image list nope.txt: no such file (valid= of x.data)"),
    ("valid=empty.txt\nnames=names\n",
     "the image list empty.txt (valid= of x.data) is empty: no images to evaluate"),
    ("valid=valid.txt\nnames=nope.names\n",
     "cannot read names file nope.names (names= of x.data): no such file"),
    ("valid=valid.txt\nnames=three\n",
     "the names file three has 3 lines, but the network has 2 classes (one name per line, in "
     "class order)"),
    ("valid=valid.txt\ndifficult=nope.txt\nnames=names\n",
     "cannot read image list nope.txt: no such file (difficult= of x.data)"),
])
def test_dataset_errors_are_one_line(tiny, capsys, data, message) -> None:
    (tiny / "empty.txt").write_text("")
    (tiny / "three").write_text("a\nb\nc\n")
    (tiny / "x.data").write_text(data)
    code, out, err = _run(capsys, "map", "x.data", "tiny.cfg", "tiny.weights")
    assert code == 1 and out == ""
    assert err[-1] == f"darkcfg: error: {message}"


def test_data_without_valid_falls_back_as_darknet(tiny, capsys) -> None:
    (tiny / "data").mkdir()
    (tiny / "data" / "train.txt").write_text("img/a0.png\n")
    (tiny / "x.data").write_text("classes=2\nnames=names\n")
    code, out, err = _run(capsys, "map", "x.data", "tiny.cfg", "tiny.weights", "--json")
    assert code == 0 and json.loads(out)["images"] == 1
    assert err == ["warning: x.data has no valid= line; Darknet's map then reads "
                   "data/train.txt"]


def test_points_1_is_refused_before_loading(tiny, capsys) -> None:
    code, _, err = _run(capsys, "map", "x.data", "tiny.cfg", "nope.weights", "--points", "1")
    assert code == 1
    assert err == ["darkcfg: error: points 1: use 0 (area under the curve for each unique "
                   "recall) or N >= 2 recall levels (11 for VOC2007, 101 for COCO); Darknet's "
                   "-points 1 divides by zero"]


def test_difficult_list_removes_records(tiny, capsys) -> None:
    """A difficult label at every detection: no record has a truth (labels are elsewhere), so
    all leave the curve, yet the ones above thresh are FPs."""
    warnings.simplefilter("ignore")  # boxes past the border, nothing left for the curve
    model = darkcfg.load("tiny.cfg", "tiny.weights")
    plain = darkcfg.evaluate("x.data", model, thresh=0.01)
    (tiny / "hard").mkdir()
    lines = []
    for i in range(3):
        image = darkcfg.image.load_image(f"img/a{i}.png")
        boxes, probs = detector_map.map_detections(model, image)
        rows = [f"{c} {b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f}"
                for b, p in zip(boxes, probs) for c in np.flatnonzero(p)]
        (tiny / "hard" / f"a{i}.txt").write_text("\n".join(rows) + "\n")
        lines.append(f"hard/a{i}.png")
    (tiny / "difficult.txt").write_text("\n".join(lines) + "\n")
    for i in range(3):  # truths nothing matches
        (tiny / "img" / f"a{i}.txt").write_text("0 0.01 0.01 0.001 0.001\n")
    (tiny / "x.data").write_text("valid=valid.txt\nnames=names\ndifficult=difficult.txt\n")
    hard = darkcfg.evaluate("x.data", model, thresh=0.01)
    assert plain.detections_count > 0 and hard.detections_count == 0
    assert hard.tp == 0 and hard.fp == plain.tp + plain.fp > 0


def test_map_uses_the_cfgs_letterbox_and_nms_kind(tiny) -> None:
    """map_detections = decode(0.005, image size only with letterbox) + NMS 0.45 of the cfg's
    kind, on the letterboxed image when the cfg says letter_box=1."""
    from darkcfg.detection import decode, nms
    from darkcfg.image import letterbox_image, load_image

    cfg = TINY_CFG.format(net="letter_box=1", yolo="nms_kind=diounms\nbeta_nms=0.8")
    (tiny / "lb.cfg").write_text(cfg)
    model = darkcfg.load("lb.cfg", "tiny.weights")
    image = load_image("img/a0.png")
    boxes, probs = detector_map.map_detections(model, image)
    with torch.no_grad():
        out = model(letterbox_image(image, 32, 32)[None])
    raw = decode(model, out, [(40, 30)], thresh=0.005, letterbox=True)[0]
    ref = nms(raw, 0.45, kind="diounms", beta=0.8)
    assert len(boxes) > 1
    np.testing.assert_array_equal(boxes, ref.boxes.numpy())
    np.testing.assert_array_equal(probs, ref.probs.numpy())
    plain = detector_map.map_detections(darkcfg.load("tiny.cfg", "tiny.weights"), image)
    assert not np.array_equal(plain[0][:len(boxes)], boxes)


def test_evaluate_takes_a_model_or_a_cfg(tiny) -> None:
    by_path = darkcfg.evaluate("x.data", "tiny.cfg", "tiny.weights", points=11)
    by_model = darkcfg.evaluate("x.data", darkcfg.load("tiny.cfg", "tiny.weights"), points=11)
    assert by_path.as_dict() == by_model.as_dict()
    with pytest.raises(ValueError, match="got a loaded model"):
        darkcfg.evaluate("x.data", darkcfg.load("tiny.cfg"), "tiny.weights")
