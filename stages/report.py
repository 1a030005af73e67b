"""Stage report: reports/comparison.md (the cross-set table and headline followed by every set's section) and
reports/comparison.html (every row of every set, filterable, with charts; self-contained)."""

import json
from pathlib import Path

from qlora_diff import atomic
from qlora_diff.cli import run_stage
from qlora_diff.compare import join_predictions
from qlora_diff.config import Config
from qlora_diff.errors import InputError
from qlora_diff.explain import attach_features
from qlora_diff.html_report import SetPage, render_page, set_charts, set_rows
from qlora_diff.report import headline, render_summary


def set_page(cfg: Config, name: str, metrics: dict) -> SetPage:
    predictions = Path(f"reports/predictions/{name}")
    base_path, adapter_path, slices_path = (predictions / f"{which}.jsonl" for which in ("base", "adapter", "slices"))
    pairs = join_predictions(atomic.read_jsonl(base_path), atomic.read_jsonl(adapter_path), str(base_path),
                             str(adapter_path))
    features = attach_features(pairs, atomic.read_jsonl(slices_path), str(slices_path))
    plots = {which: json.loads(Path(f"reports/plots/{name}/{which}.json").read_text())
             for which in ("slices", "reliability")}
    return SetPage(name=name, metrics=metrics,
                   rows=set_rows(name, pairs, features, cfg.eval_sets[name].collapse(cfg.data.labels)),
                   charts=set_charts(name, metrics, plots["slices"], plots["reliability"]))


def main(cfg: Config) -> None:
    sets, sections = {}, {}
    for name in cfg.eval_sets:
        paths = {which: Path(f"metrics/eval/{name}/{which}.json") for which in ("base", "adapter", "compare")}
        inputs = [*paths.values(), Path(f"reports/eval/{name}.md"),
                  *(Path(f"reports/predictions/{name}/{which}.jsonl") for which in ("base", "adapter", "slices")),
                  *(Path(f"reports/plots/{name}/{which}.json") for which in ("slices", "reliability"))]
        missing = [str(p) for p in inputs if not p.is_file()]
        if missing:
            raise InputError(f"evaluation set {name!r}: {', '.join(missing)} missing; run `dvc repro` (compare@{name}).")
        sets[name] = {which: json.loads(path.read_text()) for which, path in paths.items()}
        sections[name] = Path(f"reports/eval/{name}.md").read_text(encoding="utf-8")
    finetune = json.loads(Path("metrics/finetune.json").read_text())
    pages = [set_page(cfg, name, sets[name]) for name in cfg.eval_sets]
    atomic.write_text("reports/comparison.md", render_summary(sets, finetune, sections))
    atomic.write_text("reports/comparison.html", render_page(sets, finetune, pages))
    print(headline(sets))


if __name__ == "__main__":
    run_stage(main, __doc__)
