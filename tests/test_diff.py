"""`darkcfg diff`: layers aligned across insertions and deletions, options compared typed, routes
compared through the alignment, weight and BFLOPs deltas that add up to the networks' totals."""

from __future__ import annotations

import json
import re
import warnings

import pytest

import darkcfg
from darkcfg.cli import main
from darkcfg.diff import diff, format_diff, to_dict
from darkcfg.summary import format_table
from oracle import SHARED, needs_shared

CORPUS = SHARED / "darknet-cfgs" if SHARED else None

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"
# A small net with every kind of layer reference: relative and absolute routes, a shortcut, and
# share_index. Indices in the comments are a's.
SECTIONS = [
    "[convolutional]\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=leaky\n",     # 0
    "[convolutional]\nfilters=8\nsize=1\nactivation=leaky\n",                      # 1
    "[shortcut]\nfrom=-2\nactivation=linear\n",                                    # 2 (0)
    "[maxpool]\nsize=2\nstride=2\n",                                               # 3
    "[convolutional]\nfilters=16\nsize=3\npad=1\nactivation=leaky\n",              # 4
    "[route]\nlayers=3\n",                                                         # 5 (3, absolute)
    "[route]\nlayers=-1,-2\n",                                                     # 6 (5, 4)
    "[convolutional]\nfilters=16\nsize=1\nactivation=leaky\n",                     # 7
    "[route]\nlayers=-4\n",                                                        # 8 (4)
    "[shortcut]\nfrom=-2\nactivation=linear\n",                                    # 9 (7)
    "[convolutional]\nfilters=16\nsize=1\nactivation=linear\n",                    # 10
    "[convolutional]\nfilters=16\nsize=1\nshare_index=-1\nactivation=linear\n",    # 11 (10)
]
EXTRA = "[convolutional]\nfilters=8\nsize=1\nactivation=linear\n"  # keeps a 16x16x8 map as it is


def cfg(sections: list[str], net: str = NET) -> str:
    return net + "\n" + "\n".join(sections)


def parse(text: str) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(text)


def check_sums(d) -> None:
    """What every diff must satisfy: each layer of a and b once, and the per-layer deltas add up
    to the difference of the networks' own totals."""
    a, b = d.a, d.b
    paired_a = [i for i, _ in d.pairs]
    paired_b = [j for _, j in d.pairs]
    deleted = [l.a_index for l in d.layers if l.kind == "deleted"]
    inserted = [l.b_index for l in d.layers if l.kind == "inserted"]
    assert sorted(paired_a + deleted) == list(range(len(a)))
    assert sorted(paired_b + inserted) == list(range(len(b)))
    assert paired_a == sorted(paired_a) and paired_b == sorted(paired_b)  # order kept
    assert sum(l.weights_delta for l in d.layers) == b.weight_count - a.weight_count
    assert sum(l.bflops_delta for l in d.layers) == pytest.approx(
        sum(l.bflops for l in b) - sum(l.bflops for l in a), abs=1e-9)
    for l in d.layers:
        if l.kind == "changed":
            assert l.a.type == l.b.type


def test_same_cfg_has_no_differences() -> None:
    a = parse(cfg(SECTIONS))
    d = diff(a, parse(cfg(SECTIONS)))
    assert not d and d.layers == () and d.net == ()
    assert d.pairs == tuple((i, i) for i in range(len(a)))
    assert "no differences" in format_diff(d)


def test_inserted_layer_keeps_the_rest_paired() -> None:
    """A layer inserted after layer 3: routes before it (absolute 3) and after it (relative) still
    read the same layers, share_index=-1 still shares the same layer: only the insertion shows."""
    a = parse(cfg(SECTIONS))
    b = parse(cfg(SECTIONS[:4] + [EXTRA] + SECTIONS[4:]))
    d = diff(a, b)
    check_sums(d)
    assert [(l.kind, l.a_index, l.b_index, l.type) for l in d.layers] == \
        [("inserted", None, 4, "convolutional")]
    assert d.pairs == tuple((i, i if i < 4 else i + 1) for i in range(len(a)))
    assert d.layers[0].weights_delta == 8 * 8 + 8  # 1x1 conv on 8 channels, with biases
    text = format_diff(d, "a.cfg", "b.cfg")
    assert re.search(r"^\+\s+\.\s+4\s+conv\s+8 1 x 1/1, 16 x 16 x 8 -> 16 x 16 x 8", text,
                     re.M), text
    assert "layers: 12 -> 13 (+1): 0 changed, 0 deleted, 1 inserted" in text
    # and the other way round it is a deletion, with b's numbering
    back = diff(b, a)
    check_sums(back)
    assert [(l.kind, l.a_index, l.b_index) for l in back.layers] == [("deleted", 4, None)]
    assert re.search(r"^-\s+4\s+\.\s+conv", format_diff(back), re.M)


def test_insertion_that_changes_what_a_route_reads_is_shown() -> None:
    """`layers=-2` in layer 5 reads layer 3; with a layer inserted before it, it reads the new
    layer: that is a change, shown in both numberings."""
    sections = SECTIONS.copy()
    sections[5] = "[route]\nlayers=-2\n"
    a = parse(cfg(sections))
    b = parse(cfg(sections[:4] + [EXTRA] + sections[4:]))
    d = diff(a, b)
    check_sums(d)
    assert [(l.kind, l.a_index, l.b_index) for l in d.layers] == [("inserted", None, 4),
                                                                   ("changed", 5, 6)]
    (change,) = d.layers[1].options
    assert (change.name, change.a, change.b, change.b_in_a) == ("inputs", (3,), (4,), (None,))
    assert "inputs: 3 -> 4 (a's new)" in format_diff(d)
    # an absolute index past the insertion now names another layer: also shown
    sections = sections[:9]
    sections[8] = "[route]\nlayers=4\n"
    a = parse(cfg(sections))
    b = parse(cfg(sections[:4] + [EXTRA] + sections[4:]))
    d = diff(a, b)
    route = [l for l in d.layers if l.a_index == 8]
    assert route and route[0].options[0].b_in_a == (None,)  # b's layer 4 is the new one
    assert route[0].b.out_shape.c == 8 and route[0].a.out_shape.c == 16


def test_changed_options_with_shape_weights_and_bflops() -> None:
    sections = SECTIONS.copy()
    sections[7] = "[convolutional]\nfilters=32\nsize=1\nactivation=mish\n"
    sections[9] = "[shortcut]\nfrom=-5\nactivation=linear\n"  # a's 9 read 7, b's 9 reads 4
    sections[10] = "[convolutional]\nfilters=16\nsize=1\nstride=2\nactivation=linear\n"
    sections[11] = sections[10] + "share_index=-1\n"
    a, b = parse(cfg(SECTIONS)), parse(cfg(sections))
    d = diff(a, b)
    check_sums(d)
    by_index = {l.a_index: l for l in d.layers}
    assert [l.kind for l in d.layers] == ["changed"] * len(d.layers)
    conv = by_index[7]
    assert {c.name: (c.a, c.b) for c in conv.options} == \
        {"filters": (16, 32), "activation": ("leaky", "mish")}
    assert conv.weights_delta == (32 - 16) * (24 + 1)  # 1x1 over the route's 24 channels, biases
    assert conv.bflops_delta == pytest.approx(2 * (32 - 16) * 24 * 16 * 16 / 1e9, rel=1e-6)
    assert (conv.a.out_shape.c, conv.b.out_shape.c) == (16, 32)
    assert 8 not in by_index  # the route reads 4 in both, same shapes: not listed
    shortcut = by_index[9]
    assert [(c.name, c.a, c.b, c.b_in_a) for c in shortcut.options] == \
        [("inputs", (8, 7), (8, 4), (8, 4))]
    # stride_x and stride_y changing alike are one `stride` change, as the cfg writes it
    assert [(c.name, c.a, c.b) for c in by_index[10].options] == [("stride", 1, 2)]
    text = format_diff(d)
    assert "filters: 16 -> 32, activation: leaky -> mish" in text
    assert "weights: 400 -> 800 (+400)" in text
    assert "output: 16 x 16 x 16 -> 8 x 8 x 16" in text


def test_net_changes() -> None:
    a = parse(cfg(SECTIONS))
    b = parse(cfg(SECTIONS, net="[net]\nwidth=64\nheight=32\nchannels=3\nletter_box=1\n"))
    d = diff(a, b)
    check_sums(d)
    assert [(c.name, c.a, c.b) for c in d.net] == [("width", 32, 64), ("letter_box", 0, 1)]
    assert all(not l.options for l in d.layers)  # only shapes and BFLOPs follow the input
    assert len(d.layers) == len(a)
    text = format_diff(d)
    assert text.splitlines()[2] == "[net] width: 32 -> 64"
    assert "--width W --height H" in text
    # at one size, only letter_box differs
    same_size = diff(a, darkcfg.parse(b, width=32, height=32))
    assert [c.name for c in same_size.net] == ["letter_box"] and not same_size.layers


@needs_shared
def test_cosmetic_differences_are_no_differences() -> None:
    """Whitespace, comment lines, blank lines, header aliases, key order and number spelling."""
    path = CORPUS / "yolov4-tiny.cfg"
    text = path.read_text()
    out = []
    aliases = {"[convolutional]": "[conv]", "[maxpool]": "[max]", "[net]": "[network]"}
    for block in re.split(r"\n(?=\[)", text):
        lines = block.splitlines()
        header = lines[0].strip()
        options = [l for l in lines[1:] if "=" in l and not l.startswith("#")]
        keys = [o.split("=")[0].strip() for o in options]
        assert len(keys) == len(set(keys))  # (else reordering would change which one wins)
        out.append(f"# {header} section\n\n  {aliases.get(header, header)}  ")
        for option in reversed(options):
            key, value = (s.strip() for s in option.split("=", 1))
            if re.fullmatch(r"\d*\.\d+", value):
                value = repr(float(value)) + "0"  # .7 -> 0.70, 1.05 -> 1.050
            out.append(f"\t{key} =  {value} ")
        out.append("")
    edited = "\n".join(out)
    assert edited != text and "[conv]" in edited and "0.70" in edited
    a, b = parse(str(path)), parse(edited)
    d = diff(a, b)
    assert not d, format_diff(d)
    # and one real change in that text is found
    d = diff(a, parse(edited.replace("activation =  leaky", "activation =  mish", 1)))
    assert [(l.a_index, l.options[0].b) for l in d.layers] == [(0, "mish")]


@needs_shared
def test_custom_classes_edit() -> None:
    """The usual edit for training on 2 classes: filters=21 before each [yolo], classes=2."""
    path = CORPUS / "yolov4-tiny.cfg"
    text = path.read_text()
    assert text.count("filters=255") == 2 and text.count("classes=80") == 2
    a = parse(str(path))
    b = parse(text.replace("filters=255", "filters=21").replace("classes=80", "classes=2"))
    d = diff(a, b)
    check_sums(d)
    # nothing reads the heads' convs but the heads: nothing else changes
    assert [(l.a_index, l.b_index, l.type) for l in d.layers] == [
        (29, 29, "convolutional"), (30, 30, "yolo"), (36, 36, "convolutional"), (37, 37, "yolo")]
    assert {c.name for c in d.layers[1].options} == {"classes"}
    # 1x1 convs with biases over 512 and 256 input channels
    assert d.layers[0].weights_delta == (21 - 255) * (512 + 1)
    assert d.layers[2].weights_delta == (21 - 255) * (256 + 1)
    assert d.weights_delta == (21 - 255) * (512 + 1 + 256 + 1)


@needs_shared
def test_yolov4_tiny_against_yolov3_tiny() -> None:
    a, b = parse(str(CORPUS / "yolov4-tiny.cfg")), parse(str(CORPUS / "yolov3-tiny.cfg"))
    d = diff(a, b)
    check_sums(d)
    assert d.count("deleted") and d.count("inserted") and d.count("changed")
    text = format_diff(d)
    # the totals are each network's own, as `darkcfg build` prints them
    total_a = format_table(a).splitlines()[-1].split()[-1]
    total_b = format_table(b).splitlines()[-1].split()[-1]
    assert f"Total BFLOPS: {total_a} -> {total_b}" in text
    assert f"weights: {a.weight_count:,} -> {b.weight_count:,}" in text
    assert f"layers: {len(a)} -> {len(b)} (-14)" in text
    # the two [yolo] heads pair up; yolov4-tiny's CSP routes (groups=2) have no counterpart
    assert {(i, j) for i, j in d.pairs if a[i].type == "yolo"} == {(30, 16), (37, 23)}
    grouped = [l.index for l in a if l.type == "route" and l.options.groups == 2]
    assert len(grouped) == 3
    assert set(grouped) <= {l.a_index for l in d.layers if l.kind == "deleted"}


def test_json_and_cli(tmp_path, capsys) -> None:
    a_path, b_path = tmp_path / "a.cfg", tmp_path / "b.cfg"
    a_path.write_text(cfg(SECTIONS))
    b_path.write_text(cfg(SECTIONS[:4] + [EXTRA] + SECTIONS[4:11]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        code = main(["diff", str(a_path), str(b_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    a, b = parse(str(a_path)), parse(str(b_path))
    assert data["same"] is False
    assert (data["a"]["layers"], data["b"]["layers"]) == (len(a), len(b))
    assert (data["a"]["weights"], data["b"]["weights"]) == (a.weight_count, b.weight_count)
    assert data["b"]["total_bflops"] == b.total_bflops
    assert data["weights_delta"] == b.weight_count - a.weight_count
    kinds = [(l["change"], l["a"] and l["a"]["index"], l["b"] and l["b"]["index"])
             for l in data["layers"]]
    assert kinds == [("inserted", None, 4), ("deleted", 11, None)]
    assert data == json.loads(json.dumps(to_dict(diff(a, b))))
    deleted = next(l for l in data["layers"] if l["change"] == "deleted")
    assert deleted["a"]["line"] == a[11].loc.line == a_path.read_text().splitlines().index(
        "share_index=-1") - 2
    assert deleted["a"]["weights"] == 0 and deleted["weights_delta"] == 0  # shares layer 10's
    # text, identical files (exit 0 too), --width/--height for both, errors
    assert main(["diff", str(a_path), str(a_path)]) == 0
    out, _ = capsys.readouterr()
    assert "no differences" in out
    assert main(["diff", str(a_path), str(a_path), "--width", "64", "--height", "64"]) == 0
    assert "no differences" in capsys.readouterr()[0]
    assert main(["diff", str(a_path), str(tmp_path / "missing.cfg")]) == 1
    assert "darkcfg: error: cannot read cfg file" in capsys.readouterr()[1]


def test_index_fields_cover_every_section_with_index_options() -> None:
    """diff.py's tables of option fields holding layer indices name every section type whose
    cfg options are layer indices (the registry's index_keys), so none is compared unmapped."""
    from darkcfg.diff import _INDEX_FIELDS, _INPUT_FIELDS
    from darkcfg.graph import _TYPES

    with_indices = {name for name, st in _TYPES.items() if getattr(st, "index_keys", None)}
    if not hasattr(next(iter(_TYPES.values())), "index_keys"):
        pytest.fail("SectionType.index_keys is gone: update this test")
    assert with_indices == set(_INDEX_FIELDS) | set(_INPUT_FIELDS)
