"""Stage prepare_eval@<set>: data/prepared/eval/<set>.jsonl and metrics/eval/<set>/data.json from `eval_sets.<set>`.

Usage: python stages/prepare_eval.py SET [--params params.yaml]
"""

from qlora_diff.core import paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config, eval_set: str) -> None:
    from qlora_diff.data.prepare_eval import prepare_eval_set

    metrics = prepare_eval_set(cfg, eval_set, paths.BASE_MODEL, paths.TRAIN_ROWS, paths.eval_rows(eval_set),
                               paths.eval_data_metrics(eval_set))
    print(f"{eval_set}: {metrics['eval']['rows']} rows; labels {metrics['eval']['label_counts']}; "
          f"{metrics['pairs_also_in_train']} also in the train rows")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None), downloads=lambda cfg, name: cfg.eval_sets[name].source == "hub")
