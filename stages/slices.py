"""Stage slices@<set>: per-row slice features and the bag-of-words baseline's predictions (NLI: hypothesis-only) and metrics.

Writes reports/predictions/<set>/slices.jsonl and metrics/eval/<set>/slices.json (the baseline's accuracy on the set).
Usage: python stages/slices.py SET [--params params.yaml]
"""

from qlora_diff.analysis.metrics import classification_metrics
from qlora_diff.core import atomic, paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config, eval_set: str) -> None:
    from qlora_diff.analysis import hypothesis_baseline

    rows = atomic.read_jsonl(paths.eval_rows(eval_set))
    slice_rows = hypothesis_baseline.slice_rows(cfg, eval_set, hypothesis_baseline.load(paths.HYPOTHESIS_MODEL),
                                            rows)
    metrics = classification_metrics([row["label"] for row in rows],
                                     [row["hypothesis_only_prediction"] for row in slice_rows],
                                     cfg.eval_sets[eval_set].labels(cfg.data.labels), cfg.report.confidence)
    metrics = {"eval_set": eval_set, "train_rows": cfg.hypothesis_baseline.train_rows, **metrics}
    atomic.write_jsonl(paths.slice_rows(eval_set), slice_rows)
    atomic.write_json(paths.slice_metrics(eval_set), metrics)
    print(f"{eval_set}: {cfg.task_spec.baseline_name} accuracy {metrics['accuracy']:.1%} "
          f"[{metrics['accuracy_ci_low']:.1%}, {metrics['accuracy_ci_high']:.1%}]")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None))
