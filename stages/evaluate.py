"""Stages evaluate_base@<set> / evaluate_adapter@<set>: score one evaluation set; write predictions, metrics, plots.

Usage: python stages/evaluate.py base|adapter SET [--params params.yaml]
"""

from qlora_diff.core import paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config, which: str, eval_set: str) -> None:
    from qlora_diff.model.evaluate import evaluate

    metrics = evaluate(
        cfg, eval_set,
        model_dir=paths.BASE_MODEL,
        adapter_dir=paths.ADAPTER if which == "adapter" else None,
        eval_path=paths.eval_rows(eval_set),
        predictions_path=paths.predictions(eval_set, which),
        metrics_path=paths.eval_metrics(eval_set, which),
        confusion_path=paths.confusion_plot(eval_set, which),
    )
    print(f"{which} on {eval_set}: accuracy {metrics['accuracy']:.4f} [{metrics['accuracy_ci_low']:.4f}, "
          f"{metrics['accuracy_ci_high']:.4f}] (chance {metrics['chance_accuracy']}, majority class "
          f"{metrics['majority_class_accuracy']}) on {metrics['examples']} rows in {metrics['seconds']} s")


if __name__ == "__main__":
    run_stage(main, __doc__, ("which", paths.MODELS), ("eval_set", None))
