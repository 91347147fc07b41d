"""The public Darknet cfg corpus (../shared/darknet-cfgs): each cfg parses or gets a located error."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import darkcfg
from oracle import SHARED, needs_shared

CORPUS = sorted((SHARED / "darknet-cfgs").rglob("*.cfg")) if SHARED else []


def _id(p: Path) -> str:
    return str(p.relative_to(SHARED / "darknet-cfgs"))


@needs_shared
def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 200


@needs_shared
@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_parses_or_gives_a_located_error(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", darkcfg.CfgWarning)
        try:
            net = darkcfg.parse(path)
        except darkcfg.CfgError as e:
            assert e.path == str(path) and e.lineno is not None and e.section is not None, str(e)
            return
    assert len(net) > 0
    for spec in net:
        assert spec.out_shape.size > 0
        assert all(-1 <= j < spec.index for j in spec.inputs)
    assert net.total_bflops >= 0
