"""`dvc plots show` renders with no network: the project's HTML template (written by `make setup`, named in
.dvc/config) inlines vega, vega-lite and vega-embed, and every declared plot draws in headless Chromium."""

from __future__ import annotations

import configparser
import json
import subprocess
from pathlib import Path

from browser import offline_visit
from conftest import REPO

from qlora_diff.core.paths import OFFLINE_PLOTS_PAGE as TARGET
from qlora_diff.tools.offline_plots import render_template


def configured_template() -> Path:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    return REPO / ".dvc" / config["plots"]["html_template"]


def test_dvc_config_names_the_template_that_setup_writes():
    template = configured_template()
    assert template == REPO / TARGET
    assert template.is_file(), "run `make setup` (python -m qlora_diff.tools.offline_plots) to write it"
    text = template.read_text(encoding="utf-8")
    assert text == render_template(), "stale: rerun `python -m qlora_diff.tools.offline_plots`"
    assert "{plot_divs}" in text and "{scripts}" not in text and "cdn.jsdelivr" not in text
    assert "window.vegaEmbed=" in text


def test_dvc_plots_show_draws_every_plot_offline(browser, tmp_path, screenshot_dir, request):
    """Plain `dvc plots show` (or `dvc plots diff` with --plots-revs): every plot DVC declares draws a non-empty
    SVG or canvas, the page fetches nothing and logs no error."""
    revisions = request.config.getoption("--plots-revs").split()
    command = ["plots", "diff", *revisions] if revisions else ["plots", "show"]
    declared = json.loads(subprocess.run(["dvc", *command, "--json"], cwd=REPO, capture_output=True, text=True,
                                         check=True).stdout)["data"]
    subprocess.run(["dvc", *command, "-o", str(tmp_path / "plots")], cwd=REPO, capture_output=True, check=True)
    page = tmp_path / "plots" / "index.html"
    with offline_visit(browser, page, width=1600, height=1200) as visit:
        visit.page.wait_for_function(
            "n => document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length >= n",
            arg=len(declared), timeout=60_000)
        sizes = visit.page.eval_on_selector_all(
            ".vega-embed", "views => views.map(v => { const drawn = v.querySelector('canvas, svg.marks');"
                           " const box = drawn.getBoundingClientRect(); return [v.id, box.width, box.height]; })")
        assert len(sizes) == len(declared) >= 10   # 2 training curves + 5 per eval set
        assert all(width > 50 and height > 50 for _, width, height in sizes), sizes
        name = "dvc-plots-diff.png" if revisions else "dvc-plots-show.png"
        visit.screenshot(screenshot_dir / name)
        assert visit.blocked_requests == [] and visit.errors == [], (visit.blocked_requests, visit.errors)
