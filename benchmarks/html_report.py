"""The row-by-row page (reports/comparison.html) for one set of 1,000 rows, for the default run and at 10,000 rows:
its size on disk, and how long the page takes to load and its script takes to filter, search and sort, in headless
Chromium.

The 10,000-row page repeats the default run's rows (new ids) under the same summary and charts. Times are the
script's own (performance.now() around the event that triggers a re-render) and the load event, medians of 5.
Measure on a quiet machine: nothing else running.

Run: python benchmarks/html_report.py   (needs the default run's outputs: `dvc repro` or `dvc pull`)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from common import REPO, write_results

sys.path.insert(0, str(REPO / "tests"))
from browser import launched_chromium, offline_visit  # noqa: E402

from qlora_diff.core.config import load_config  # noqa: E402
from qlora_diff.render.html_report import SetPage, read_set_page, render_page  # noqa: E402

LARGE = 10_000
REPEATS = 5
ACTION_MS = """([selector, event, first, second]) => {
  const element = document.querySelector(selector), times = [];
  for (let i = 0; i < %d; i++) {
    for (const value of [first, second]) {
      element.value = value;
      const start = performance.now();
      element.dispatchEvent(new Event(event));
      times.push(performance.now() - start);
    }
  }
  return times;
}""" % REPEATS
CLICK_MS = """(selector) => {
  const times = [];
  for (let i = 0; i < %d; i++) {
    for (const target of [selector, '#clear']) {
      const start = performance.now();
      document.querySelector(target).click();
      times.push(performance.now() - start);
    }
  }
  return times;
}""" % REPEATS


def scaled(pages: list[SetPage], total: int) -> list[SetPage]:
    """The pages' rows repeated (ids suffixed with the copy number) until there are ``total`` rows in all."""
    have = sum(len(page.rows) for page in pages)
    copies = -(-total // have)
    out, left = [], total
    for page in pages:
        rows = [{**row, "id": f"{row['id']}#{copy}"} for copy in range(copies) for row in page.rows]
        share = min(left, round(total * len(page.rows) / have)) if page is not pages[-1] else left
        out.append(replace(page, rows=rows[:share]))
        left -= share
    return out


def measure(browser, path: Path, first_set: str, cell: tuple[str, str]) -> dict:
    with offline_visit(browser, path) as visit:
        page = visit.page
        load = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        search = page.evaluate(ACTION_MS, ["#search", "input", "dog", ""])
        sort = page.evaluate(ACTION_MS, ["#sort", "change", "rise", ""])
        click = page.evaluate(CLICK_MS, f'#matrix-{first_set} button[data-base="{cell[0]}"][data-adapter="{cell[1]}"]')
        assert visit.blocked_requests == [] and visit.errors == [], (visit.blocked_requests, visit.errors)
    median = lambda times: round(statistics.median(times), 1)
    return {"load event, ms": round(load), "search (type / clear), ms": median(search),
            "sort by p(gold) change, ms": median(sort), "transition click / clear, ms": median(click)}


def main() -> None:
    os.chdir(REPO)
    cfg = load_config(Path("params.yaml"))
    sets = {name: {which: json.loads(Path(f"metrics/eval/{name}/{which}.json").read_text())
                   for which in ("base", "adapter", "compare")} for name in cfg.eval_sets}
    finetune = json.loads(Path("metrics/finetune.json").read_text())
    pages = [read_set_page(cfg, name, sets[name]) for name in cfg.eval_sets]
    first = next(iter(cfg.eval_sets))
    busiest = max(sets[first]["compare"]["transitions"], key=sets[first]["compare"]["transitions"].get).split("->")
    results = []
    with tempfile.TemporaryDirectory() as tmp, launched_chromium() as browser:
        variants = ((f"`{first}` only", {first: sets[first]}, pages[:1]), ("default run", sets, pages),
                    (f"{LARGE:,} rows", sets, scaled(pages, LARGE)))
        for label, shown_sets, chosen in variants:
            path = Path(tmp) / f"{len(results)}.html"
            path.write_text(render_page(shown_sets, finetune, chosen, cfg), encoding="utf-8")
            rows = sum(len(page.rows) for page in chosen)
            results.append({"page": label, "rows": rows, "size, MB": round(path.stat().st_size / 1e6, 2),
                            "bytes per row": None, **measure(browser, path, first, tuple(busiest))})
    per_row = (results[2]["size, MB"] - results[1]["size, MB"]) * 1e6 / (results[2]["rows"] - results[1]["rows"])
    for result in results:
        result["bytes per row"] = round(per_row)
    notes = ["quiet machine (nothing else running); Debian chromium, headless, via Playwright; 50 rows per page",
             "bytes per row: the size difference of the last two pages over their row difference (the rest is summary, "
             "charts and script)",
             f"{LARGE:,}-row page: the default run's rows repeated with new ids, same summary and charts"]
    write_results("html_report", "The row-by-row page: size and responsiveness", results, notes)


if __name__ == "__main__":
    main()
