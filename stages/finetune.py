"""Stage finetune: QLoRA-train models/adapter from data/prepared/train.jsonl; writes metrics/finetune.json.

Resumes from checkpoints/finetune/ when a previous run of the same params was interrupted.
With train.num_processes > 1 it relaunches itself under torchrun (data parallel; gloo on CPU, NCCL on GPUs).
"""

import os
import subprocess
import sys

from qlora_diff.core import paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config) -> None:
    if cfg.train.num_processes > 1 and "LOCAL_RANK" not in os.environ:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc_per_node={cfg.train.num_processes}", __file__, *sys.argv[1:]]
        sys.exit(subprocess.run(launch, check=False).returncode)
    from qlora_diff.model.finetune import finetune

    # with_train_seed drops train.extra_seeds: adding replicates must not change this run's checkpoint fingerprint
    metrics = finetune(cfg.with_train_seed(cfg.train.seed), model_dir=paths.BASE_MODEL, train_path=paths.TRAIN_ROWS, adapter_dir=paths.ADAPTER,
                       metrics_path=paths.FINETUNE_METRICS, checkpoint_dir=paths.FINETUNE_CHECKPOINTS,
                       live_dir=paths.LIVE_DIR)
    if metrics:
        print(f"finetune: {metrics['steps']} steps, {metrics['trainable_percent']}% trainable, "
              f"final loss {metrics['final_loss']}, {metrics['seconds']} s")


if __name__ == "__main__":
    run_stage(main, __doc__)
