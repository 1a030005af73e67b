"""A second real task from params alone: SNLI's hypotheses without their premises, the hypothesis-only task of
Poliak et al. (2018) and Gururangan et al. (2018). It runs as a DVC experiment of the current commit and is compared
row by row with the default NLI run: how much of the fine-tune's gain can be learned without the premise?

    python benchmarks/second_task.py run       # dvc exp run --temp -n hypothesis-only <OVERRIDES>, then collect
    python benchmarks/second_task.py collect   # read both runs through dvc.api into benchmarks/results/

Results: benchmarks/results/second_task.json, quoted by docs/tasks.md (python -m qlora_diff.tools.readme). It holds,
per set and run, the base and adapter accuracies with CIs and the bag-of-words baseline (for both runs TF-IDF +
logistic regression on the hypothesis, fit on that run's own training rows); per set, the share of the default run's
gain that the hypothesis-only fine-tune gains too, with a paired bootstrap CI over rows; and the run comparison as
`python -m qlora_diff.analysis.runs HEAD hypothesis-only` prints it.
"""

from __future__ import annotations

import argparse
import os
import subprocess

import numpy as np
from scipy.stats import bootstrap

from common import REPO, machine
from seed_study import head_commit, read_metrics

from qlora_diff.analysis.runs import (
    compare_runs,
    params_at,
    read_run,
    SEED_STUDY,
    read_jsonl_at,
    render,
    report_settings,
    seed_reference,
    seed_seconds,
    seed_study_sd,
)
from qlora_diff.analysis.compare import index_predictions
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import Config, ReportConfig, load_config

EXPERIMENT = "hypothesis-only"
REFERENCE = "HEAD"
OVERRIDES = ["task=text",   # `dvc exp run -S` values, in Hydra's grammar: quoted, so {hypothesis} stays text
             "prompt.system='Guess how the hypothesis relates to an unseen premise.'",
             "prompt.template='Hypothesis: {hypothesis}\nAnswer entailment, neutral or contradiction.'"]
READS = {"nli": "premise and hypothesis (the default run)", EXPERIMENT: "the hypothesis only"}
RESULT = REPO / "benchmarks" / "results" / "second_task.json"


def run() -> None:
    overrides = [arg for override in OVERRIDES for arg in ("-S", override)]
    subprocess.run(["dvc", "exp", "run", "--temp", "-n", EXPERIMENT, *overrides], cwd=REPO, check=True)


def summary(rev: str, set_names: list[str]) -> dict:
    """Per set, what the run measured: accuracies with CIs, the baselines; and its fine-tune's loss and time."""
    sets = {}
    for name in set_names:
        base, adapter = (read_metrics(rev, paths.eval_metrics(name, which)) for which in ("base", "adapter"))
        baseline = read_metrics(rev, paths.slice_metrics(name))
        sets[name] = {"rows": adapter["examples"], "majority_class_accuracy": base["majority_class_accuracy"],
                      "chance_accuracy": base["chance_accuracy"],
                      **{f"{which}_{key}": metrics[key] for which, metrics in (("base", base), ("adapter", adapter),
                                                                               ("baseline", baseline))
                         for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high")}}
    finetune = read_metrics(rev, paths.FINETUNE_METRICS)
    data = read_metrics(rev, paths.TRAIN_DATA_METRICS)
    return {"sets": sets, "final_loss": finetune["final_loss"], "finetune_seconds": finetune["seconds"],
            "train_rows_removed_for_holdout_overlap": data["train_rows_removed_for_holdout_overlap"]}


def correct(rev: str, set_name: str, which: str, ids: list[str]) -> np.ndarray:
    """1.0 where run ``rev``'s ``which`` model (base or adapter) answered the row right, in ``ids`` order."""
    path = paths.predictions(set_name, which)
    by_id = index_predictions(read_jsonl_at(path, str(REPO), rev), f"{rev}:{path}")
    if sorted(by_id) != sorted(ids):
        raise SystemExit(f"{set_name}: {rev} scored other rows than {REFERENCE}; compare runs with the same eval_sets")
    return np.array([float(by_id[i]["correct"]) for i in ids])


def gain_share(cfg: Config, set_name: str) -> dict:
    """How much of the default run's gain the hypothesis-only run gains too on ``set_name``'s rows."""
    ids = [row["id"] for row in read_jsonl_at(paths.predictions(set_name, "base"), str(REPO), REFERENCE)]
    answers = [correct(rev, set_name, which, ids) for rev in (REFERENCE, EXPERIMENT) for which in ("base", "adapter")]
    return share_of_gain(*answers, report=cfg.report)


def share_of_gain(default_base: np.ndarray, default_adapter: np.ndarray, other_base: np.ndarray,
                  other_adapter: np.ndarray, report: ReportConfig) -> dict:
    """The other run's gain (adapter minus base accuracy) over the default run's, from 0/1 answers on the same
    rows, with a percentile bootstrap CI that resamples rows, all four answers of a row together."""
    share = lambda nb, na, hb, ha, axis: (ha.mean(axis) - hb.mean(axis)) / (na.mean(axis) - nb.mean(axis))
    answers = [default_base, default_adapter, other_base, other_adapter]
    interval = bootstrap(answers, share, paired=True, vectorized=True, n_resamples=report.bootstrap_samples,
                         confidence_level=report.confidence, method="percentile",
                         rng=np.random.default_rng(report.seed), batch=1000).confidence_interval
    return {"share": round(float(share(*answers, axis=-1)), 4), "ci": [round(float(interval.low), 4),
                                                                        round(float(interval.high), 4)],
            "confidence": report.confidence}


def collect() -> dict:
    cfg = load_config(REPO / "params.yaml")
    names = list(cfg.eval_sets)
    settings_cfg, settings = report_settings(params_at(str(REPO), REFERENCE), REFERENCE)
    run_b = read_run(EXPERIMENT, str(REPO))   # as `python -m qlora_diff.analysis.runs HEAD hypothesis-only` reads it
    differences = compare_runs(read_run(REFERENCE, str(REPO)), run_b, settings_cfg, REFERENCE, EXPERIMENT,
                               seed_study_sd())
    markdown = render(differences, REFERENCE, EXPERIMENT, seed_reference(), settings,
                      per_seed_seconds=seed_seconds(list(run_b.replicates)))
    result = {"commit": head_commit(), "experiment": EXPERIMENT, "overrides": OVERRIDES, "machine": machine(),
              "reads": READS, "runs": {"nli": summary(REFERENCE, names), EXPERIMENT: summary(EXPERIMENT, names)},
              "gain_share": {name: gain_share(cfg, name) for name in names},
              "comparison": markdown}
    atomic.write_json(RESULT, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "collect"])
    args = parser.parse_args()
    os.chdir(REPO)   # the seed study and the workspace metrics are read relative to the repository
    if args.command == "run":
        run()
    result = collect()
    print(result["comparison"])


if __name__ == "__main__":
    main()
