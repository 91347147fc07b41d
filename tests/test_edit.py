"""Editing API and darkcfg.dump: text round trips, index fix-ups, atomic edits, batches."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import SHARED, needs_shared
from test_corpus import RUNNABLE, _id

import darkcfg
from darkcfg.graph import Context

pytestmark = pytest.mark.filterwarnings("ignore::darkcfg.CfgWarning")

REPO = Path(__file__).resolve().parents[1]
CORPUS = SHARED / "darknet-cfgs" if SHARED else Path("/nonexistent")


def graph(net: darkcfg.Network) -> list[tuple]:
    """Everything that makes the network what it is, without text positions."""
    n = net.net
    head = (n.width, n.height, n.channels, n.inputs, n.batch, n.letter_box)
    return [head] + [(l.index, l.type, l.inputs, l.in_shape, l.out_shape, l.options, l.bflops,
                      l.segments, l.params) for l in net.layers]


def quiet_parse(source, **kw) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(source, **kw)


SMALL = """# a small net
[net]
width=32
height=32
channels=3

# stem
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=8   # same as the stem
size=1
stride=1
pad=1
activation=linear

[shortcut]
from = -2
activation=linear

[route]
layers = -1, 1
"""


# -- dump of an unedited network ---------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("cfg", RUNNABLE, ids=_id)
def test_parse_dump_parse_is_the_same_graph_for_every_corpus_cfg(cfg, tmp_path) -> None:
    net = quiet_parse(cfg)
    out = tmp_path / cfg.name
    text = darkcfg.dump(net, out)
    assert out.read_bytes() == text.encode() and text == net.source
    assert text.encode() == cfg.read_bytes() or not cfg.read_bytes().isascii()
    for spec in net:  # a tree file the cfg names (yolo9000's tree=) goes beside the copy
        tree = getattr(spec.options, "tree", None)
        if tree is not None:
            (tmp_path / Path(tree.path).name).write_bytes(Path(tree.path).read_bytes())
    assert graph(quiet_parse(out)) == graph(net)


@pytest.mark.parametrize("cfg", sorted(p.name for p in (REPO / "cfgs").glob("*.cfg")))
def test_overrides_are_written_into_net(cfg) -> None:
    net = quiet_parse(REPO / "cfgs" / cfg, width=128, height=96)
    text = darkcfg.dump(net)
    assert re.search(r"^width=128$", text, re.M) and re.search(r"^height=96$", text, re.M)
    assert graph(quiet_parse(text)) == graph(net)


def test_dump_keeps_every_byte_of_text_it_did_not_touch() -> None:
    text = SMALL.replace("\n", "\r\n")
    net = quiet_parse(text)
    assert darkcfg.dump(net) == text
    net.set(0, filters=16)
    assert darkcfg.dump(net) == text.replace("filters=8\r\n", "filters=16\r\n", 1)


# -- set ----------------------------------------------------------------------------------------
def test_set_rewrites_the_value_in_place_and_keeps_inline_comments() -> None:
    net = quiet_parse(SMALL)
    net.set(2, filters=16, activation="leaky")
    net.set(1, {"size": 3})
    assert darkcfg.dump(net) == (SMALL.replace("filters=8   # same as the stem",
                                               "filters=16# same as the stem")
                                 .replace("activation=linear\n\n[shortcut]",
                                          "activation=leaky\n\n[shortcut]")
                                 .replace("[maxpool]\nsize=2", "[maxpool]\nsize=3"))
    assert net[2].options.filters == 16 and net[2].out_shape.c == 16
    assert net[1].options.size == 3


def test_set_adds_missing_options_after_the_last_one_and_none_removes() -> None:
    net = quiet_parse(SMALL)
    net.set(1, stride_x=1, padding=1)
    net.set(0, batch_normalize=None)
    text = darkcfg.dump(net)
    assert "[maxpool]\nsize=2\nstride=2\nstride_x=1\npadding=1\n\n[convolutional]" in text
    assert "batch_normalize" not in text
    assert net[0].segments[0].kind == "bias" and len(net[0].segments) == 2


@pytest.mark.parametrize("value,text", [
    (True, "1"), (False, "0"), (7, "7"), (0.5, "0.5"), (1e-5, "1e-05"), ("mish", "mish"),
    ([1, 2, 3], "1,2,3"), ([(10, 14), (23, 27)], "10,14,23,27"), ((0.1, 2), "0.1,2"),
    (np.int64(5), "5"), (np.float32(0.5), "0.5"), (np.array([1, 2]), "1,2"),
])
def test_values_are_written_as_darknet_reads_them(value, text) -> None:
    net = quiet_parse(SMALL)
    with net.batch():
        net.set(1, comment_key=value)
        assert f"comment_key={text}\n" in net._pending.doc.text()


@pytest.mark.parametrize("value,error", [
    (float("nan"), "nan is not a finite number"), ("", "option value '' must be one non-empty line"),
    ("a\nb", "option value 'a\\nb' must be one non-empty line"), ([], "an empty list is not an option value"),
])
def test_bad_values_are_refused(value, error) -> None:
    net = quiet_parse(SMALL)
    with pytest.raises(ValueError, match=re.escape(error)):
        net.set(0, filters=value)
    assert darkcfg.dump(net) == SMALL


def test_bad_keys_and_indices_are_refused() -> None:
    net = quiet_parse(SMALL)
    with pytest.raises(ValueError, match=re.escape("'a b' is not an option name")):
        net.set(0, {"a b": 1})
    with pytest.raises(ValueError, match=re.escape("'#x' is not an option name")):
        net.set(0, {"#x": 1})
    with pytest.raises(IndexError, match="layer 5 is outside the network's 5 layers"):
        net.set(5, filters=1)
    with pytest.raises(IndexError, match="layer -6 is outside the network's 5 layers"):
        net.delete(-6)
    with pytest.raises(TypeError, match="a layer index is an int"):
        net.set("1", filters=1)
    with pytest.raises(ValueError, match=re.escape("a cfg has one [net] section, the first")):
        net.insert(0, "network")
    with pytest.raises(ValueError, match=re.escape("[net] is always the first section")):
        net.insert("net", "maxpool")
    assert darkcfg.dump(net) == SMALL


def test_an_edit_that_does_not_parse_changes_nothing() -> None:
    net = quiet_parse(SMALL)
    before = graph(net)
    with pytest.raises(darkcfg.CfgError, match=r"filters=0 must be positive \(at line 10, in "
                                               r"\[convolutional\] #0\)"):
        net.set(0, filters=0)
    with pytest.raises(darkcfg.CfgError, match=r"unknown section type \[convolutionl\] \(did you "
                                               r"mean \[convolutional\]\?\)"):
        net.insert(1, "convolutionl", filters=3)
    assert graph(net) == before and darkcfg.dump(net) == SMALL


def test_setting_net_size_replaces_the_override() -> None:
    net = quiet_parse(SMALL, width=64)
    assert net.net.width == 64
    net.set("net", width=96)
    assert net.net.width == 96 and net.overrides == {}
    net.set(0, filters=4)  # other edits keep the remaining overrides
    net2 = quiet_parse(SMALL, height=64)
    net2.set(0, filters=4)
    assert net2.net.height == 64 and "height=64" in darkcfg.dump(net2)


# -- insert / delete and index fix-ups ----------------------------------------------------------
def test_insert_renumbers_relative_and_absolute_indices() -> None:
    net = quiet_parse(SMALL)
    net.insert(1, "dropout", probability=0.5)
    assert [l.type for l in net] == ["convolutional", "dropout", "maxpool", "convolutional",
                                     "shortcut", "route"]
    assert net[4].inputs == (3, 2) and net[5].inputs == (4, 2)  # the same layers as before
    text = darkcfg.dump(net)
    assert "activation=leaky\n\n[dropout]\nprobability=0.5\n\n[maxpool]" in text
    assert "from = -2" in text  # shortcut and its target both moved: unchanged
    assert "layers = -1, 1" not in text and "layers = -1,2" in text
    net.delete(1)
    assert graph(net) == graph(quiet_parse(SMALL))
    assert darkcfg.dump(net) == SMALL.replace("layers = -1, 1", "layers = -1,1")


def test_insert_before_a_comment_keeps_the_comment_with_its_section() -> None:
    net = quiet_parse(SMALL)
    net.insert(0, "dropout")
    assert darkcfg.dump(net).startswith("# a small net\n[net]\nwidth=32\nheight=32\nchannels=3\n\n"
                                        "[dropout]\n\n# stem\n[convolutional]\n")
    assert net[1].inputs == (0,) and net[4].inputs == (3, 2)


def test_append_and_negative_insert() -> None:
    net = quiet_parse(SMALL.rstrip("\n"))  # the file's last line has no line break
    net.append("maxpool", size=2, stride=2)
    assert darkcfg.dump(net).endswith("layers = -1, 1\n\n[maxpool]\nsize=2\nstride=2\n")
    net.insert(-1, "dropout")
    assert [l.type for l in net][-3:] == ["route", "dropout", "maxpool"]


def test_delete_refuses_a_layer_others_read() -> None:
    net = quiet_parse(SMALL, )
    with pytest.raises(darkcfg.CfgError) as err:
        net.delete(1)
    assert str(err.value) == ("cannot delete layer 1: layer 3 reads it (from=-2); change that "
                              "first (at line 28, in [shortcut] #3)")
    net.delete(4)
    net.delete(3)
    net.delete(1)  # nothing reads the maxpool any more
    assert [l.type for l in net] == ["convolutional", "convolutional"]
    assert net[1].inputs == (0,) and net[1].in_shape.h == 32


def test_every_index_option_is_declared_for_renumbering(monkeypatch) -> None:
    """Context.resolve reads layer indices: every key it is asked for must be an index_key."""
    seen: set[tuple[str, str]] = set()
    real = Context.resolve

    def spy(self, value, key, what):
        seen.add((darkcfg.graph.canonical_type(self.opts.section.header), key))
        return real(self, value, key, what)

    monkeypatch.setattr(Context, "resolve", spy)
    for cfg in RUNNABLE:
        quiet_parse(cfg)
    for path in sorted((SHARED / "oracle" / "micro").glob("*/*.cfg")) if SHARED else []:
        try:
            quiet_parse(path)
        except darkcfg.CfgError:
            pass
    quiet_parse(SMALL)
    for section, key in seen:
        assert key in darkcfg.graph.section_type(section).index_keys, (section, key)
    assert ("route", "layers") in seen and ("shortcut", "from") in seen


# -- batches --------------------------------------------------------------------------------------
def _retarget_classes(net: darkcfg.Network, classes: int) -> None:
    for spec in [l for l in net if l.type == "yolo"]:
        net.set(spec.index, classes=classes)
        net.set(spec.index - 1, filters=(classes + 5) * len(spec.options.mask))


@needs_shared
def test_changing_classes_needs_a_batch_and_works_in_one() -> None:
    net = quiet_parse(CORPUS / "yolov4-tiny.cfg")
    with pytest.raises(darkcfg.CfgError):
        _retarget_classes(net, 20)  # the first single edit leaves filters and classes disagreeing
    net = quiet_parse(CORPUS / "yolov4-tiny.cfg")
    with net.batch():
        _retarget_classes(net, 20)
        assert net[-1].options.classes == 80  # not parsed until the batch ends
    assert [l.out_shape.c for l in net if l.type == "yolo"] == [75, 75]
    assert graph(quiet_parse(darkcfg.dump(net))) == graph(net)


def test_a_failed_batch_changes_nothing() -> None:
    net = quiet_parse(SMALL)
    with pytest.raises(darkcfg.CfgError):
        with net.batch():
            net.set(0, filters=4)  # the shortcut then adds 4 and 8 channels: fine in Darknet
            net.set(1, size=0)
    assert darkcfg.dump(net) == SMALL and net._pending is None
    with pytest.raises(KeyError):
        with net.batch():
            net.set(0, filters=4)
            raise KeyError("user code")
    assert darkcfg.dump(net) == SMALL
    with net.batch(), pytest.raises(RuntimeError, match="dump\\(\\) inside net.batch"):
        darkcfg.dump(net)


# -- property: inserting identity layers anywhere keeps the network's function ---------------------
CFG_CASES = [REPO / "cfgs" / "darknet53-tiny.cfg", REPO / "cfgs" / "cspdarknet53-tiny.cfg"]
CORPUS_CASES = ["yolov4-tiny.cfg", "efficientnet_b0.cfg", "resnet152_trident.cfg",
                "yolov4-sam-mish-csp-reorg-bfm.cfg"]


def _cases() -> list:
    corpus = [CORPUS / c for c in CORPUS_CASES] if SHARED else []
    return CFG_CASES + corpus


@pytest.mark.parametrize("cfg", _cases(), ids=lambda p: p.name)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_inserted_identity_layers_keep_outputs_and_deleting_them_restores_the_graph(cfg, data
                                                                                    ) -> None:
    size = 64
    base = quiet_parse(cfg, width=size, height=size)
    net = quiet_parse(cfg, width=size, height=size)
    kinds = st.sampled_from([("dropout", {}), ("empty", {}), ("activation", {"activation": "linear"})])
    positions = []
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(net)))
        kind, opts = data.draw(kinds)
        net.insert(pos, kind, opts)
        positions = [p + (p >= pos) for p in positions] + [pos]
    inserted = set(positions)
    old_to_new = [i for i in range(len(net)) if i not in inserted]
    assert len(old_to_new) == len(base)
    for old, spec in enumerate(base):
        new = net[old_to_new[old]]
        assert (new.type, new.out_shape) == (spec.type, spec.out_shape)
        if not darkcfg.graph.section_type(spec.type).index_keys:
            assert new.options == spec.options
        assert new.params == tuple(old_to_new[j] for j in spec.params)
        assert len(new.inputs) == len(spec.inputs)
        for j, k in zip(spec.inputs, new.inputs):
            if k in inserted:  # the previous layer, read implicitly, is now the inserted one
                assert j == old - 1 and k == old_to_new[old] - 1
            else:
                assert k == (old_to_new[j] if j >= 0 else -1)
    if len(base) > 60 or "efficientnet" in cfg.name:
        pass  # big nets: the graph checks above and below (building and running them is slow)
    else:
        _same_outputs(base, net, old_to_new, size)
    # and back
    for pos in sorted(positions, reverse=True):
        net.delete(pos)
    assert graph(net) == graph(base)
    assert graph(quiet_parse(darkcfg.dump(net))) == graph(base)


def _same_outputs(base: darkcfg.Network, net: darkcfg.Network, old_to_new: list[int], size: int
                  ) -> None:
    """With the same weights, the edited net computes what the original computes."""
    torch.manual_seed(0)
    a = darkcfg.build(base)
    b = darkcfg.build(net, out_indices=[old_to_new[i] for i in a.out_indices])
    state = {re.sub(r"^layers\.(\d+)\.", lambda m: f"layers.{old_to_new[int(m[1])]}.", k): v
             for k, v in a.state_dict().items()}
    b.load_state_dict(state)
    x = torch.rand(1, base.net.channels, size, size)
    with torch.no_grad():
        for ya, yb in zip(a(x), b(x)):
            torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)  # other instance, graph
