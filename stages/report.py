"""Stage report: reports/comparison.md (the cross-set table and headline followed by every set's section) and
reports/comparison.html (every row of every set, filterable, with charts; self-contained)."""

import json

from qlora_diff.core import atomic, paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config
from qlora_diff.core.errors import InputError
from qlora_diff.render.html_report import page_inputs, read_set_page, render_page
from qlora_diff.render.report import headline, render_summary


def main(cfg: Config) -> None:
    sets, sections = {}, {}
    for name in cfg.eval_sets:
        files = {**{which: paths.eval_metrics(name, which) for which in paths.MODELS},
                 "compare": paths.compare_metrics(name), "seeds": paths.seed_metrics(name)}
        missing = [str(p) for p in [*files.values(), paths.set_report(name), *page_inputs(name)] if not p.is_file()]
        if missing:
            raise InputError(f"evaluation set {name!r}: {', '.join(missing)} missing; run `dvc repro` (compare@{name}).")
        sets[name] = {which: json.loads(path.read_text()) for which, path in files.items()}
        sections[name] = paths.set_report(name).read_text(encoding="utf-8")
    finetune = json.loads(paths.FINETUNE_METRICS.read_text())
    pages = [read_set_page(cfg, name, sets[name]) for name in cfg.eval_sets]
    atomic.write_text(paths.REPORT_MARKDOWN, render_summary(sets, finetune, sections, cfg.task_spec))
    atomic.write_text(paths.REPORT_HTML, render_page(sets, finetune, pages, cfg))
    print(headline(sets))


if __name__ == "__main__":
    run_stage(main, __doc__)
