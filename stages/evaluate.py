"""Stages evaluate_base@<set> / evaluate_adapter@<set>: score one evaluation set; write predictions, metrics, plots.

Usage: python stages/evaluate.py base|adapter SET [--params params.yaml]
"""

from pathlib import Path

from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config, which: str, eval_set: str) -> None:
    from qlora_diff.evaluate import evaluate

    metrics = evaluate(
        cfg, eval_set,
        model_dir=Path("models/base"),
        adapter_dir=Path("models/adapter") if which == "adapter" else None,
        eval_path=Path(f"data/prepared/eval/{eval_set}.jsonl"),
        predictions_path=Path(f"reports/predictions/{eval_set}/{which}.jsonl"),
        metrics_path=Path(f"metrics/eval/{eval_set}/{which}.json"),
        confusion_path=Path(f"reports/plots/{eval_set}/confusion_{which}.json"),
    )
    print(f"{which} on {eval_set}: accuracy {metrics['accuracy']:.4f} [{metrics['accuracy_ci_low']:.4f}, "
          f"{metrics['accuracy_ci_high']:.4f}] (chance {metrics['chance_accuracy']}, majority class "
          f"{metrics['majority_class_accuracy']}) on {metrics['examples']} rows in {metrics['seconds']} s")


if __name__ == "__main__":
    run_stage(main, __doc__, ("which", ("base", "adapter")), ("eval_set", None))
