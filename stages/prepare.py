"""Stage prepare: data/prepared/train.jsonl and metrics/data.json (the fine-tuning rows) from params `data`, `prompt`."""

from pathlib import Path

from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config) -> None:
    from qlora_diff.prepare import prepare_train

    metrics = prepare_train(cfg, Path("models/base"), Path("data/prepared/train.jsonl"), Path("metrics/data.json"))
    print(f"prepared {metrics['train']['rows']} train rows; labels {metrics['train']['label_counts']}")


if __name__ == "__main__":
    run_stage(main, __doc__)
