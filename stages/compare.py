"""Stage compare@<set>: reports/eval/<set>.md, metrics/eval/<set>/compare.json, and plot data (transitions,
accuracy per slice, reliability diagram).

Usage: python stages/compare.py SET [--params params.yaml]
"""

import json

from qlora_diff.analysis.compare import compare, join_predictions, reliability_plot_rows, transition_rows
from qlora_diff.analysis.explain import explain, slice_plot_rows
from qlora_diff.analysis.seeds import SEED_DEPENDENT
from qlora_diff.core import atomic, paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config
from qlora_diff.render.report import render_set_section, summary_paragraph


def main(cfg: Config, eval_set: str) -> None:
    base_path, adapter_path, slices_path = (paths.predictions(eval_set, "base"), paths.predictions(eval_set, "adapter"),
                                            paths.slice_rows(eval_set))
    metrics = {which: json.loads(paths.eval_metrics(eval_set, which).read_text()) for which in paths.MODELS}
    pairs = join_predictions(atomic.read_jsonl(base_path), atomic.read_jsonl(adapter_path), str(base_path),
                             str(adapter_path))
    comparison = compare(cfg, eval_set, pairs, metrics["base"], metrics["adapter"])
    seeds = json.loads(paths.seed_metrics(eval_set).read_text())
    unstable = frozenset(row["id"] for row in atomic.read_jsonl(paths.stability_rows(eval_set))
                         if row["stability"] == SEED_DEPENDENT) if cfg.slices.stable_transitions_only else frozenset()
    explanation = explain(cfg, pairs, atomic.read_jsonl(slices_path),
                          json.loads(paths.slice_metrics(eval_set).read_text()), str(slices_path), unstable)
    atomic.write_text(paths.set_report(eval_set), render_set_section(comparison, explanation, seeds))
    atomic.write_json(paths.compare_plot(eval_set, "transitions"), transition_rows(pairs))
    atomic.write_json(paths.compare_plot(eval_set, "slices"), slice_plot_rows(explanation))
    atomic.write_json(paths.compare_plot(eval_set, "reliability"),
                      reliability_plot_rows(comparison, pairs, cfg.report.calibration_bins))
    atomic.write_json(paths.compare_metrics(eval_set), {**comparison.metrics(), **explanation.metrics()})
    print(f"{eval_set}: {summary_paragraph(comparison.stats)}")
    for sentence in explanation.findings or ["No slice stands out at the configured q threshold."]:
        print(f"{eval_set}: {sentence}")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None))
