"""A second real task from params alone: SNLI's hypotheses without their premises, the hypothesis-only task of
Poliak et al. (2018) and Gururangan et al. (2018). It runs as a DVC experiment of the current commit and is compared
row by row with the default NLI run: how much of the fine-tune's gain can be learned without the premise?

    python benchmarks/second_task.py run       # dvc exp run --temp -n hypothesis-only <OVERRIDES>, then collect
    python benchmarks/second_task.py collect   # read both runs through dvc.api into benchmarks/results/

Results: benchmarks/results/second_task.json, quoted by docs/tasks.md (python -m qlora_diff.tools.readme). It holds,
per set and run, the base and adapter accuracies with CIs and the bag-of-words baseline (for both runs the same
classifier: TF-IDF on the hypothesis), and the run comparison as `python -m qlora_diff.analysis.runs` prints it.
"""

from __future__ import annotations

import argparse
import subprocess

from common import REPO, machine
from seed_study import head_commit, read_metrics

from qlora_diff.analysis.runs import compare_runs, params_at, read_run, render, report_settings
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import load_config

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
    return {"sets": sets, "final_loss": finetune["final_loss"], "finetune_seconds": finetune["seconds"]}


def collect() -> dict:
    cfg = load_config(REPO / "params.yaml")
    names = list(cfg.eval_sets)
    settings_cfg, settings = report_settings(params_at(str(REPO), REFERENCE), REFERENCE)
    differences = compare_runs(read_run(REFERENCE, str(REPO)), read_run(EXPERIMENT, str(REPO)), settings_cfg,
                               REFERENCE, EXPERIMENT)
    result = {"commit": head_commit(), "experiment": EXPERIMENT, "overrides": OVERRIDES, "machine": machine(),
              "reads": READS, "runs": {"nli": summary(REFERENCE, names), EXPERIMENT: summary(EXPERIMENT, names)},
              "comparison": render(differences, REFERENCE, EXPERIMENT, settings=settings)}
    atomic.write_json(RESULT, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "collect"])
    args = parser.parse_args()
    if args.command == "run":
        run()
    result = collect()
    print(result["comparison"])


if __name__ == "__main__":
    main()
