"""reports/comparison.html: the rows it carries (unit tests), and the page itself in headless Chromium: the transition
matrix filters to the counts in compare.json, search and filters narrow the rows, nothing is fetched, nothing errors.

The browser tests run on two pages: one the report stage builds here from hand-built predictions (the code as it is
now), and the committed page of the default run (what a user opens)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser import offline_visit
from conftest import REPO
from synthetic import LABELS, build_pairs, build_reports, slice_rows

from qlora_diff.analysis.compare import join_predictions
from qlora_diff.analysis.seeds import row_stability
from qlora_diff.render.html_report import _script_json, columns, page_data, set_rows

FIELDS = ("premise", "hypothesis")


def committed_sets() -> list[str]:
    return sorted(p.name for p in (REPO / "metrics" / "eval").iterdir() if (p / "compare.json").is_file())


def embedded_data(page: Path) -> dict:
    """The row data the page carries, read back from its <script type="application/json">."""
    match = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page.read_text(), re.S)
    return json.loads(match.group(1).replace("<\\/", "</"))


def test_rows_carry_category_probabilities_and_slices():
    base, adapter = build_pairs(2, 1, 1, 1)
    pairs = join_predictions(base, adapter)
    features = {row["id"]: row["features"] for row in slice_rows(base)}
    identity = {label: label for label in LABELS}
    one_seed = {row["id"]: row for row in row_stability(base, [adapter], identity)}
    rows = set_rows("snli", pairs, features, identity, one_seed, FIELDS)
    assert [row["category"] for row in rows] == ["corrected", "corrected", "regressed", "still_wrong", "still_right"]
    assert [(row["seeds_right"], row["stability"]) for row in rows[:2]] == [("1/1", ""), ("1/1", "")]
    corrected = rows[0]
    assert (corrected["base"], corrected["adapter"], corrected["gold"]) == ("neutral", "contradiction", "contradiction")
    assert (corrected["base_p"], corrected["gold_p_base"], corrected["gold_p_adapter"]) == (0.8, 0.1, 0.8)
    assert corrected["gold_p_change"] == pytest.approx(0.7)
    assert corrected["tags"] == "artifact-hard" and rows[1]["tags"] == "artifact-easy"
    data = page_data([type("Page", (), {"rows": rows})()], FIELDS)
    assert data["columns"][:5] == ["set", "id", "premise", "hypothesis", "gold"] == columns(FIELDS)[:5]
    assert data["fields"] == list(FIELDS) and data["features"] == ["artifact"]   # gold is a column already
    assert len(data["rows"]) == 5 and data["rows"][0][-1] == ["hard"]


def test_rows_carry_their_stability_across_seeds():
    """Two seeds: the second one gets the first corrected row wrong, so that row is seed-dependent (1 of 2)."""
    base, adapter = build_pairs(2, 1, 1, 1)
    other = [dict(row, correct=False, prediction="neutral") if row["id"] == adapter[0]["id"] else row
             for row in adapter]
    identity = {label: label for label in LABELS}
    stability = {row["id"]: row for row in row_stability(base, [adapter, other], identity)}
    rows = set_rows("snli", join_predictions(base, adapter), {r["id"]: r["features"] for r in slice_rows(base)},
                    identity, stability, FIELDS)
    assert [(row["seeds_right"], row["stability"]) for row in rows] == [
        ("1/2", "seed-dependent"), ("2/2", "stable-correct"), ("0/2", "stable-wrong"), ("0/2", "stable-wrong"),
        ("2/2", "stable-correct")]


def test_row_text_cannot_close_the_data_script():
    payload = {"rows": [["</script><script>alert(1)</script>"]]}
    text = _script_json(payload)
    assert "</" not in text and json.loads(text.replace("<\\/", "</")) == payload


@pytest.fixture(scope="module")
def built_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    build_reports(root, replicate=True)
    return root


def count(visit) -> int:
    return int(visit.page.inner_text("#match-count"))


def visible_rows(visit) -> list[list[str]]:
    """The cells of the table rows on screen (the current page)."""
    return visit.page.eval_on_selector_all(
        "#row-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def click_transition(visit, eval_set: str, base: str, adapter: str) -> None:
    visit.page.click(f'#matrix-{eval_set} button[data-base="{base}"][data-adapter="{adapter}"]')


def assert_clean(visit) -> None:
    assert visit.blocked_requests == [], "the page tried to fetch from the network"
    assert visit.errors == []


def test_built_page_filters_sorts_and_searches(browser, built_project):
    page_path = built_project / "reports" / "comparison.html"
    compare = json.loads((built_project / "metrics/eval/snli/compare.json").read_text())
    with offline_visit(browser, page_path) as visit:
        assert count(visit) == 60 and len(visible_rows(visit)) == 50   # two sets of 30; pages of 50
        click_transition(visit, "snli", "neutral", "contradiction")
        assert count(visit) == compare["transitions"]["neutral->contradiction"] == 13
        shown = visible_rows(visit)
        assert len(shown) == 13 and {(r[0], r[5][:7], r[6][:13]) for r in shown} == {("snli", "neutral", "contradiction")}
        visit.page.select_option("select[data-filter=category]", "still_wrong")
        assert count(visit) == compare["still_wrong"] == 3
        visit.page.click("#clear")
        visit.page.select_option("select[data-filter=category]", "regressed")
        assert count(visit) == 2 + 4   # snli and hard
        visit.page.select_option("select[data-filter=artifact]", "hard")
        assert {row[11] for row in visible_rows(visit)} == {"artifact-hard"}
        visit.page.click("#clear")
        visit.page.select_option("select[data-filter=stability]", "seed-dependent")   # REPLICATE_FLIPS per set
        assert count(visit) == 4 + 4 and {row[10] for row in visible_rows(visit)} == {"1/2 seed-dependent"}
        visit.page.click("#clear")
        visit.page.fill("#search", "c00")
        assert count(visit) == 10 + 3 and all("c00" in row[1] for row in visible_rows(visit))
        visit.page.fill("#search", "no such text")
        assert count(visit) == 0 and visible_rows(visit) == []
        visit.page.click("#clear")
        visit.page.click("#sort-change")   # rise of p(gold), largest first: the corrected rows (+0.70)
        first, last = visible_rows(visit)[0], visible_rows(visit)[-1]
        assert first[7].endswith("(+0.70)") and first[9] == "corrected" and not last[7].endswith("(+0.70)")
        visit.page.click("#next")
        assert len(visible_rows(visit)) == 10 and "51-60" in visit.page.inner_text("#page-info")
        assert_clean(visit)


@pytest.mark.parametrize("eval_set", committed_sets())
def test_committed_page_shows_every_row_and_the_transition_counts(browser, eval_set, screenshot_dir):
    """The page of the default run, as committed: every transition cell filters to the count in compare.json."""
    page_path = REPO / "reports" / "comparison.html"
    compare = json.loads((REPO / f"metrics/eval/{eval_set}/compare.json").read_text())
    data = embedded_data(page_path)
    total = sum(json.loads((REPO / f"metrics/eval/{name}/compare.json").read_text())["examples"]
                for name in committed_sets())
    with offline_visit(browser, page_path) as visit:
        assert count(visit) == len(data["rows"]) == total
        if eval_set == committed_sets()[0]:
            visit.screenshot(screenshot_dir / "comparison.png")
        for transition, expected in compare["transitions"].items():
            before, after = transition.split("->")
            click_transition(visit, eval_set, before, after)
            assert count(visit) == expected, transition
            assert len(visible_rows(visit)) == min(expected, 50)
        busiest = max(compare["transitions"], key=compare["transitions"].get)
        click_transition(visit, eval_set, *busiest.split("->"))
        if eval_set == committed_sets()[0]:
            visit.screenshot(screenshot_dir / "comparison-rows.png")
        visit.page.click("#clear")
        word = "dog"
        expected = sum(word in f"{row[1]} {row[2]} {row[3]}".lower() for row in data["rows"])
        visit.page.fill("#search", word)
        assert count(visit) == expected > 0
        assert all(word in f"{row[1]} {row[2]} {row[3]}".lower() for row in visible_rows(visit))
        assert_clean(visit)
