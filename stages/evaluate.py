"""Stages evaluate_base / evaluate_adapter: score the eval rows and write predictions, metrics and plots.

Usage: python stages/evaluate.py base|adapter [--params params.yaml]
"""

import sys
from pathlib import Path

from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config, which: str) -> None:
    from qlora_diff.evaluate import evaluate

    metrics = evaluate(
        cfg,
        model_dir=Path("models/base"),
        adapter_dir=Path("models/adapter") if which == "adapter" else None,
        eval_path=Path("data/prepared/eval.jsonl"),
        predictions_path=Path(f"reports/predictions/{which}.jsonl"),
        metrics_path=Path(f"metrics/{which}.json"),
        confusion_path=Path(f"reports/plots/confusion_{which}.json"),
    )
    print(f"{which}: accuracy {metrics['accuracy']:.4f} [{metrics['accuracy_ci_low']:.4f}, "
          f"{metrics['accuracy_ci_high']:.4f}] (chance {metrics['chance_accuracy']}, majority class "
          f"{metrics['majority_class_accuracy']}) on {metrics['examples']} rows in {metrics['seconds']} s")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("base", "adapter"):
        sys.exit("usage: python stages/evaluate.py base|adapter [--params params.yaml]")
    which = sys.argv.pop(1)
    run_stage(lambda cfg: main(cfg, which), __doc__)
