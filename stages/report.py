"""Stage report: reports/comparison.md (the cross-set table and headline followed by every set's section) and
reports/comparison.html (every row of every set, filterable, with charts; self-contained)."""

import json
from pathlib import Path

from qlora_diff import atomic
from qlora_diff.cli import run_stage
from qlora_diff.config import Config
from qlora_diff.errors import InputError
from qlora_diff.html_report import page_inputs, read_set_page, render_page
from qlora_diff.report import headline, render_summary


def main(cfg: Config) -> None:
    sets, sections = {}, {}
    for name in cfg.eval_sets:
        paths = {which: Path(f"metrics/eval/{name}/{which}.json") for which in ("base", "adapter", "compare")}
        missing = [str(p) for p in [*paths.values(), Path(f"reports/eval/{name}.md"), *page_inputs(name)]
                   if not p.is_file()]
        if missing:
            raise InputError(f"evaluation set {name!r}: {', '.join(missing)} missing; run `dvc repro` (compare@{name}).")
        sets[name] = {which: json.loads(path.read_text()) for which, path in paths.items()}
        sections[name] = Path(f"reports/eval/{name}.md").read_text(encoding="utf-8")
    finetune = json.loads(Path("metrics/finetune.json").read_text())
    pages = [read_set_page(cfg, name, sets[name]) for name in cfg.eval_sets]
    atomic.write_text("reports/comparison.md", render_summary(sets, finetune, sections))
    atomic.write_text("reports/comparison.html", render_page(sets, finetune, pages))
    print(headline(sets))


if __name__ == "__main__":
    run_stage(main, __doc__)
