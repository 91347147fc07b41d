"""Detection heads and loss-only layers: [region] (incl. yolo9000's softmax tree), [detection],
[Gaussian_yolo], [cost], [contrastive]; the tree file reader and its path resolution."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.layers.heads import Region, softmax_tree, tree_group_sizes
from darkcfg.tree import find_data_file, parse_tree, read_tree
from oracle import SHARED, needs_shared

CFGS = SHARED / "darknet-cfgs" if SHARED else Path("/nonexistent")
NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"


def quiet_parse(src, **kw) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(src, **kw)


def error(src, **kw) -> darkcfg.CfgError:
    with pytest.raises(darkcfg.CfgError) as info:
        quiet_parse(src, **kw)
    return info.value


def head_cfg(head: str, filters: int, net: str = NET) -> str:
    return (net + "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
            f"[convolutional]\nfilters={filters}\nsize=1\nactivation=linear\n" + head)


def synthetic_tree_text(n: int, roots: int = 4, fanout: int = 3) -> str:
    """`roots` root nodes, then runs of `fanout` siblings under nodes 0, 1, 2, ..."""
    lines = [f"r{i} -1" for i in range(roots)]
    lines += [f"n{i} {(i - roots) // fanout}" for i in range(roots, n)]
    return "\r\n".join(lines) + "\r\n"


def group_reference(x: torch.Tensor, sizes) -> torch.Tensor:
    """Darknet's softmax_tree loop: one softmax per group, walking the groups by size."""
    out, start = [], 0
    for size in sizes:
        out.append(torch.softmax(x[..., start:start + size], -1))
        start += size
    return torch.cat(out, -1)


# --- tree files ---------------------------------------------------------------------------------

def test_tree_arrays_are_darknets() -> None:
    text = "a -1\nb -1\nc 0\nd 0\ne 1\nf 1\ng 1\nh 4\n"
    t = parse_tree(text)
    assert t.n == 8 and t.groups == 4
    assert t.names == tuple("abcdefgh")
    assert t.parent == (-1, -1, 0, 0, 1, 1, 1, 4)
    assert t.group == (0, 0, 1, 1, 2, 2, 2, 3)
    assert t.group_offset == (0, 2, 4, 7) and t.group_size == (2, 2, 3, 1)
    assert t.child == (1, 2, -1, -1, 3, -1, -1, -1)
    assert t.leaf == (False, False, True, True, False, True, True, True)


def test_tree_line_rules() -> None:
    # CRLF, a missing final newline, a lone name (= root, sscanf leaves -1), "3x" read as 3.
    t = parse_tree("a\r\nb -1\r\nc 1\r\nd 1x")
    assert t.parent == (-1, -1, 1, 1) and t.names == ("a", "b", "c", "d")
    assert t.group_size == (2, 2)


def test_tree_errors_name_file_and_line() -> None:
    cases = {
        "a -1\n\nb 0\n": "empty line: Darknet would read it as an extra root node and shift every "
                         "later class (at t.tree line 2)",
        "a -1\nb 5\n": "parent 5 of node 'b' (node 1) must be -1 or an earlier node's index "
                       "(at t.tree line 2)",
        "a -1\nb x\n": "parent 'x' of node 'b' is not an integer (at t.tree line 2)",
        "a -1\nb 0\0\0\nc 0\n": "the tree file contains NUL bytes (a corrupted copy?): 2 of them, "
                                "the first on line 2 (at t.tree line 2)",
    }
    for text, message in cases.items():
        with pytest.raises(darkcfg.CfgError) as info:
            parse_tree(text, "t.tree")
        assert str(info.value) == message


def test_find_data_file_order(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "cfg" / "x.cfg"
    (tmp_path / "cfg" / "data").mkdir(parents=True)
    (tmp_path / "work" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    tried = [str(tmp_path / "cfg" / "data" / "9k.tree"), str(tmp_path / "cfg" / "9k.tree"),
             str(tmp_path / "data" / "9k.tree"), "data/9k.tree"]
    assert find_data_file("data/9k.tree", str(cfg)) == (None, tried)
    (tmp_path / "work" / "data" / "9k.tree").write_text("a -1\n")
    assert find_data_file("data/9k.tree", str(cfg))[0] == Path("data/9k.tree")
    (tmp_path / "data").mkdir()  # a Darknet checkout: cfg/x.cfg names data/9k.tree
    (tmp_path / "data" / "9k.tree").write_text("a -1\n")
    assert find_data_file("data/9k.tree", str(cfg))[0] == tmp_path / "data" / "9k.tree"
    (tmp_path / "cfg" / "9k.tree").write_text("a -1\n")
    assert find_data_file("data/9k.tree", str(cfg))[0] == tmp_path / "cfg" / "9k.tree"
    (tmp_path / "cfg" / "data" / "9k.tree").write_text("a -1\n")
    assert find_data_file("data/9k.tree", str(cfg))[0] == tmp_path / "cfg" / "data" / "9k.tree"
    # cfg text without a file: only the current directory
    assert find_data_file("data/9k.tree", None) == (Path("data/9k.tree"), ["data/9k.tree"])


REGION_TREE = ("[region]\nanchors=1,1, 2,2\nclasses=6\ncoords=4\nnum=2\nsoftmax=1\n"
               "tree=data/t.tree\n")


def test_missing_tree_file_message(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "net.cfg"
    cfg.write_text(head_cfg(REGION_TREE, 2 * 11))
    err = error(cfg)
    assert err.msg == (f"tree=data/t.tree: tree file not found (tried {tmp_path}/data/t.tree, "
                       f"{tmp_path}/t.tree, {tmp_path.parent}/data/t.tree, data/t.tree)")
    assert (err.path, err.lineno, err.section, err.layer_index) == (str(cfg), 21, "region", 2)


def test_tree_content_error_is_located_at_the_key(tmp_path) -> None:
    cfg = tmp_path / "net.cfg"
    cfg.write_text(head_cfg(REGION_TREE, 2 * 11))
    (tmp_path / "t.tree").write_text("a -1\nb 7\n")
    err = error(cfg)
    assert err.msg == ("tree=data/t.tree: parent 7 of node 'b' (node 1) must be -1 or an earlier "
                       "node's index (at t.tree line 2)")
    assert err.lineno == 21


def test_tree_size_against_classes(tmp_path) -> None:
    cfg = tmp_path / "net.cfg"
    cfg.write_text(head_cfg(REGION_TREE, 2 * 11))
    (tmp_path / "t.tree").write_text(synthetic_tree_text(7, roots=2, fanout=2))
    msg = error(cfg).msg
    assert "the tree has 7 nodes but each anchor has only 6 entries from entry 5 on" in msg
    (tmp_path / "t.tree").write_text(synthetic_tree_text(5, roots=2, fanout=2))
    with pytest.warns(darkcfg.CfgWarning, match="the tree has 5 nodes but classes=6"):
        net = darkcfg.parse(cfg)
    assert net[2].options.tree.n == 5


# --- softmax_tree ---------------------------------------------------------------------------------

def test_softmax_tree_matches_darknets_group_loop() -> None:
    tree = parse_tree(synthetic_tree_text(23, roots=3, fanout=4))
    torch.manual_seed(0)
    x = torch.randn(2, 23, 3, 5) * 10
    ref = group_reference(x.movedim(1, -1), tree.group_size).movedim(-1, 1)
    out = softmax_tree(x, tree)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.equal(softmax_tree(x, tree_group_sizes(tree)), out)
    assert torch.allclose(softmax_tree(x.movedim(1, 3), tree, dim=3).movedim(3, 1), out, atol=0)
    big = torch.full((1, 23), 1000.0)  # exp overflows without the per-group max
    assert torch.isfinite(softmax_tree(big, tree)).all()
    with pytest.raises(ValueError, match="dimension 1 has 22 values, the tree has 23 nodes"):
        softmax_tree(x[:, :22], tree)


# --- [region] -----------------------------------------------------------------------------------

def region_model(head: str, filters: int, **kw) -> darkcfg.DarknetModel:
    return darkcfg.build(quiet_parse(head_cfg(head, filters), **kw), out_indices=[1, 2])


REGION = "[region]\nanchors=1,1, 2,2, 3,3\nclasses=3\ncoords=4\nnum=3\nsoftmax=1\n"


def test_region_activations_and_layout() -> None:
    model = region_model(REGION, 24)
    torch.manual_seed(1)
    with torch.no_grad():
        pre, out = model(torch.randn(1, 3, 32, 32))
    y, p = out.reshape(1, 3, 8, 16, 16), pre.reshape(1, 3, 8, 16, 16)
    assert torch.equal(y[:, :, :4], p[:, :, :4])
    assert torch.allclose(y[:, :, 4], torch.sigmoid(p[:, :, 4]))
    assert torch.allclose(y[:, :, 5:], torch.softmax(p[:, :, 5:], 2))


def test_region_darknet_order_is_flatten_and_round_trips() -> None:
    model = region_model(REGION, 24, width=48)
    region: Region = model.layers[2]
    y = torch.randn(2, 24, 16, 24)
    d = region.darknet_order(y)
    assert d.shape == (2, 16 * 24, 3, 8)
    # Darknet's flatten(x, size=h*w, layers=c, forward=1): out[i*c + k] = in[k*size + i]
    x = y[1].numpy().reshape(-1)
    size, layers = 16 * 24, 24
    expect = np.empty_like(x)
    for k in range(layers):
        expect[np.arange(size) * layers + k] = x[k * size:(k + 1) * size]
    assert np.array_equal(d[1].numpy().reshape(-1), expect)
    assert torch.equal(region.from_darknet_order(d, 16, 24), y)


def test_region_options_for_decoding() -> None:
    with pytest.warns(darkcfg.CfgWarning, match="anchors= has 3 values but num=2 needs 4; "
                                                "Darknet uses 0.5 for the missing ones"):
        net = darkcfg.parse(head_cfg("[region]\nanchors=1.5,2.5, 3\nclasses=2\nnum=2\n"
                                     "bias_match=1\nrescore=1\nmap=data/x.map\n", 14))
    o = net[2].options
    assert o.anchors == ((1.5, 2.5), (3.0, 0.5))
    assert (o.coords, o.softmax, o.bias_match, o.rescore, o.sqrt, o.tree, o.map_file) == \
        (4, False, True, True, False, None, "data/x.map")
    assert net.output_layers == [2]


def test_region_coords5_warns() -> None:
    with pytest.warns(darkcfg.CfgWarning, match="coords=5: Darknet's .region. still applies the "
                                                "objectness logistic to entry 4"):
        darkcfg.parse(head_cfg("[region]\nclasses=3\ncoords=5\nnum=2\nsoftmax=1\n", 18))


def test_region_errors() -> None:
    assert error(head_cfg(REGION, 25)).msg == \
        "[region] with num=3, coords=4 and classes=3 needs 24 input channels, the previous " \
        "layer gives 25"
    assert error(head_cfg("[region]\nclasses=3\ncoords=2\nnum=1\n", 6)).msg.startswith(
        "coords=2 is not supported: Darknet's [region] hard-codes objectness at entry 4")


# --- yolo9000 -----------------------------------------------------------------------------------

def yolo9000_in(tmp_path: Path) -> Path:
    """yolo9000.cfg beside a synthetic, well-formed 9418-node 9k.tree."""
    shutil.copy(CFGS / "yolo9000.cfg", tmp_path / "yolo9000.cfg")
    (tmp_path / "9k.tree").write_text(synthetic_tree_text(9418, roots=10, fanout=3))
    return tmp_path / "yolo9000.cfg"


@needs_shared
def test_yolo9000_tree_softmax_per_group(tmp_path) -> None:
    cfg = yolo9000_in(tmp_path)
    net = quiet_parse(cfg, width=64, height=96)
    o = net[-1].options
    assert (o.classes, o.num, o.tree.n, o.tree.groups, o.map_file) == \
        (9418, 3, 9418, 1 + 9408 // 3, "data/coco9k.map")
    model = darkcfg.build(net, out_indices=[-2, -1])
    torch.manual_seed(2)
    with torch.no_grad():
        pre, out = model(torch.rand(2, 3, 96, 64))
    y, p = out.reshape(2, 3, 9423, 3, 2), pre.reshape(2, 3, 9423, 3, 2)
    assert torch.equal(y[:, :, :4], p[:, :, :4])
    assert torch.allclose(y[:, :, 4], torch.sigmoid(p[:, :, 4]))
    ref = group_reference(p[:, :, 5:].movedim(2, -1), o.tree.group_size).movedim(-1, 2)
    assert torch.allclose(y[:, :, 5:], ref, atol=1e-6)
    sums = torch.zeros(2, 3, o.tree.groups, 3, 2).double().index_add_(2, torch.tensor(o.tree.group),
                                                             y[:, :, 5:].double())
    assert torch.allclose(sums, torch.ones(()).double(), atol=1e-5)
    # batch 2 = two batch-1 runs
    with torch.no_grad():
        single = model(torch.rand(1, 3, 96, 64))  # different input: must not leak state
        x = torch.rand(2, 3, 96, 64)
        both = model(x)[1]
        ones = torch.cat([model(x[i:i + 1])[1] for i in range(2)])
    assert single[1].shape == (1, 28269, 3, 2)
    assert torch.allclose(both, ones, atol=1e-6)


@needs_shared
def test_shared_9k_tree(tmp_path) -> None:
    path = CFGS / "9k.tree"
    data = path.read_bytes()
    if b"\0" in data:
        # The copy in ../shared has 512-byte blocks of zeros (704 of its 9418 nodes are lost).
        err = error(CFGS / "yolo9000.cfg", width=64, height=64)
        assert err.msg.startswith("tree=data/9k.tree: the tree file contains NUL bytes")
        assert (err.lineno, err.section) == (217, "region")
    else:
        tree = read_tree(path)
        assert tree.n == 9418
        quiet_parse(CFGS / "yolo9000.cfg", width=64, height=64)


# --- [detection] --------------------------------------------------------------------------------

DETECTION = ("[connected]\noutput=52\nactivation=linear\n[detection]\nclasses=3\ncoords=4\n"
             "rescore=1\nside=2\nnum=2\nsoftmax={softmax}\nsqrt=1\n")


@pytest.mark.parametrize("softmax", [0, 1])
def test_detection(softmax: int) -> None:
    net = quiet_parse(NET + DETECTION.format(softmax=softmax))
    o = net[1].options
    assert (o.classes, o.coords, o.num, o.side, o.softmax, o.sqrt, o.rescore) == \
        (3, 4, 2, 2, bool(softmax), True, True)
    assert net[1].out_shape == darkcfg.Shape(52, 1, 1) and net.output_layers == [1]
    model = darkcfg.build(net, out_indices=[0, 1])
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pre, out = model(x)
        ones = torch.cat([model(x[i:i + 1])[1] for i in range(3)])
    assert out.shape == (3, 52, 1, 1) and torch.allclose(out, ones, atol=1e-6)
    cls, rest = out.flatten(1)[:, :12], out.flatten(1)[:, 12:]
    assert torch.equal(rest, pre.flatten(1)[:, 12:])
    expect = torch.softmax(pre.flatten(1)[:, :12].reshape(3, 4, 3), -1).reshape(3, 12) \
        if softmax else pre.flatten(1)[:, :12]
    assert torch.allclose(cls, expect)


def test_detection_size_error() -> None:
    err = error(NET + DETECTION.format(softmax=0).replace("side=2", "side=3"))
    assert err.msg == "[detection] with side=3, num=2, coords=4 and classes=3 needs 117 " \
                      "inputs, the previous layer gives 52"


# --- [Gaussian_yolo] ----------------------------------------------------------------------------

GAUSSIAN = ("[Gaussian_yolo]\nmask=1,2\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n"
            "scale_x_y=1.2\nyolo_point=left_top\n")


def test_gaussian_yolo() -> None:
    net = quiet_parse(head_cfg(GAUSSIAN, 22))
    o = net[2].options
    assert (o.mask, o.anchors, o.scale_x_y, o.yolo_point) == \
        ((1, 2), ((10, 14), (23, 27), (37, 58)), 1.2, "left_top")
    model = darkcfg.build(net, out_indices=[1, 2])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pre, out = model(x)
        ones = torch.cat([model(x[i:i + 1])[1] for i in range(2)])
    assert torch.allclose(out, ones, atol=1e-6)
    y, p = out.reshape(2, 2, 11, 16, 16), pre.reshape(2, 2, 11, 16, 16)
    s = torch.sigmoid(p)
    for e in (0, 2):
        assert torch.allclose(y[:, :, e], s[:, :, e] * 1.2 - 0.1, atol=1e-6)
    for e in (1, 3, 5, 7, 8, 9, 10):
        assert torch.allclose(y[:, :, e], s[:, :, e])
    for e in (4, 6):
        assert torch.equal(y[:, :, e], p[:, :, e])


def test_gaussian_yolo_errors() -> None:
    assert error(head_cfg(GAUSSIAN.replace("mask=1,2", "mask=1,3"), 22)).msg == \
        "mask entry 3 is outside the num=3 anchors"
    assert error(head_cfg(GAUSSIAN, 23)).msg == \
        "[Gaussian_yolo] with 2 anchors and classes=2 needs 22 input channels, the previous " \
        "layer gives 23"


def test_anchors_beyond_num_are_kept_for_masks_that_name_them() -> None:
    # cspx-p7-mish.cfg lists 20 anchors with num=16 and a head with mask=16,17,18,19: Darknet
    # writes them past its anchor array and reads them back from there.
    text = head_cfg(GAUSSIAN.replace("37,58", "37,58, 1,2").replace("mask=1,2", "mask=1,3"), 22)
    with pytest.warns(darkcfg.CfgWarning, match="anchors= has 8 values, more than the 6 of num=3: "
                      "Darknet writes them past its anchor array; darkcfg keeps them"):
        net = darkcfg.parse(text)
    o = net[-1].options
    assert o.mask == (1, 3) and o.anchors[3] == (1.0, 2.0)
    with pytest.warns(darkcfg.CfgWarning, match="anchors= has 4 values but num=3 needs 6; "
                      "Darknet uses 0.5 for the missing ones"):
        net = darkcfg.parse(head_cfg(GAUSSIAN.replace(", 37,58", ""), 22))
    assert net[-1].options.anchors[2] == (0.5, 0.5)


# --- [cost], [contrastive] ----------------------------------------------------------------------

def test_cost_outputs_zeros_and_is_not_the_network_output() -> None:
    net = quiet_parse(NET + "[connected]\noutput=10\n[softmax]\n[cost]\ntype=masked\n")
    assert net.output_layers == [1] and net[2].options.cost_type == "masked"
    model = darkcfg.build(net, out_indices=[1, 2])
    with torch.no_grad():
        soft, cost = model(torch.randn(2, 3, 32, 32))
    assert cost.shape == soft.shape and not cost.any()
    with pytest.warns(darkcfg.CfgWarning, match="cost type=l2 is unknown; Darknet uses sse"):
        darkcfg.parse(NET + "[cost]\ntype=l2\n")


CONTRASTIVE = ("[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n"
               "embedding_layer=-3\n[route]\nlayers=-4\n[contrastive]\nclasses=2\nyolo_layer={}\n")


def contrastive_cfg(yolo_layer: str) -> str:
    return (NET + "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"
            "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n[route]\nlayers=-2\n"
            "[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
            + CONTRASTIVE.format(yolo_layer))


def test_contrastive_outputs_zeros() -> None:
    net = quiet_parse(contrastive_cfg("-2"))
    o = net[6].options
    assert (o.yolo_layer, o.classes, o.embedding_size) == (4, 2, 2)
    assert net[6].out_shape == darkcfg.Shape(6, 32, 32) and net.output_layers == [4]
    model = darkcfg.build(net, out_indices=[6])
    with torch.no_grad():
        (out,) = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 6, 32, 32) and not out.any()


def test_contrastive_errors() -> None:
    assert error(contrastive_cfg("-3")).msg == \
        "yolo_layer=-3 points to layer 3, a [convolutional], not a [yolo] layer"
    assert error(contrastive_cfg("0")).msg == \
        "[contrastive] needs yolo_layer= pointing to a [yolo] layer (Darknet crashes without one)"
    assert error(contrastive_cfg("9")).msg == \
        "yolo_layer index 9 points to layer 9, which is not before this layer"


# --- corpus -------------------------------------------------------------------------------------

HEADS = ("[region]", "[detection]", "[Gaussian_yolo]", "[contrastive]")
CORPUS_HEADS = sorted(p for p in CFGS.rglob("*.cfg")
                      if any(line.strip() in HEADS for line in p.read_text("latin-1").splitlines())
                      and p.name != "yolo9000.cfg"  # its shared 9k.tree is corrupt: test_shared_9k_tree
                      ) if SHARED else []


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("path", CORPUS_HEADS, ids=lambda p: p.relative_to(CFGS).as_posix())
def test_corpus_heads_build_and_run(path: Path) -> None:
    native = quiet_parse(path)
    small = native
    if native.net.width > 128:
        try:
            small = quiet_parse(path, width=128, height=128)
        except darkcfg.CfgError:
            pass  # e.g. [crop] larger than 128: run at the cfg's own size
    model = darkcfg.build(small)
    s = small.net.input_shape
    with torch.no_grad():
        outs = model(torch.rand(1, s.c, s.h, s.w))
    assert len(outs) == len(small.output_layers) >= 1
    for i, out in zip(model.out_indices, outs):
        spec = small[i]
        assert torch.isfinite(out).all()
        if spec.type == "region":
            o = spec.options
            y = out.reshape(1, o.num, o.entries, -1)
            assert ((y[:, :, 4] > 0) & (y[:, :, 4] < 1)).all()
            if o.softmax:
                assert torch.allclose(y[:, :, 5:].sum(2), torch.ones(()), atol=1e-5)
        elif spec.type == "Gaussian_yolo":
            y = out.reshape(1, len(spec.options.mask), spec.options.entries, -1)
            assert ((y[:, :, 8:] > 0) & (y[:, :, 8:] < 1)).all()


# --- [softmax] tree= (darknet9000) ----------------------------------------------------------------

def test_softmax_layer_with_a_tree(tmp_path) -> None:
    (tmp_path / "t.tree").write_text(synthetic_tree_text(10, roots=4, fanout=3))
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=4\nheight=4\nchannels=3\n[convolutional]\nfilters=10\nsize=4\n"
                   "activation=linear\n[softmax]\ngroups=5\ntemperature=2\ntree=t.tree\n")
    model = darkcfg.build(cfg)
    assert model.network[1].options.tree.n == 10
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        logits = model.layers[0](x)
        out = model.layers[1](logits)
    flat, y = logits.reshape(2, 10) / 2, out.reshape(2, 10)
    # Darknet ignores groups= with a tree: one softmax per sibling group, at the temperature.
    for lo, hi in ((0, 4), (4, 7), (7, 10)):
        assert torch.allclose(y[:, lo:hi], torch.softmax(flat[:, lo:hi], 1), atol=1e-6)


def test_softmax_tree_must_cover_the_inputs(tmp_path) -> None:
    (tmp_path / "t.tree").write_text(synthetic_tree_text(10, roots=4, fanout=3))
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=4\nheight=4\nchannels=3\n[convolutional]\nfilters=12\nsize=4\n"
                   "[softmax]\ntree=t.tree\n")
    assert str(error(cfg)) == ("tree=t.tree has 10 nodes, the layer has 12 inputs "
                               "(at net.cfg line 9, in [softmax] #1)")
