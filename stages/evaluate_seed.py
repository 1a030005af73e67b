"""Stage evaluate_seed@<seed>-<set>: score one evaluation set with the replicate adapter of one training seed;
writes its predictions and metrics (read by the seeds stage), the metrics with how that adapter was trained.

Usage: python stages/evaluate_seed.py SEED SET [--params params.yaml]
"""

import json

from qlora_diff.core import paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config, seed: int, eval_set: str) -> None:
    from qlora_diff.model.evaluate import evaluate

    trained = json.loads(paths.replicate_finetune_metrics(seed).read_text())
    metrics = evaluate(cfg, eval_set, model_dir=paths.BASE_MODEL, adapter_dir=paths.replicate_adapter(seed),
                       eval_path=paths.eval_rows(eval_set), predictions_path=paths.replicate_predictions(eval_set, seed),
                       metrics_path=paths.replicate_eval_metrics(eval_set, seed), confusion_path=None,
                       extra_metrics={"fine_tune": {"seed": seed, **{key: trained[key] for key in (
                           "compute_dtype", "final_loss", "steps")}}})
    print(f"adapter seed {seed} on {eval_set}: accuracy {metrics['accuracy']:.4f} on {metrics['examples']} rows "
          f"in {metrics['seconds']} s")


if __name__ == "__main__":
    run_stage(main, __doc__, ("seed", None), ("eval_set", None))
