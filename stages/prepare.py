"""Stage prepare: data/prepared/train.jsonl and metrics/data.json (the fine-tuning rows) from params `data`, `prompt`."""

from qlora_diff.core import paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config) -> None:
    from qlora_diff.data.prepare import prepare_train

    metrics = prepare_train(cfg, paths.BASE_MODEL, paths.TRAIN_ROWS, paths.TRAIN_DATA_METRICS)
    print(f"prepared {metrics['train']['rows']} train rows; labels {metrics['train']['label_counts']}")


if __name__ == "__main__":
    run_stage(main, __doc__, downloads=lambda cfg: cfg.data.source == "hub")
