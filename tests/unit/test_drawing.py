"""Pipeline drawings: an edge that carries several ports shows one line per port pair, never a literal backslash-n."""

from __future__ import annotations

import re

from examples.quickstart import build_pipeline
from tests.conftest import require_extra


def test_an_edge_with_several_ports_is_labelled_one_port_pair_per_line() -> None:
    dot = build_pipeline().to_dot()
    edge = next(line for line in dot.splitlines() if line.strip().startswith('"totals" -> "mean"'))
    assert 'label="total → total\\nframes → frames"' in edge  # DOT's line break, unescaped


def test_the_drawing_shows_each_port_pair_as_its_own_text_line() -> None:
    require_extra("pygraphviz")
    svg = build_pipeline().show().svg
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "total → total" in texts and "frames → frames" in texts
    assert not any("\\n" in text for text in texts)
