"""Stage hypothesis_baseline: fit the hypothesis-only classifier -> models/hypothesis_only.pkl, metrics/hypothesis_only.json.

Usage: python stages/hypothesis_baseline.py [--params params.yaml]
"""

from pathlib import Path

from qlora_diff import atomic
from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config) -> None:
    from qlora_diff import hypothesis_only

    rows = hypothesis_only.training_rows(cfg, Path("data/prepared/train.jsonl"))
    model = hypothesis_only.fit(cfg, rows)
    hypothesis_only.save(model, Path("models/hypothesis_only.pkl"))
    metrics = {"train_rows": cfg.hypothesis_baseline.train_rows, "rows": len(rows),
               "vocabulary": len(model.named_steps["tfidf"].vocabulary_)}
    atomic.write_json("metrics/hypothesis_only.json", metrics)
    print(f"hypothesis-only baseline: {metrics['rows']} {metrics['train_rows']} rows, {metrics['vocabulary']} n-grams")


if __name__ == "__main__":
    run_stage(main, __doc__)
