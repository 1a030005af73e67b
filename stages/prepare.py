"""Stage prepare: data/prepared/{train,eval}.jsonl and metrics/data.json from params `data` and `prompt`."""

from pathlib import Path

from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config) -> None:
    from qlora_diff.prepare import prepare

    metrics = prepare(cfg, Path("models/base"), Path("data/prepared"), Path("metrics/data.json"))
    print(f"prepared {metrics['train']['rows']} train / {metrics['eval']['rows']} eval rows; "
          f"eval labels {metrics['eval']['label_counts']}")


if __name__ == "__main__":
    run_stage(main, __doc__)
