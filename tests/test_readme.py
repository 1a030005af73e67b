"""The README's numbers come from the files: generated blocks are current, and quoted transcripts match metrics/."""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO
from qlora_diff.tools.readme import BLOCK, RENDERERS, render_readme

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_generated_block_is_current():
    names = [m["name"] for m in BLOCK.finditer(README)]
    assert {"results", "eval_throughput", "train_throughput"} <= set(names)
    assert render_readme(README, REPO) == README, "run `python -m qlora_diff.tools.readme` and commit the README"


def test_a_stale_number_is_caught(tmp_path):
    stale = README.replace("<!-- generated:results -->\n", "<!-- generated:results -->\n| accuracy | 99.9% |\n", 1)
    assert render_readme(stale, REPO) != stale


def test_unknown_block_is_an_error():
    with pytest.raises(KeyError, match="generated:nope"):
        render_readme("<!-- generated:nope -->\nx\n<!-- /generated:nope -->", REPO)
    assert "nope" not in RENDERERS


def _metric(path: str, dotted: str):
    value = json.loads((REPO / path).read_text())
    for key in dotted.split("."):
        value = value[key]
    return value


def test_metrics_diff_transcript_matches_the_committed_metrics():
    """`dvc metrics diff main <exp>` quoted in the README: its `main` column is today's committed metrics."""
    start = README.index("$ dvc metrics diff main ")
    block = README[start:README.index("```", start)]
    rows = re.findall(r"^(metrics/\S+\.json)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", block, re.M)
    assert len(rows) >= 10
    for path, key, main, _, _ in rows:
        assert float(main) == pytest.approx(_metric(path, key), abs=1e-4), f"{path} {key}"
