"""Stage finetune_seed@<seed>: a replicate of the fine-tune with another training seed (one of train.extra_seeds);
writes models/seeds/<seed> and its metrics. Same rows and params as finetune: only the LoRA initialisation and the
order of the training rows change. No training curves (dvclive/ holds train.seed's).

Usage: python stages/finetune_seed.py SEED [--params params.yaml]
"""

from qlora_diff.core import paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config, seed: int) -> None:
    from qlora_diff.model.finetune import finetune

    metrics = finetune(cfg.with_train_seed(seed), model_dir=paths.BASE_MODEL, train_path=paths.TRAIN_ROWS,
                       adapter_dir=paths.replicate_adapter(seed), metrics_path=paths.replicate_finetune_metrics(seed),
                       checkpoint_dir=paths.replicate_checkpoints(seed), live_dir=None)
    print(f"finetune seed {seed}: {metrics['steps']} steps, final loss {metrics['final_loss']}, {metrics['seconds']} s")


if __name__ == "__main__":
    run_stage(main, __doc__, ("seed", None))
