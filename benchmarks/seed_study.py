"""The committed seed study: how far the default run moves with the training seed, and the price list of the knobs: for
each cheaper or faster config, the accuracy difference against the default once the seed noise is counted, its
margin verdict (``analysis/margin.py``) and the fine-tune time. Every number comes from DVC experiments of this
repository; nothing is typed.

    python benchmarks/seed_study.py run       # one `dvc exp run --temp` per config below, then collect
    python benchmarks/seed_study.py collect   # read the experiments through dvc.api into benchmarks/results/
    python benchmarks/seed_study.py compare [--margin 2]   # recompute the comparisons from the committed tables

Each config is an experiment named ``seed-study-<config>`` on the current commit: the default params with 5 seeds in
all (train.extra_seeds), and challengers with 3 seeds each: lora.r=8; bf16 training and evaluation; 2,000 training
rows instead of 3,000. Seed 42 of the default config is the committed run itself, so DVC trains only the
replicates (finetune_seed@<seed>); a challenger trains all its seeds. In float32 on 2 cores a seed takes 12 to 15
minutes (fine-tune and evaluations): the whole study 2.5 to 3 hours. ``run`` is resumable config by config: a config
collected at the current commit is skipped (``--force`` reruns it), and ``run --only r8`` runs one.

``collect`` writes each config's summary and, per set, every seed's predictions as a compact table (row ids and gold
labels once, one character per row and seed). Experiments are local git refs that a clone does not carry; the
tables are committed, so ``compare`` recomputes every comparison in a fresh clone, with another margin if asked.
Configs whose experiments are not here keep their committed entries (each names its commit and machine); a config
never run is reported as missing. When either config of a comparison is rerun elsewhere, the comparison is reported
as stale (with the verdict it had) until both sides have tables again.

Results: benchmarks/results/seed_study.json, quoted by the README (python -m qlora_diff.tools.readme).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
from dataclasses import replace
from pathlib import Path

import yaml
from common import REPO, device, machine, machine_key

from qlora_diff.analysis.compare import index_predictions
from qlora_diff.analysis.runs import SEED_STUDY, Run, compare_runs, label_shifts, read_run
from qlora_diff.core import atomic, paths
from qlora_diff.core.config import load_config
from qlora_diff.core.runtime import NATIVE_BF16_CPU_FLAGS, bf16_native
from qlora_diff.tools.readme import seed_study

CONFIGS = {   # config -> `dvc exp run -S` overrides
    "default": ["train.extra_seeds=[1,2,3,4]"],
    "r8": ["lora.r=8", "train.extra_seeds=[1,2]"],
    "bf16": ["quant.compute_dtype=bfloat16", "eval.compute_dtype=bfloat16", "train.extra_seeds=[1,2]"],
    "train2000": ["data.train_size=2000", "train.extra_seeds=[1,2]"],
}
CODE_DIRS = ("src/", "stages/")   # what a stage runs; data, params and models are the inputs the configs vary
NEEDS_NATIVE_BF16 = {"bf16"}   # its question is what bf16's speed costs: moot where bf16 is emulated
REFERENCE = "default"
QUESTIONS = {   # challenger -> what comparing it with the reference asks
    "r8": "r=8 against r=16",
    "bf16": "bf16 compute against float32",
    "train2000": "2,000 training rows against 3,000",
}


def experiment(config: str) -> str:
    return f"seed-study-{config}"


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def run(configs: list[str], force: bool = False) -> None:
    """One experiment per config; a config the study already holds from this commit is skipped (rerun it with
    --force), so a study interrupted after some configs resumes where it stopped."""
    done = {config for config, entry in _read_study().get("configs", {}).items()
            if entry.get("baseline_commit") == head_commit() and "tables" in entry}
    where = device()
    for config in configs:
        if config in done and not force:
            print(f"seed study: {config}: collected at this commit already (--force reruns it)", flush=True)
            continue
        if config in NEEDS_NATIVE_BF16 and not bf16_native(where) and not force:
            print(f"seed study: {config}: skipped: {where} has no native bf16, so bf16 runs emulated here, several "
                  "times slower than float32, and its time prices nothing; run it on a CPU with "
                  f"{' or '.join(sorted(NATIVE_BF16_CPU_FLAGS))} or a CUDA GPU from Ampere on (--force runs it here)",
                  flush=True)
            continue
        overrides = [arg for override in CONFIGS[config] for arg in ("-S", override)]
        print(f"seed study: {config}: dvc exp run --temp -n {experiment(config)} {' '.join(overrides)}", flush=True)
        subprocess.run(["dvc", "exp", "run", "--temp", "-n", experiment(config), *overrides], cwd=REPO,
                       check=True)


def exists(config: str) -> bool:
    done = subprocess.run(["dvc", "exp", "list", "--name-only", "--all-commits"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return experiment(config) in done.stdout.split()


def read_text(rev: str, path: Path | str) -> str:
    """A file as the experiment ``rev`` left it, git-tracked or a DVC output."""
    import dvc.api

    return dvc.api.read(str(path), repo=str(REPO), rev=rev, encoding="utf-8")


def read_metrics(rev: str, path: Path) -> dict:
    return json.loads(read_text(rev, path))


def baseline_commit(config: str) -> str:
    """The commit the experiment ran on (its ref is refs/exps/<sha[:2]>/<sha[2:]>/<name>)."""
    done = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    refs = [ref.split("/") for ref in done.stdout.split() if ref.endswith(f"/{experiment(config)}")]
    return refs[-1][2] + refs[-1][3] if refs else ""


def pipeline_code(lock_text: str) -> str:
    """A fingerprint of the code the pipeline ran: the dvc.lock hashes of every stage's src/ and stages/
    dependencies. Configs run at different commits with one fingerprint ran the same code, so commits that changed
    only docs, tests or benchmarks do not split the study."""
    stages = yaml.safe_load(lock_text)["stages"]
    pairs = sorted({(dep["path"], dep["md5"]) for stage in stages.values() for dep in stage.get("deps", [])
                    if dep["path"].startswith(CODE_DIRS)})
    return hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()[:12]


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
    seeds = [int(seed) for seed in sets[set_names[0]]["seeds"]]
    finetunes = [read_metrics(rev, paths.FINETUNE_METRICS if seed == seeds[0] else paths.replicate_finetune_metrics(seed))
                 for seed in seeds]
    evaluations = [[read_metrics(rev, paths.eval_metrics(name, "adapter") if seed == seeds[0]
                                 else paths.replicate_eval_metrics(name, seed)) for name in set_names] for seed in seeds]
    # medians over seeds: train.seed's fine-tune and evaluations may be the committed ones, timed on another day
    return {"experiment": rev, "baseline_commit": baseline_commit(config), "overrides": CONFIGS[config],
            "pipeline_code": pipeline_code(read_text(rev, "dvc.lock")),
            "finetune_seconds": statistics.median(metrics["seconds"] for metrics in finetunes),
            "eval_seconds": statistics.median(sum(metrics["seconds"] for metrics in seed) for seed in evaluations),
            "sets": sets, "tables": tables(read_run(rev, str(REPO)))}


def committed_run_timing(set_names: list[str]) -> dict | None:
    """The committed run's fine-tune and adapter-evaluation seconds (this checkout's metrics, from `dvc repro` of the
    default params) when this machine made them: the same-machine reference for a config collected on another machine
    than the default config's seeds, whose own times would compare two machines."""
    read = lambda path: json.loads((REPO / path).read_text(encoding="utf-8"))
    finetune = read(paths.FINETUNE_METRICS)
    evaluations = [read(paths.eval_metrics(name, "adapter")) for name in set_names]
    here = machine_key(machine())
    if any(machine_key(metrics["machine"]) != here for metrics in [finetune, *evaluations]):
        return None
    return {"commit": head_commit(), "finetune_seconds": finetune["seconds"],
            "eval_seconds": sum(metrics["seconds"] for metrics in evaluations)}


def timing(challenger: str, configs: dict[str, dict]) -> dict | None:
    """The challenger's fine-tune and evaluation seconds beside the default's on the same machine: the default
    config's seeds where they ran on the challenger's machine, else the committed run recorded there; None when
    neither was timed on it (a ratio across machines would price the machine, not the knob)."""
    entry, reference = configs[challenger], configs[REFERENCE]
    if machine_key(entry["machine"]) == machine_key(reference["machine"]):
        times, committed_run = reference, None
    elif entry.get("committed_run_timing"):
        times = entry["committed_run_timing"]
        committed_run = times["commit"]
    else:
        return None
    return {"committed_run": committed_run,   # None: against the reference config's own seeds
            **{key: [entry.get(key), times.get(key)] for key in ("finetune_seconds", "eval_seconds")}}


def tables(run: Run) -> dict[str, dict]:
    """Per evaluation set, every seed's predictions in a compact, committable form: the row ids and gold labels
    once, and per seed one character per row, the index of its predicted label in ``labels``. A clone has no
    experiment refs; these are what the comparisons are recomputed from (``compare``)."""
    out = {}
    for name, seeds in run.replicates.items():
        first = next(iter(seeds.values()))
        labels = sorted({row["prediction"] for rows in seeds.values() for row in rows} | {row["gold"] for row in first})
        if len(labels) > 10:
            raise ValueError(f"eval set {name!r}: {len(labels)} labels; the compact table holds at most 10")
        order = [row["id"] for row in first]
        by_seed = {seed: index_predictions(rows, f"eval set {name!r}, seed {seed}") for seed, rows in seeds.items()}
        out[name] = {"ids": order, "gold": [row["gold"] for row in first], "labels": labels,
                     "predictions": {str(seed): "".join(str(labels.index(by_id[i]["prediction"])) for i in order)
                                     for seed, by_id in by_seed.items()}}
    return out


def table_run(entry: dict) -> Run:
    """A config's committed tables as a ``runs.Run`` (rows with id, gold, prediction and correct)."""
    replicates = {}
    for name, table in entry["tables"].items():
        replicates[name] = {int(seed): [{"id": i, "gold": gold, "prediction": table["labels"][int(code)],
                                         "correct": table["labels"][int(code)] == gold}
                                        for i, gold, code in zip(table["ids"], table["gold"], predicted)]
                            for seed, predicted in table["predictions"].items()}
    return Run(replicates=replicates)


def comparison(challenger: str, configs: dict[str, dict], cfg) -> dict:
    """The challenger against the reference, from their committed tables, per evaluation set: seed-level means, the
    CI over seeds and rows, the margin verdict and the plan; and how far the challenger moved the share of each
    predicted label."""
    reference, challenging = table_run(configs[REFERENCE]), table_run(configs[challenger])
    differences = compare_runs(reference, challenging, cfg, REFERENCE, challenger)
    return {"question": QUESTIONS[challenger], "experiments": [experiment(REFERENCE), experiment(challenger)],
            "baseline_commits": {config: configs[config]["baseline_commit"] for config in (REFERENCE, challenger)},
            "margin": cfg.report.equivalence_margin, "confidence": cfg.report.confidence,
            "sets": [{"set": d.set_name, "seeds_a": d.seeds.seeds_a, "seeds_b": d.seeds.seeds_b,
                      "mean_a": round(d.seeds.mean_a, 4), "mean_b": round(d.seeds.mean_b, 4),
                      # unrounded: the README rounds it to 0.1 points from the value the verdict sentence rounds
                      "delta": d.seeds.delta, "ci": [d.seeds.ci_low, d.seeds.ci_high],
                      "beyond_noise": d.seeds.beyond_noise, "margin_verdict": d.margin_verdict,
                      "verdict": d.verdict(REFERENCE, challenger),
                      "mdd": round(d.plan.mdd, 4) if d.plan else None,
                      "seeds_per_side": d.plan.seeds_per_side if d.plan else None}
                     for d in differences],
            "label_shifts": label_shifts(reference, challenging, cfg, REFERENCE, challenger),
            "timing": timing(challenger, configs)}


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


def _read_study() -> dict:
    return json.loads((REPO / SEED_STUDY).read_text(encoding="utf-8")) if (REPO / SEED_STUDY).is_file() else {}


def collect(cfg) -> dict:
    """Refresh the configs whose experiments this repository has, keep the committed entries of the others."""
    present = [config for config in CONFIGS if exists(config)]
    run_timing = committed_run_timing(list(cfg.eval_sets))
    fresh = {config: {**config_summary(config, list(cfg.eval_sets)), "machine": machine(),
                      **({"committed_run_timing": run_timing} if run_timing and config != REFERENCE else {})}
             for config in present}
    return compare(merge(_read_study(), fresh, {}), cfg)


def compare(study: dict, cfg) -> dict:
    """Recompute every comparison whose two configs have committed tables (a fresh clone can: no experiment is
    read), with ``cfg``'s report settings; the others keep their entries."""
    configs = study["configs"]
    fresh = {challenger: comparison(challenger, configs, cfg) for challenger in QUESTIONS
             if "tables" in configs.get(REFERENCE, {}) and "tables" in configs.get(challenger, {})}
    return merge(study, {}, fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "collect", "compare"))
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only this config")
    parser.add_argument("--force", action="store_true", help="rerun configs already collected at this commit")
    parser.add_argument("--margin", type=float, help="equivalence margin in points (default: report's)")
    args = parser.parse_args()
    cfg = load_config(REPO / "params.yaml")
    if args.margin is not None:
        cfg = replace(cfg, report=replace(cfg.report, equivalence_margin=args.margin))
    if args.action == "run":
        run(args.only or list(CONFIGS), args.force)
    study = compare(_read_study(), cfg) if args.action == "compare" else collect(cfg)
    atomic.write_json(REPO / SEED_STUDY, study)
    print(seed_study(REPO))   # the README's block, from the file just written


if __name__ == "__main__":
    main()
