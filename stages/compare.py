"""Stage compare: reports/comparison.md, metrics/compare.json and transition plot data from both prediction files."""

import json
from pathlib import Path

from qlora_diff import atomic
from qlora_diff.cli import run_stage
from qlora_diff.compare import compare, join_predictions, transition_rows
from qlora_diff.config import Config
from qlora_diff.report import render_markdown, summary_paragraph

BASE, ADAPTER = Path("reports/predictions/base.jsonl"), Path("reports/predictions/adapter.jsonl")


def read_metrics(name: str) -> dict:
    path = Path("metrics") / name
    return json.loads(path.read_text()) if path.is_file() else {}


def main(cfg: Config) -> None:
    pairs = join_predictions(atomic.read_jsonl(BASE), atomic.read_jsonl(ADAPTER), str(BASE), str(ADAPTER))
    comparison = compare(cfg, pairs, read_metrics("base.json"), read_metrics("adapter.json"),
                         read_metrics("finetune.json"))
    atomic.write_text("reports/comparison.md", render_markdown(comparison))
    atomic.write_json("reports/plots/transitions.json", transition_rows(pairs))
    atomic.write_json("metrics/compare.json", comparison.metrics())
    print(summary_paragraph(comparison.stats))


if __name__ == "__main__":
    run_stage(main, __doc__)
