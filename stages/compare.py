"""Stage compare@<set>: reports/eval/<set>.md, metrics/eval/<set>/compare.json, and plot data (transitions,
accuracy per slice, reliability diagram).

Usage: python stages/compare.py SET [--params params.yaml]
"""

import json
from pathlib import Path

from qlora_diff import atomic
from qlora_diff.cli import run_stage
from qlora_diff.compare import compare, join_predictions, reliability_plot_rows, transition_rows
from qlora_diff.config import Config
from qlora_diff.explain import explain, slice_plot_rows
from qlora_diff.report import render_set_section, summary_paragraph


def main(cfg: Config, eval_set: str) -> None:
    predictions = Path(f"reports/predictions/{eval_set}")
    base_path, adapter_path, slices_path = (predictions / f"{name}.jsonl" for name in ("base", "adapter", "slices"))
    metrics = {which: json.loads(Path(f"metrics/eval/{eval_set}/{which}.json").read_text())
               for which in ("base", "adapter", "hypothesis_only")}
    pairs = join_predictions(atomic.read_jsonl(base_path), atomic.read_jsonl(adapter_path), str(base_path),
                             str(adapter_path))
    comparison = compare(cfg, eval_set, pairs, metrics["base"], metrics["adapter"])
    explanation = explain(cfg, pairs, atomic.read_jsonl(slices_path), metrics["hypothesis_only"], str(slices_path))
    atomic.write_text(f"reports/eval/{eval_set}.md", render_set_section(comparison, explanation))
    atomic.write_json(f"reports/plots/{eval_set}/transitions.json", transition_rows(pairs))
    atomic.write_json(f"reports/plots/{eval_set}/slices.json", slice_plot_rows(explanation))
    atomic.write_json(f"reports/plots/{eval_set}/reliability.json",
                      reliability_plot_rows(comparison, pairs, cfg.report.calibration_bins))
    atomic.write_json(f"metrics/eval/{eval_set}/compare.json", {**comparison.metrics(), **explanation.metrics()})
    print(f"{eval_set}: {summary_paragraph(comparison.stats)}")
    for sentence in explanation.findings or ["No slice stands out at the configured q threshold."]:
        print(f"{eval_set}: {sentence}")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None))
