"""`darkcfg graph`: the layer graph as Graphviz DOT and pictures drawn from it."""

from __future__ import annotations

import os
import re
import shutil
import stat
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import darkcfg
from darkcfg.cli import main
from darkcfg.draw import RenderError, find_renderer, render, to_dot
from oracle import REPO, SHARED, needs_shared

RENDERER = find_renderer()
# The test extras install graphviz-pure: in CI a missing renderer is a failure, not a skip.
needs_renderer = pytest.mark.skipif(RENDERER is None and not os.environ.get("CI"),
                                    reason="no Graphviz `dot` or graphviz-pure on PATH")
SVG = "{http://www.w3.org/2000/svg}"

SMALL = """[net]
width=32
height=32
channels=3

[convolutional]
filters=8
size=3
pad=1
activation=leaky

[convolutional]
filters=8
size=3
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[convolutional]
filters=8
size=3
pad=1
share_index=1
activation=leaky

[route]
layers=-1,0
"""


def parse(source) -> darkcfg.Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        return darkcfg.parse(source)


def cfg_edges(text: str) -> set[tuple[int, int]]:
    """Edges read straight from cfg text (a reading independent of darkcfg's parser): each layer
    reads the previous one (-1: the input), [route] its `layers`, [shortcut] the previous one
    and its `from`; negative indices are relative."""
    sections: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        line = "".join(line.split())
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sections.append((line[1:-1], {}))
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[-1][1].setdefault(key, value)
    edges = set()
    for i, (kind, options) in enumerate(sections[1:]):
        listed = options.get("layers" if kind == "route" else "from", "")
        absolute = [i + int(v) if int(v) < 0 else int(v) for v in listed.split(",") if v]
        sources = absolute if kind == "route" else [i - 1] + absolute
        edges |= {(j, i) for j in sources}
    return edges


def dot_graph(source: str) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Nodes {id: attributes} and edges {(tail, head): attributes} of to_dot's output."""
    nodes = {n: attrs for n, attrs in re.findall(r"^\t(\w+) \[(.*?)\]$", source, re.M | re.S)
             if n not in ("graph", "node", "edge")}  # (default attributes)
    edges = {(t, h): attrs for t, h, attrs in
             re.findall(r"^\t(\w+) -> (\w+)(?: \[(.*?)\])?$", source, re.M | re.S)}
    return nodes, edges


def node(i: int) -> str:
    return "input" if i == -1 else f"L{i}"


@needs_shared
def test_yolov4_tiny_nodes_and_edges() -> None:
    path = SHARED / "darknet-cfgs" / "yolov4-tiny.cfg"
    text = path.read_text()
    net = parse(path)
    nodes, edges = dot_graph(to_dot(net))
    assert set(nodes) == {"input"} | {f"L{i}" for i in range(38)}
    expected = cfg_edges(text)
    assert len(expected) == 45  # 38 layers, 7 of them routes of two layers
    assert set(edges) == {(node(j), node(i)) for j, i in expected}
    for (tail, head), attrs in edges.items():
        skip = tail != "input" and int(tail[1:]) != int(head[1:]) - 1
        assert ("dashed" in attrs) == skip, (tail, head, attrs)
    # the CSP route reads half of layer 2's 64 channels at 104x104 (416 / 4)
    assert nodes["L3"].startswith('label="3 route group 2/2\\n104x104x32"')
    assert nodes["L0"].startswith('label="0 conv 32 3x3/2\\n208x208x32"')
    outputs = {n for n, attrs in nodes.items() if "peripheries=2" in attrs}
    assert outputs == {"L30", "L37"}
    assert "input\\n416x416x3" in nodes["input"]


def test_small_graph_edges_and_styles() -> None:
    nodes, edges = dot_graph(to_dot(parse(SMALL), title="small"))
    assert set(edges) == {("input", "L0"), ("L0", "L1"), ("L1", "L2"), ("L0", "L2"), ("L2", "L3"),
                          ("L3", "L4"), ("L0", "L4"), ("L1", "L3")}
    shared = edges[("L1", "L3")]  # share_index=1
    assert "dotted" in shared and "constraint=false" in shared
    assert "dashed" in edges[("L0", "L2")] and "dashed" in edges[("L0", "L4")]
    assert edges[("L0", "L2")] != edges[("L0", "L4")]  # shortcut and route edges look different
    assert edges[("L2", "L3")] == ""  # sequential: plain
    assert [n for n, a in nodes.items() if "peripheries=2" in a] == ["L4"]


def test_dot_file_needs_no_renderer(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    net = parse(SMALL)
    out = render(net, tmp_path / "net.gv")
    assert out.read_text() == to_dot(net)


@needs_renderer
def test_svg_has_every_node_and_edge(tmp_path) -> None:
    cfg = REPO / "cfgs" / "cspdarknet53-tiny.cfg"
    net = parse(cfg)
    svg = render(net, tmp_path / "net.svg")
    root = ET.parse(svg).getroot()
    node_titles, edge_titles = [], []
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        if g.get("class") == "node":
            node_titles.append(title.text)
        elif g.get("class") == "edge":
            edge_titles.append(title.text)
    assert sorted(node_titles) == sorted(["input"] + [f"L{i}" for i in range(len(net))])
    expected = cfg_edges(cfg.read_text())
    assert sorted(edge_titles) == sorted(f"{node(j)}->{node(i)}" for j, i in expected)
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "3 route group 2/2" in texts and "cspdarknet53-tiny.cfg: 27 layers" in texts


@needs_renderer
def test_png_and_cli(tmp_path, capsys) -> None:
    cfg = str(REPO / "cfgs" / "darknet53-tiny.cfg")
    out = tmp_path / "net.png"
    assert main(["graph", cfg, "-o", str(out), "--width", "320", "--height", "320"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == f"wrote {out} (13 layers)\n"
    assert main(["graph", cfg, "--title", "t"]) == 0  # no -o: the DOT source
    source = capsys.readouterr().out
    assert source.startswith("digraph") and "320x320x3" not in source and "416x416x3" in source
    assert main(["graph", cfg, "-o", str(tmp_path / "net.bmp")]) == 1
    assert "unknown picture format 'bmp'" in capsys.readouterr().err


def test_format_errors(tmp_path) -> None:
    net = parse(SMALL)
    with pytest.raises(ValueError, match=r"unknown picture format 'bmp' .* use one of .*\.svg"):
        render(net, tmp_path / "x.bmp")
    with pytest.raises(ValueError, match="without a suffix"):
        render(net, tmp_path / "x")
    assert render(net, tmp_path / "x", fmt="dot").read_text().startswith("digraph")


def _fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_missing_renderer_or_package(tmp_path, monkeypatch) -> None:
    net = parse(SMALL)
    monkeypatch.setenv("PATH", str(tmp_path))
    hint = r'pip install "darkcfg\[graph\]"'
    with pytest.raises(RenderError, match=r"needs a Graphviz `dot` command .*" + hint):
        render(net, tmp_path / "x.svg")
    assert not (tmp_path / "x.svg").exists()
    monkeypatch.setitem(__import__("sys").modules, "graphviz", None)  # package not installed
    with pytest.raises(RenderError, match=r"graphviz Python package: " + hint):
        to_dot(net)


def test_graphviz_pure_formats(tmp_path, monkeypatch) -> None:
    """Only graphviz-pure on PATH: .pdf is refused up front, naming what it can write."""
    _fake(tmp_path, "graphviz-pure", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError,
                       match=r"graphviz-pure .* cannot write \.pdf: use one of .*\.png"):
        render(parse(SMALL), tmp_path / "x.pdf")


def test_renderer_failure_and_timeout(tmp_path, monkeypatch, capsys) -> None:
    net = parse(SMALL)
    monkeypatch.setenv("PATH", str(tmp_path))
    _fake(tmp_path, "dot", "echo 'Error: boom' >&2; exit 3")
    with pytest.raises(RenderError, match=r"-Tsvg failed \(exit code 3\): Error: boom"):
        render(net, tmp_path / "x.svg")
    assert not (tmp_path / "x.svg").exists()
    _fake(tmp_path, "dot", f"exec {shutil.which('sleep', path=os.defpath) or '/bin/sleep'} 30")
    with pytest.raises(RenderError, match="did not finish drawing the graph within 0.5 s"):
        render(net, tmp_path / "x.svg", timeout=0.5)
    cfg = tmp_path / "s.cfg"
    cfg.write_text(SMALL)
    _fake(tmp_path, "dot", "exit 0")  # exits without writing anything
    assert main(["graph", str(cfg), "-o", str(tmp_path / "x.png")]) == 1
    assert "failed (exit code 0): no output" in capsys.readouterr().err
