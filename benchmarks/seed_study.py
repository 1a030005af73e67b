"""The committed seed study: how far the default run moves with the training seed, and whether a changed knob beats
the default once that noise is counted. Every number comes from DVC experiments of this repository; nothing is typed.

    python benchmarks/seed_study.py run       # one `dvc exp run --temp` per config below, then collect
    python benchmarks/seed_study.py collect   # read the experiments through dvc.api into benchmarks/results/

Each config is an experiment named ``seed-study-<config>`` on the current commit: the default params with
train.extra_seeds (5 seeds in all), and challengers with 3 seeds each: lora.r=8, and length-grouped batches
(train.group_by_length, less padding; does the batch order cost accuracy?); and with 5 seeds, peft's float32 upcast
of the frozen weights with SDPA attention (train.upcast_frozen, train.attention: the training before they became
knobs, and slower; does training the frozen weights in bf16 cost accuracy?). Seed 42 of the default config is the
committed run itself, so DVC trains only the replicates (finetune_seed@<seed>); a challenger trains all its seeds. About
15-20 minutes a seed in float32 on a 2-core AMD EPYC without AVX512-BF16, 6-8 in bf16 with it. `run --only r8` runs one config.

Experiments live in the local git refs (share them with `dvc exp push`). `collect` refreshes the configs whose
experiments are here and keeps the committed entries of the others (each names its commit and machine), so the
study can grow one config at a time; a config never run is reported as missing. Each comparison records the commits
of both configs' experiments; when either config is rerun elsewhere, the comparison is reported as stale (with the
verdict it had) until its challenger is rerun beside the reference.

Results: benchmarks/results/seed_study.json, quoted by the README (python -m qlora_diff.tools.readme).
"""

from __future__ import annotations

import argparse
import json
import subprocess

from common import REPO, machine

from qlora_diff.analysis.runs import SEED_STUDY, compare_runs, label_shifts, read_run
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import load_config
from qlora_diff.tools.readme import seed_study

CONFIGS = {   # config -> `dvc exp run -S` overrides
    "default": ["train.extra_seeds=[1,2,3,4]"],
    "r8": ["lora.r=8", "train.extra_seeds=[1,2]"],
    "grouped": ["train.group_by_length=true", "train.extra_seeds=[1,2]"],
    "upcast": ["train.upcast_frozen=true", "train.attention=sdpa", "train.extra_seeds=[1,2,3,4]"],
}
REFERENCE = "default"
QUESTIONS = {   # challenger -> what comparing it with the reference asks
    "r8": "r=8 against r=16",
    "grouped": "length-grouped batches against random ones",
    "upcast": "float32 frozen weights and SDPA (peft's upcast, the earlier default) against the compute dtype and eager attention",
}


def experiment(config: str) -> str:
    return f"seed-study-{config}"


def run(configs: list[str]) -> None:
    for config in configs:
        overrides = [arg for override in CONFIGS[config] for arg in ("-S", override)]
        print(f"seed study: {config}: dvc exp run --temp -n {experiment(config)} {' '.join(overrides)}", flush=True)
        subprocess.run(["dvc", "exp", "run", "--temp", "-n", experiment(config), *overrides], cwd=REPO,
                       check=True)


def exists(config: str) -> bool:
    done = subprocess.run(["dvc", "exp", "list", "--name-only", "--all-commits"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return experiment(config) in done.stdout.split()


def read_metrics(rev: str, path: Path) -> dict:
    import dvc.api

    return json.loads(dvc.api.read(str(path), repo=str(REPO), rev=rev, encoding="utf-8"))


def baseline_commit(config: str) -> str:
    """The commit the experiment ran on (its ref is refs/exps/<sha[:2]>/<sha[2:]>/<name>)."""
    done = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    refs = [ref.split("/") for ref in done.stdout.split() if ref.endswith(f"/{experiment(config)}")]
    return refs[-1][2] + refs[-1][3] if refs else ""


def config_summary(config: str, set_names: list[str]) -> dict:
    """Per evaluation set, what the experiment's seeds stage measured (metrics/eval/<set>/seeds.json)."""
    rev = experiment(config)
    sets = {}
    for name in set_names:
        seeds = read_metrics(rev, paths.seed_metrics(name))
        base = read_metrics(rev, paths.eval_metrics(name, "base"))
        sets[name] = {"base_accuracy": base["accuracy"],
                      **{key: seeds[key] for key in ("seeds", "compute_dtype", "adapter", "adapter_accuracy_by_seed",
                                                     "gain", "stability", "primary_seed_transitions", "phenomena")}}
    return {"experiment": rev, "baseline_commit": baseline_commit(config), "overrides": CONFIGS[config], "sets": sets}


def comparison(challenger: str, cfg) -> dict:
    """The challenger against the reference, per evaluation set: seed-level means and the two-level CI, and how far
    the challenger moved the share of each predicted label."""
    reference, challenging = read_run(experiment(REFERENCE), str(REPO)), read_run(experiment(challenger), str(REPO))
    differences = compare_runs(reference, challenging, cfg, REFERENCE, challenger)
    return {"question": QUESTIONS[challenger], "experiments": [experiment(REFERENCE), experiment(challenger)],
            "baseline_commits": {config: baseline_commit(config) for config in (REFERENCE, challenger)},
            "sets": [{"set": d.set_name, "seeds_a": d.seeds.seeds_a, "seeds_b": d.seeds.seeds_b,
                      "mean_a": round(d.seeds.mean_a, 4), "mean_b": round(d.seeds.mean_b, 4),
                      "delta": round(d.seeds.delta, 4), "ci": [d.seeds.ci_low, d.seeds.ci_high],
                      "beyond_noise": d.seeds.beyond_noise, "verdict": d.verdict(REFERENCE, challenger)}
                     for d in differences],
            "label_shifts": label_shifts(reference, challenging, cfg, REFERENCE, challenger)}


def current(comparison_entry: dict, configs: dict[str, dict]) -> bool:
    """Whether a comparison was computed from the experiments the study's config entries now describe: a config
    rerun on another commit (say the reference, after a default changed) leaves the comparisons made against its
    earlier experiments stale."""
    commits = comparison_entry.get("baseline_commits", {})
    return bool(commits) and all(configs.get(config, {}).get("baseline_commit") == commit
                                 for config, commit in commits.items())


def merge(previous: dict, fresh: dict[str, dict], fresh_comparisons: dict[str, dict]) -> dict:
    """The study file: fresh entries where this repository has the experiments, the previous file's elsewhere
    (experiments are local refs and do not travel with a clone), and the configs in neither as missing. A kept
    comparison whose experiments are no longer the configs' entries moves to ``stale``, with its old verdict."""
    configs = {config: fresh.get(config) or previous.get("configs", {}).get(config) for config in CONFIGS}
    configs = {config: entry for config, entry in configs.items() if entry}
    earlier = {**previous.get("stale", {}), **previous.get("comparisons", {})}
    comparisons = {challenger: fresh_comparisons.get(challenger) or earlier.get(challenger) for challenger in QUESTIONS}
    comparisons = {challenger: entry for challenger, entry in comparisons.items() if entry}
    return {"configs": configs,
            "missing": [config for config in CONFIGS if config not in configs],
            "comparisons": {c: entry for c, entry in comparisons.items() if current(entry, configs)},
            "stale": {c: entry for c, entry in comparisons.items() if not current(entry, configs)}}


def collect() -> dict:
    cfg = load_config(REPO / "params.yaml")
    previous = json.loads((REPO / SEED_STUDY).read_text(encoding="utf-8")) if (REPO / SEED_STUDY).is_file() else {}
    present = [config for config in CONFIGS if exists(config)]
    fresh = {config: {**config_summary(config, list(cfg.eval_sets)), "machine": machine()} for config in present}
    comparisons = {challenger: comparison(challenger, cfg) for challenger in QUESTIONS
                   if REFERENCE in present and challenger in present}
    return merge(previous, fresh, comparisons)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "collect"))
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only this config")
    args = parser.parse_args()
    if args.action == "run":
        run(args.only or list(CONFIGS))
    atomic.write_json(REPO / SEED_STUDY, collect())
    print(seed_study(REPO))   # the README's block, from the file just written


if __name__ == "__main__":
    main()
