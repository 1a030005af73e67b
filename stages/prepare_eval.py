"""Stage prepare_eval@<set>: data/prepared/eval/<set>.jsonl and metrics/eval/<set>/data.json from `eval_sets.<set>`.

Usage: python stages/prepare_eval.py SET [--params params.yaml]
"""

from pathlib import Path

from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config, eval_set: str) -> None:
    from qlora_diff.eval_sets import prepare_eval_set

    metrics = prepare_eval_set(cfg, eval_set, Path("models/base"), Path("data/prepared/train.jsonl"),
                               Path(f"data/prepared/eval/{eval_set}.jsonl"), Path(f"metrics/eval/{eval_set}/data.json"))
    print(f"{eval_set}: {metrics['eval']['rows']} rows; labels {metrics['eval']['label_counts']}; "
          f"{metrics['pairs_also_in_train']} also in the train rows")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None))
