"""`darkcfg calc_anchors`: Darknet's `detector calc_anchors` k-means, seeded.

The Darknet numbers below were printed by Darknet itself (AlexeyAB 59596d78, built by its
Makefile: CPU, -Ofast) on the label boxes of ../shared/official/map (the hard list, then the
clean list), with its `srand(time(0))` given a fixed time through an LD_PRELOAD `time()` shim:
`--seed S` must reproduce Darknet run at Unix time S.
"""

from __future__ import annotations

import ctypes
import json
import platform
from pathlib import Path

import numpy as np
import pytest

from darkcfg.anchors import GlibcRandom, calc_anchors, format_anchors, kmeans
from darkcfg.cli import main
from darkcfg.errors import CfgError
from oracle import SHARED, needs_shared

# (clusters, width, height, seed) -> Darknet's iterations, avg IoU line and anchors line
DARKNET = {
    (1, 416, 416, 7): (0, " avg IoU = 34.37 % ", "anchors = 121,150"),
    (6, 416, 416, 7): (3, " avg IoU = 66.34 % ",
                       "anchors =   9, 10,  42, 70, 100, 95, 131,206, 212,342, 332,266"),
    (9, 416, 416, 7): (5, " avg IoU = 72.20 % ",
                       "anchors =   9, 10,  48, 44,  39, 71,  34,101,  75,115, 131, 71, "
                       "131,206, 212,342, 332,266"),
    (6, 416, 416, 1764775000): (5, " avg IoU = 64.47 % ",
                                "anchors =  33, 52,  94, 96, 132,202, 163,302, 235,337, "
                                "354,269"),
    (9, 608, 608, 1764775000): (4, " avg IoU = 68.23 % ",
                                "anchors =  49, 72,  99,161, 187,105, 142,325, 226,278, "
                                "257,430, 343,492, 482,416, 572,358"),
    (5, 13, 13, 42): (5, " avg IoU = 62.51 % ",
                      "anchors = 1.0425,1.6220, 2.9414,2.9967, 4.3599,6.0065, 3.9673,9.1790, "
                      "9.0338,9.5619"),
    (3, 320, 256, 0): (4, " avg IoU = 56.65 % ", "anchors =  45, 41,  94,111, 209,187"),
}
COUNTERS = ("counters_per_class = 13, 3, 10, 1, 1, 0, 0, 10, 0, 0, 0, 0, 0, 1, 3, 1, 21, 28, "
            "6, 15, 0, 0, 7, 5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "
            "0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "
            "0, 0, 0, 0, 0, 0, 0, 0")


def test_glibc_rand_known_values() -> None:
    r = GlibcRandom(1)
    assert [r.rand() for _ in range(3)] == [1804289383, 846930886, 1681692777]
    assert [GlibcRandom(0).rand() for _ in range(1)] == [1804289383]  # srand(0) is srand(1)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's rand() to compare")
@pytest.mark.parametrize("seed", [2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 1764775000])
def test_glibc_rand_is_libcs(seed) -> None:
    libc = ctypes.CDLL(None)
    libc.srand(ctypes.c_uint(seed))
    ours = GlibcRandom(seed)
    assert [ours.rand() for _ in range(500)] == [libc.rand() for _ in range(500)]


@pytest.fixture()
def official_sets(tmp_path, monkeypatch) -> Path:
    """a.data whose train list is the map sets' hard then clean images (absolute paths)."""
    root = SHARED / "official" / "map"
    lines = []
    for name in ("hard", "clean"):
        lines += [line.replace("../..", str(root))
                  for line in (root / "sets" / name / "valid.txt").read_text().splitlines()]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "a.data").write_text("classes=80\ntrain=train.txt\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@needs_shared
@pytest.mark.parametrize("key", list(DARKNET))
def test_darknets_anchors_for_a_seed(official_sets, key, recwarn) -> None:
    clusters, width, height, seed = key
    iterations, iou_line, anchors_line = DARKNET[key]
    r = calc_anchors("a.data", clusters, width, height, seed=seed)
    lines = format_anchors(r).split("\n")
    assert (r.iterations, r.boxes, r.images) == (iterations, 131, 32)
    assert lines[-2:] == [iou_line, anchors_line]
    assert lines[-3] == COUNTERS


@needs_shared
def test_cli_prints_darknets_lines(official_sets, capsys) -> None:
    assert main(["calc_anchors", "a.data", "--num-of-clusters", "6", "--width", "416",
                 "--height", "416", "--seed", "7"]) == 0
    out, err = capsys.readouterr()
    assert out.split("\n") == [
        " num_of_clusters = 6, width = 416, height = 416 ",
        " read labels from 32 images ",
        " loaded boxes: 131 ",
        " srand seed = 7 ",
        " iterations = 3 ",
        COUNTERS,
        " avg IoU = 66.34 % ",
        "anchors =   9, 10,  42, 70, 100, 95, 131,206, 212,342, 332,266",
        "",
    ]
    assert err.splitlines()[-1] == ("warning: 4 label rows with x, y, w or h outside (0, 1] are "
                                    "used as written, as Darknet does")
    assert main(["calc_anchors", "a.data", "--num-of-clusters", "6", "--width", "416",
                 "--height", "416", "--seed", "7", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["seed"] == 7 and len(got["anchors"]) == 6 and got["average_iou"] == \
        pytest.approx(66.34, abs=0.005)


# --- without shared data -----------------------------------------------------------------------

def _dataset(root: Path, labels: dict[str, str], data: str = "classes=2\ntrain=train.txt\n",
             extra_lines: tuple[str, ...] = ()) -> None:
    for name, text in labels.items():
        (root / f"{name}.txt").write_text(text)
    lines = [f"{name}.jpg" for name in labels] + list(extra_lines)
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "a.data").write_text(data)


def test_seed_repeats_and_default_is_the_time(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{i % 2} 0.5 0.5 {0.05 + 0.01 * i:.2f} {0.9 - 0.02 * i:.2f}\n"
                   for i in range(30))
    _dataset(tmp_path, {"a": rows})
    a = calc_anchors("a.data", 4, 416, 416, seed=3)
    b = calc_anchors("a.data", 4, 416, 416, seed=3)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    areas = a.anchors[:, 0] * a.anchors[:, 1]
    assert (np.diff(areas) >= 0).all()  # sorted by area, as Darknet prints them
    monkeypatch.setattr("darkcfg.anchors.time.time", lambda: 1234.9)
    assert calc_anchors("a.data", 4, 416, 416).seed == 1234
    assert a.counters_per_class == [15, 15]


def test_kmeans_with_one_cluster_is_the_mean() -> None:
    boxes = np.array([[10, 20], [30, 40], [50, 60]], np.float32)
    centers, iterations = kmeans(boxes, 1, GlibcRandom(5))
    np.testing.assert_allclose(centers, [[30, 40]])
    assert iterations == 0


def test_bad_labels_are_warned_and_counters_grow(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n4 0.5 0.5 0.4 1.5\n-1 0.5 0.5 0.3 0.3\n",
                        "b": "1 0.5 0.5 0.1 0.1\n"}, extra_lines=("", "missing.jpg"))
    assert main(["calc_anchors", "a.data", "--num-of-clusters", "2", "--width", "100",
                 "--height", "100", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "warning: a.txt line 2: h=1.5 outside (0, 1]; used as written, as Darknet does",
        "warning: a.txt line 3: class -1 is negative; not counted (Darknet writes outside its "
        "counter array)",
        "warning: train.txt line 3 is empty, so names no image: 0 boxes",
        "warning: no label file missing.txt for image missing.jpg: 0 boxes",
        "warning: 2 of 4 label files are missing or unnamed (Darknet lists them in bad.list)",
        "warning: 1 label row with x, y, w or h outside (0, 1] is used as written, as Darknet "
        "does",
    ]
    assert "counters_per_class = 1, 1, 0, 0, 1\n" in out  # grown to class 4, as Darknet
    assert " loaded boxes: 4 " in out


@pytest.mark.parametrize("data, files, message", [
    ("classes=1\n", {}, "cannot read image list data/train.list: no such file (train= of "
                        "a.data)"),
    ("train=t.txt\n", {"t.txt": ""}, "the image list t.txt (train= of a.data) is empty: no "
                                     "boxes to cluster"),
    ("train=t.txt\n", {"t.txt": "a.jpg\n", "a.txt": "0 0.5 0.5 0.1 0.1\n"},
     "3 clusters need at least 3 label boxes; the train list of a.data has 1"),
])
def test_errors_are_one_line(tmp_path, monkeypatch, capsys, data, files, message) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.data").write_text(data)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["calc_anchors", "a.data", "--num-of-clusters", "3", "--width", "416",
                 "--height", "416", "--seed", "1"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"darkcfg: error: {message}"


def test_sizes_and_clusters_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        calc_anchors("a.data", 0, 416, 416)
    with pytest.raises(ValueError, match="width and height must be positive"):
        calc_anchors("a.data", 3, 0, 416)
    assert issubclass(CfgError, ValueError)
