"""Stage hypothesis_baseline: fit the bag-of-words baseline (NLI: hypothesis-only) -> models/hypothesis_baseline.pkl, metrics/hypothesis_baseline.json.

Usage: python stages/hypothesis_baseline.py [--params params.yaml]
"""

from qlora_diff.core import atomic, paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config) -> None:
    from qlora_diff.analysis import hypothesis_baseline

    rows = hypothesis_baseline.training_rows(cfg, paths.TRAIN_ROWS)
    model = hypothesis_baseline.fit(cfg, rows)
    hypothesis_baseline.save(model, paths.HYPOTHESIS_MODEL)
    metrics = {"train_rows": cfg.hypothesis_baseline.train_rows, "rows": len(rows),
               "vocabulary": len(model.named_steps["tfidf"].vocabulary_)}
    atomic.write_json(paths.HYPOTHESIS_METRICS, metrics)
    print(f"{cfg.task_spec.baseline_name} baseline: {metrics['rows']} {metrics['train_rows']} rows, {metrics['vocabulary']} n-grams")


if __name__ == "__main__":
    run_stage(main, __doc__)
