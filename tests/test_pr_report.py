"""The pull-request comment builder: every plot `dvc plots diff` declares becomes a valid PNG that the Markdown
links, next to the metrics diff and the report; drawn with no browser and no network."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import yaml
from conftest import REPO
from synthetic import two_run_repo

from qlora_diff.core.config import parse_config
from qlora_diff.tools.pr_report import build_comment, comparison_markdown, image_name, plot_specs, write_plot_images


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, checking its signature, header chunk and end chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND", path
    return struct.unpack(">II", data[16:24])


def test_image_names_are_short_and_distinct():
    assert image_name("reports/plots/snli/slices.json") == "snli-slices.png"
    assert image_name("Training loss") == "training-loss.png"


def test_comment_links_a_valid_png_for_every_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    specs = plot_specs("HEAD")
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert len(specs) >= len(declared["plots"]) + 5 and "Training loss" in specs   # 5 plots per eval set
    images = write_plot_images(specs, tmp_path / "pr-plots")
    comment = build_comment("HEAD", REPO / "reports" / "comparison.md", images, tmp_path)
    (tmp_path / "pr-comment.md").write_text(comment)
    links = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", comment)
    assert len(links) == len(specs) == len({path for _, path in links})
    for title, link in links:
        width, height = png_size(tmp_path / link)
        assert width > 100 and height > 100, (title, width, height)
    assert "snli: accuracy per slice, base vs adapter" in [title for title, _ in links]
    assert comment.startswith("## Metrics diff against `HEAD`") and "## Across evaluation sets" in comment


def test_the_comment_leads_with_the_paired_comparison_of_two_revisions(tmp_path, monkeypatch):
    """On a repo with two runs: HEAD fixes 3 of run-a's 4 wrong rows and breaks none (McNemar p = 2/8 = 0.25)."""
    repo = two_run_repo(tmp_path)
    monkeypatch.chdir(repo)
    cfg = parse_config({"report": {"bootstrap_samples": 1000}})
    lead = comparison_markdown("run-a", "HEAD", cfg)
    comment = build_comment("run-a", repo / "missing-report.md", [], repo, "HEAD", lead)
    assert comment.startswith("## `HEAD` against `run-a` (adapter vs adapter, same rows)")
    assert comment.index("against `run-a` (adapter") < comment.index("## Metrics diff against `run-a` vs `HEAD`")
    assert re.search(r"\| `snli` \|\s+10 \| 60.0%\s+\| 90.0%\s+\| \+30.0 \[[^]]+\]\s+\|\s+3 \|\s+0 \|\s+0.25 \|", comment)
    assert "not significant between these two adapters; each run has one training seed" in comment


def test_runs_that_cannot_be_paired_say_why_in_the_comment(tmp_path, monkeypatch):
    repo = two_run_repo(tmp_path)
    monkeypatch.chdir(repo)
    (repo / "params.yaml").write_text("eval_sets:\n  snli:\n    source: bundled\n  challenge:\n    source: challenge\n")
    lead = comparison_markdown("run-a", None, parse_config({}))   # the workspace's params add a set run-a lacks
    assert lead.startswith("## `workspace` against `run-a`\n\nThe two runs cannot be compared row by row: ")


def test_workflow_posts_the_comment_with_its_images_and_attaches_the_page():
    workflow = yaml.safe_load((REPO / ".github/workflows/pr-report.yml").read_text())
    steps = workflow["jobs"]["report"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "python -m qlora_diff.tools.pr_report" in commands and "cml comment update" in commands and "--publish" in commands
    uploads = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and "reports/comparison.html" in uploads[0]["with"]["path"]
