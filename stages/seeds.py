"""Stage seeds@<set>: the set across training seeds (train.seed and train.extra_seeds): the adapter's accuracy
spread, the gain over the base model with a CI over seeds and rows, the spread per slice and phenomenon
(metrics/eval/<set>/seeds.json), and per row how stable the adapter's answer is (reports/stability/<set>.jsonl).

With one seed it still runs: the gain's CI then covers rows only, and stability is marked not measured.
Usage: python stages/seeds.py SET [--params params.yaml]
"""

import json
from pathlib import Path

from qlora_diff.analysis.compare import join_predictions
from qlora_diff.analysis.explain import attach_features
from qlora_diff.analysis.seeds import seed_report
from qlora_diff.core import atomic, paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config
from qlora_diff.core.errors import InputError


def required(path: Path, stage: str) -> Path:
    """``path``, or a clear error naming the stage that writes it."""
    if not path.is_file():
        raise InputError(f"{path} is missing; run `dvc repro {stage}`.")
    return path


def main(cfg: Config, eval_set: str) -> None:
    base = atomic.read_jsonl(paths.predictions(eval_set, "base"))
    replicates = {cfg.train.seed: atomic.read_jsonl(paths.predictions(eval_set, "adapter"))}
    dtypes = {cfg.train.seed: json.loads(required(paths.FINETUNE_METRICS, "finetune").read_text())["compute_dtype"]}
    primary = paths.eval_metrics(eval_set, "adapter")
    eval_dtypes = {cfg.train.seed: json.loads(required(primary, f"evaluate_adapter@{eval_set}").read_text())
                   .get("compute_dtype")}
    for seed in cfg.train.extra_seeds:
        stage = f"evaluate_seed@{seed}-{eval_set}"
        metrics = json.loads(required(paths.replicate_eval_metrics(eval_set, seed), stage).read_text())
        replicates[seed] = atomic.read_jsonl(required(paths.replicate_predictions(eval_set, seed), stage))
        dtypes[seed] = metrics["fine_tune"]["compute_dtype"]
        eval_dtypes[seed] = metrics.get("compute_dtype")
    pairs = join_predictions(base, replicates[cfg.train.seed], str(paths.predictions(eval_set, "base")),
                             str(paths.predictions(eval_set, "adapter")))
    features = attach_features(pairs, atomic.read_jsonl(paths.slice_rows(eval_set)), str(paths.slice_rows(eval_set)))
    metrics, stability = seed_report(cfg, eval_set, base, replicates, dtypes, features, eval_dtypes)
    atomic.write_jsonl(paths.stability_rows(eval_set), stability)
    atomic.write_json(paths.seed_metrics(eval_set), metrics)
    spread, gain = metrics["adapter"], metrics["gain"]
    print(f"{eval_set}: {metrics['replicates']} seed(s), adapter accuracy mean {spread['accuracy_mean']:.1%} "
          f"(sd {spread['accuracy_sd']:.1%}, {spread['accuracy_min']:.1%} to {spread['accuracy_max']:.1%}); gain "
          f"{gain['mean']:+.1%} [{gain['ci_low']:+.1%}, {gain['ci_high']:+.1%}] over {gain['covers']}")


if __name__ == "__main__":
    run_stage(main, __doc__, ("eval_set", None))
