"""Stage slices@<set>: per-row slice features and the hypothesis-only baseline's predictions and metrics.

Writes reports/predictions/<set>/slices.jsonl and metrics/eval/<set>/hypothesis_only.json.
Usage: python stages/slices.py SET [--params params.yaml]
"""

from pathlib import Path

from qlora_diff import atomic
from qlora_diff.cli import run_stage
from qlora_diff.config import Config
from qlora_diff.metrics import classification_metrics


def main(cfg: Config, eval_set: str) -> None:
    from qlora_diff import hypothesis_only

    rows = atomic.read_jsonl(Path(f"data/prepared/eval/{eval_set}.jsonl"))
    slice_rows = hypothesis_only.slice_rows(cfg, eval_set, hypothesis_only.load(Path("models/hypothesis_only.pkl")),
                                            rows)
    metrics = classification_metrics([row["label"] for row in rows],
                                     [row["hypothesis_only_prediction"] for row in slice_rows],
                                     cfg.eval_sets[eval_set].labels(cfg.data.labels), cfg.report.confidence)
    metrics = {"eval_set": eval_set, "train_rows": cfg.hypothesis_baseline.train_rows, **metrics}
    atomic.write_jsonl(f"reports/predictions/{eval_set}/slices.jsonl", slice_rows)
    atomic.write_json(f"metrics/eval/{eval_set}/hypothesis_only.json", metrics)
    print(f"{eval_set}: hypothesis-only accuracy {metrics['accuracy']:.1%} "
          f"[{metrics['accuracy_ci_low']:.1%}, {metrics['accuracy_ci_high']:.1%}]")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None))
