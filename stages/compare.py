"""Stage compare@<set>: reports/eval/<set>.md, metrics/eval/<set>/compare.json and transition plot data.

Usage: python stages/compare.py SET [--params params.yaml]
"""

import json
from pathlib import Path

from qlora_diff import atomic
from qlora_diff.cli import run_stage
from qlora_diff.compare import compare, join_predictions, transition_rows
from qlora_diff.config import Config
from qlora_diff.report import render_set_section, summary_paragraph


def main(cfg: Config, eval_set: str) -> None:
    base_path, adapter_path = (Path(f"reports/predictions/{eval_set}/{which}.jsonl") for which in ("base", "adapter"))
    metrics = {which: json.loads(Path(f"metrics/eval/{eval_set}/{which}.json").read_text()) for which in ("base", "adapter")}
    pairs = join_predictions(atomic.read_jsonl(base_path), atomic.read_jsonl(adapter_path), str(base_path),
                             str(adapter_path))
    comparison = compare(cfg, eval_set, pairs, metrics["base"], metrics["adapter"])
    atomic.write_text(f"reports/eval/{eval_set}.md", render_set_section(comparison))
    atomic.write_json(f"reports/plots/{eval_set}/transitions.json", transition_rows(pairs))
    atomic.write_json(f"metrics/eval/{eval_set}/compare.json", comparison.metrics())
    print(f"{eval_set}: {summary_paragraph(comparison.stats)}")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None))
