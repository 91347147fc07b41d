"""Lexer and graph: Darknet's text rules, defaults, index resolution, shapes and exact errors."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings, strategies as st

import darkcfg
from darkcfg.lexer import lex

NET = "[net]\nwidth=16\nheight=16\nchannels=3\n"


def parse(body: str, **kw) -> darkcfg.Network:
    return darkcfg.parse(NET + body, **kw)


def error(body: str) -> darkcfg.CfgError:
    with pytest.raises(darkcfg.CfgError) as info:
        parse(body)
    return info.value


def test_lexer_rules() -> None:
    text = ("# comment\n; also a comment\n  # indented comment\n[ net ]\r\nwidth = 16\r\n"
            "\theight=16 \nchannels=3\n\n[conv]\nfilters = 4 # inline\nlayers = -1 , 0\n")
    sections = lex(text)
    assert [s.header for s in sections] == ["net", "conv"]
    assert [(o.key, o.value, o.line) for o in sections[0].options] == \
        [("width", "16", 5), ("height", "16", 6), ("channels", "3", 7)]
    assert [(o.key, o.value) for o in sections[1].options] == \
        [("filters", "4#inline"), ("layers", "-1,0")]
    assert sections[1].options[0].column == 11


def test_aliases_and_defaults() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", darkcfg.CfgWarning)
        net = darkcfg.parse("[network]\nwidth=8\nheight=8\nchannels=3\n[conv]\nfilters=2\n"
                            "[max]\n[conv]\nfilters=2\nsize=3\npad=1\n[avg]\n[conn]\n[soft]\n")
    conv, pool, conv2, avg, conn, soft = net.layers
    assert [l.type for l in net] == ["convolutional", "maxpool", "convolutional", "avgpool",
                                     "connected", "softmax"]
    assert conv.options.activation == "logistic" and conv.options.size == 1
    assert (pool.options.size, pool.options.stride_x, pool.options.padding) == (1, 1, 0)
    assert conn.options.outputs == 1 and conn.options.activation == "logistic"
    assert conv2.options.padding == 1


def test_inline_comment_after_number_and_string() -> None:
    with pytest.warns(darkcfg.CfgWarning, match="unknown activation 'leaky#c': Darknet uses relu"):
        net = parse("[conv]\nfilters=4 # four\nactivation=leaky # c\n")
    assert net[0].options.filters == 4 and net[0].options.activation == "relu"


def test_first_duplicate_wins_with_warning() -> None:
    with pytest.warns(darkcfg.CfgWarning, match=r"duplicate option 'filters': Darknet uses the "
                                                r"first value '4' from line 6"):
        net = parse("[conv]\nfilters=4\nfilters=8\n")
    assert net[0].out_shape.c == 4


def test_unused_and_empty_options_warn_with_line() -> None:
    with pytest.warns(darkcfg.CfgWarning) as record:
        net = parse("[conv]\nfilters=4\nFilters=8\nactivation=\n")
    messages = [str(w.message) for w in record]
    assert "option 'activation' has an empty value and is ignored (at line 8, in [conv])" in messages
    assert "unused option 'Filters' (Darknet ignores it too) (at line 7, in [conv] #0)" in messages
    assert net[0].options.activation == "logistic"


def test_training_options_are_not_unused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", darkcfg.CfgWarning)
        darkcfg.parse("[net]\nwidth=8\nheight=8\nchannels=3\nlearning_rate=0.001\nmosaic=1\n"
                      "policy=steps\nsteps=1,2\nscales=.1,.1\n[conv]\nfilters=18\nstopbackward=1\n"
                      "[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nclasses=1\nnum=3\njitter=.3\n"
                      "ignore_thresh=.7\nrandom=1\niou_loss=ciou\nnms_kind=greedynms\n")


def test_index_resolution() -> None:
    net = parse("[conv]\nfilters=2\n[conv]\nfilters=3\n[route]\nlayers=-1,0\n[shortcut]\nfrom=1\n"
                "[route]\nlayers=-3\n")
    assert net[2].inputs == (1, 0)
    assert net[2].out_shape == darkcfg.Shape(5, 16, 16)
    assert net[3].inputs == (2, 1) and net[3].options.sources == (1,)
    assert net[4].inputs == (1,)


def test_route_groups() -> None:
    net = parse("[conv]\nfilters=8\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n"
                "[route]\nlayers=0,1\ngroups=2\n")
    assert net[1].out_shape.c == 4 and net[2].out_shape.c == 6


@pytest.mark.parametrize("body,size", [
    ("[maxpool]\nsize=2\nstride=2\n", 8), ("[maxpool]\nsize=2\nstride=1\n", 16),
    ("[maxpool]\nsize=3\nstride=2\n", 8), ("[maxpool]\nsize=2\nstride=2\npadding=0\n", 8),
    ("[conv]\nsize=3\nstride=2\n", 7), ("[conv]\nsize=3\nstride=2\npad=1\n", 8),
    ("[conv]\nsize=3\ndilation=2\npad=1\n", 16), ("[conv]\nsize=3\npadding=2\n", 18),
    ("[upsample]\nstride=2\n", 32), ("[upsample]\nstride=-2\n", 8),
])
def test_darknet_shape_arithmetic(body, size) -> None:
    assert parse(body)[0].out_shape.w == size


def test_odd_maxpool_rounds_up() -> None:
    net = darkcfg.parse("[net]\nwidth=13\nheight=13\nchannels=1\n[maxpool]\nsize=2\nstride=2\n")
    assert net[0].out_shape == darkcfg.Shape(1, 7, 7)


def test_total_bflops_is_a_float32_sum() -> None:
    net = parse("[conv]\nfilters=32\nsize=3\npad=1\n[maxpool]\nsize=2\nstride=2\n")
    assert net[0].bflops == pytest.approx(2 * 27 * 32 * 256 / 1e9, rel=1e-6)
    assert net.total_bflops == pytest.approx(net[0].bflops + net[1].bflops, rel=1e-6)


@pytest.mark.parametrize("body,message", [
    ("[route]\nlayers=-40\n",
     "route index -40 points before layer 0 (at line 6, in [route] #0)"),
    ("[conv]\n[route]\nlayers=3\n",
     "route index 3 points to layer 3, which is not before this layer (at line 7, in [route] #1)"),
    ("[conv]\n[shortcut]\nfrom=-5\n",
     "shortcut index -5 points before layer 0 (at line 7, in [shortcut] #1)"),
    ("[foo]\n", "unknown section type [foo] (at line 5, in [foo] #0)"),
    ("[convolutinal]\n",
     "unknown section type [convolutinal] (did you mean [convolutional]?) (at line 5, in "
     "[convolutinal] #0)"),
    ("[implicit_add]\n", "unknown section type [implicit_add]: a yolor (WongKinYiu/yolor) "
                         "extension that Darknet does not read (at line 5, in [implicit_add] #0)"),
    ("[route_lhalf]\n", "unknown section type [route_lhalf]: a PyTorch_YOLOv4 extension that "
                        "Darknet does not read (at line 5, in [route_lhalf] #0)"),
    ("[conv]\nfilters=0\n", "filters=0 must be positive (at line 6, in [conv] #0)"),
    ("[conv]\nfilters=x\n", "filters='x' is not an integer (at line 6, in [conv] #0)"),
    ("[conv]\nsize=3.5\n", "size='3.5' must be an integer (at line 6, in [conv] #0)"),
    ("[conv]\nfilters=4\ngroups=2\n",
     "groups=2 does not divide the 3 input channels (at line 7, in [conv] #0)"),
    ("[conv]\nfilters=2\n[maxpool]\nsize=2\nstride=2\n[route]\nlayers=0,1\n",
     "route inputs differ in size: layer 0 is 16x16, layer 1 is 8x8 (at line 11, in [route] #2)"),
    ("[conv]\nsize=40\n", "input height of 16 is too small for size=40 with padding 0 "
                          "(at line 5, in [conv] #0)"),
    ("[conv]\nfilters=20\n[yolo]\nclasses=2\nmask=0,1,2\nnum=3\n",
     "[yolo] with 3 anchors and classes=2 needs 21 input channels, the previous layer gives 20 "
     "(at line 7, in [yolo] #1)"),
    ("[shortcut]\nfrom=-1\n", "[shortcut] cannot be the first layer (at line 5, in [shortcut] #0)"),
    ("[route]\n", "[route] needs layers= (at line 5, in [route] #0)"),
])
def test_exact_error_messages(body, message) -> None:
    err = error(body)
    assert str(err) == message


def test_error_attributes(tmp_path) -> None:
    p = tmp_path / "bad.cfg"
    p.write_text(NET + "[conv]\nfilters=1\n[route]\nlayers=-40\n")
    with pytest.raises(darkcfg.CfgError) as info:
        darkcfg.parse(p)
    e = info.value
    assert (e.path, e.lineno, e.colno, e.section, e.layer_index) == (str(p), 8, 8, "route", 1)
    assert str(e) == "route index -40 points before layer 0 (at bad.cfg line 8, in [route] #1)"


@pytest.mark.parametrize("text,message", [
    ("", "no sections: a cfg starts with [net]"),
    ("width=3\n", "option 'width=3' before any [section] (at line 1)"),
    ("[conv]\n", "the first section must be [net] or [network], not [conv] (at line 1, in [conv])"),
    ("[net\nwidth=1\n", "section header '[net' is missing its closing ']' (at line 1)"),
    ("[net]\nwidth=0\n", "[net] gives no input size: set width, height and channels (or inputs) "
                         "(at line 1, in [net])"),
    ("[net]\nwidth=4\nheight=4\nchannels=1\n[net]\n",
     "[net] may only be the first section (at line 5, in [net] #0)"),
])
def test_exact_file_level_errors(text, message) -> None:
    with pytest.raises(darkcfg.CfgError) as info:
        darkcfg.parse(text + ("\n" if "\n" not in text else ""))
    assert str(info.value) == message


def test_missing_file(tmp_path) -> None:
    with pytest.raises(darkcfg.CfgError, match="cannot read cfg file"):
        darkcfg.parse(tmp_path / "missing.cfg")


def test_overrides() -> None:
    net = parse("[conv]\nfilters=2\n", width=32, height=8)
    assert net[0].out_shape == darkcfg.Shape(2, 8, 32)
    assert (net.net.width, net.net.height) == (32, 8)


_value = st.text(st.characters(codec="ascii", exclude_characters="\r\n[]=#;"), max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["filters", "size", "stride", "pad", "activation",
                                           "groups", "batch_normalize", "padding", "dilation"]),
                          _value), max_size=8),
       st.sampled_from(["convolutional", "maxpool", "route", "shortcut", "upsample", "yolo"]))
def test_any_option_values_give_a_network_or_a_cfg_error(options, section) -> None:
    body = f"[conv]\nfilters=6\n[{section}]\n" + "".join(f"{k}={v}\n" for k, v in options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        try:
            net = parse(body)
        except darkcfg.CfgError as e:
            assert e.lineno is not None
            return
    assert all(l.out_shape.size > 0 for l in net)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b_c", "filters"]), st.integers(-50, 50)),
                max_size=6), st.sampled_from(["\n", "\r\n"]), st.sampled_from(["", " ", "\t"]))
def test_lexer_whitespace_and_line_endings_do_not_matter(options, eol, pad) -> None:
    plain = "[net]\n" + "".join(f"{k}={v}\n" for k, v in options)
    fancy = f"[{pad}net{pad}]{eol}" + "".join(f"{pad}{k}{pad}={pad}{v}{pad}{eol}" for k, v in options)
    strip = lambda secs: [(s.header, [(o.key, o.value, o.line) for o in s.options]) for s in secs]
    assert strip(lex(plain)) == strip(lex(fancy))
