"""Keep the numbers in the README and the docs pages equal to the files they come from.

Blocks between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` are rendered from ``metrics/`` and
``benchmarks/results/``; nothing in them is typed by hand. Run after ``dvc repro`` or a benchmark:

    python -m qlora_diff.tools.readme            # rewrite the blocks of README.md and docs/*.md
    python -m qlora_diff.tools.readme --check    # exit 1 when a block is stale (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

from qlora_diff.analysis.margin import MAX_SEEDS
from qlora_diff.analysis.runs import SEED_STUDY
from qlora_diff.core import paths
from qlora_diff.render.report import frozen_weights_and_attention, machine_summary

BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def _load(root: Path, path: Path) -> dict:
    return json.loads((root / path).read_text(encoding="utf-8"))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _ci(m: dict) -> str:
    return f"[{100 * m['accuracy_ci_low']:.1f}, {100 * m['accuracy_ci_high']:.1f}]"


def _set_names(root: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load((root / "params.yaml").read_text())["eval_sets"])


def results(root: Path) -> str:
    tune = _load(root, paths.FINETUNE_METRICS)
    rows, counts = [], []
    for name in _set_names(root):
        base, adapter, diff = (_load(root, path) for path in (paths.eval_metrics(name, "base"), paths.eval_metrics(name, "adapter"), paths.compare_metrics(name)))
        rows.append([f"`{name}`", f"{diff['examples']:,}", f"{_pct(base['chance_accuracy'])} / {_pct(base['majority_class_accuracy'])}",
                     f"{_pct(base['accuracy'])} {_ci(base)}", f"**{_pct(adapter['accuracy'])}** {_ci(adapter)}",
                     f"{100 * diff['accuracy_delta']:+.1f} [{100 * diff['accuracy_delta_ci_low']:+.1f}, "
                     f"{100 * diff['accuracy_delta_ci_high']:+.1f}]",
                     f"{diff['corrected']} / {diff['regressed']}", f"{diff['mcnemar_p_value']:.2g}"])
        bias = diff["label_bias"]
        counts += [[f"`{name}`", who, ", ".join(f"{label} {bias[who][label]}" for label in bias["gold"])]
                   for who in ("gold", "base", "adapter")]
    level = f"{100 * base['ci_confidence']:g}%"
    table = tabulate(rows, headers=["set", "rows", "chance / majority", f"base [{level} CI]", f"adapter [{level} CI]",
                                    "difference, points [paired CI]", "corrected / regressed", "McNemar p"],
                     tablefmt="github")
    return "\n".join([
        table, "",
        f"Fine-tuning: {tune['parameters_trainable']:,} of {tune['parameters_total']:,} parameters trainable "
        f"({tune['trainable_percent']:.2f}%, adapter {tune['adapter_size_mb']:.1f} MB), {tune['steps']} steps, final "
        f"loss {tune['final_loss']}, {tune['seconds']:.0f} s in {tune['compute_dtype']} compute "
        f"({frozen_weights_and_attention(tune)}) on {tune['device']}, "
        f"peak memory {tune['peak_memory_gb']:.1f} GB.", "",
        "How often each label is the gold label and how often each model predicts it:", "",
        tabulate(counts, headers=["set", "", "label counts"], tablefmt="github"),
    ])


def timing(root: Path) -> str:
    """Seconds of the default run's heavy stages, as their metrics files recorded them, with each one's dtype."""
    tune = _load(root, paths.FINETUNE_METRICS)
    rows = [["finetune", tune["compute_dtype"], f"{tune['seconds']:.0f}",
             f"{tune['tokens_per_second']} tokens/s ({tune['tokens_seen']:,} tokens, {tune['shared_prefix_tokens']} "
             "shared prefix tokens once per batch)"]]
    for name in _set_names(root):
        for model in paths.MODELS:
            m = _load(root, paths.eval_metrics(name, model))
            rows.append([f"evaluate_{model}@{name}", m["compute_dtype"], f"{m['seconds']:.0f}",
                         f"{m['examples_per_second']} rows/s ({m['examples']:,} rows)"])
    return tabulate(rows, headers=["stage", "compute dtype", "seconds", "throughput"], tablefmt="github")


def _section(markdown: str, heading: str, until: str) -> str:
    start = markdown.index(f"### {heading}\n") + len(f"### {heading}\n")
    return markdown[start:markdown.index(f"### {until}\n")].strip()


def explanations(root: Path) -> str:
    """Per set, the "Explanations" section of its generated report: hypothesis-only baseline, hard-vs-easy gain
    and the tested findings."""
    parts = []
    for name in _set_names(root):
        report = (root / paths.set_report(name)).read_text(encoding="utf-8")
        parts += [f"**`{name}`**", "", _section(report, "Explanations", "Accuracy by slice"), ""]
    return "\n".join(parts)


def calibration(root: Path) -> str:
    """Per set and model: ECE, Brier, the confidence gap and accuracy under every decision rule; then the gain
    split and the near-tie counts."""
    rows, lines = [], []
    for name in _set_names(root):
        diff = _load(root, paths.compare_metrics(name))
        for who in ("base", "adapter"):
            cal = _load(root, paths.eval_metrics(name, who))["calibration"]
            gap_low, gap_high = cal["confidence_minus_accuracy_ci"]
            rows.append([f"`{name}`", who, cal["ece"], cal["brier"],
                         f"{100 * cal['confidence_minus_accuracy']:+.1f} [{100 * gap_low:+.1f}, {100 * gap_high:+.1f}]",
                         *(_pct(cal["accuracy_by_rule"][rule]["accuracy"])
                           for rule in ("raw", "contextual", "batch", "length_normalised"))])
        for rule, split in diff["prior_split"].items():
            low, high = split["prior_gain_ci"]
            beyond_low, beyond_high = split["adapter_raw_beyond_prior_ci"]
            lines.append(f"- `{name}`, {rule} calibration: the base model goes from {_pct(split['base_raw_accuracy'])} "
                         f"to {_pct(split['base_calibrated_accuracy'])} by recalibrating its label prior alone "
                         f"({100 * split['prior_gain']:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}]); the adapter's raw "
                         f"argmax adds {100 * split['adapter_raw_beyond_prior']:+.1f} [{100 * beyond_low:+.1f}, "
                         f"{100 * beyond_high:+.1f}] beyond that.")
        lines.append(f"- `{name}`, near-ties (margin < {diff['near_tie_margin']:g} nats in either model): "
                     f"{diff['corrected_near_tie']} of {diff['corrected']} corrected and {diff['regressed_near_tie']} "
                     f"of {diff['regressed']} regressed rows; without them McNemar p = "
                     f"{diff['mcnemar_p_value_beyond_noise']:.2g}.")
    table = tabulate(rows, headers=["set", "model", "ECE", "Brier", "confidence - accuracy, points [CI]",
                                    "raw argmax", "contextual", "batch", "acc_norm"], tablefmt="github")
    return "\n".join([table, "", *lines])


def _machine(result: dict) -> str:
    """The machine line of a seed-study entry: its fingerprint, or the fields an older entry recorded."""
    machine = result["machine"]
    if "cpu_flags" in machine:
        return f"Machine: {machine_summary(machine)}."
    return f"Machine: {', '.join(f'{key} {value}' for key, value in machine.items())}."


BENCHMARKS = ("batch_invariance", "dtype_agreement", "eval_numerics", "eval_throughput", "html_report",
              "kernel_dispatch", "lm_eval_agreement", "repro_fresh_clone", "threads",
              "train_throughput")   # benchmarks/<name>.py -> results/<name>.json
ROW_KEYS = {   # benchmark -> the columns that name a row: several machines' runs share one table, keyed by them
    "batch_invariance": ("model", "compute dtype", "eval.batch_size"),
    "repro_fresh_clone": ("run", "step"),
    "threads": ("runtime.threads", "eval rows", "train steps"),
}


def machine_letters(runs: list[dict]) -> list[str]:
    """The labels of several machines' runs in one table: A, B, ... in run order."""
    return [chr(ord("A") + i) for i in range(len(runs))]


def machines_table(runs: list[dict], keys: tuple[str, ...]) -> str:
    """Several machines' results as one table: a row per key, and each other column once per machine, labelled
    A, B, ... in run order (a blank cell: that machine has no such row). A key only a later run has goes after the
    key it follows in that run, so each run's order holds."""
    letters = machine_letters(runs)
    values = [column for column in runs[0]["results"][0] if column not in keys]
    order, cells = [], {}
    for letter, run in zip(letters, runs):
        position = 0
        for row in run["results"]:
            key = tuple(row[column] for column in keys)
            if key not in cells:
                order.insert(position, key)
            position = order.index(key) + 1
            cells.setdefault(key, {}).update({(column, letter): row[column] for column in values})
    return tabulate([[*key, *(cells[key].get((column, letter), "") for column in values for letter in letters)]
                     for key in order],
                    headers=[*keys, *(f"{column} ({letter})" for column in values for letter in letters)],
                    tablefmt="github")


def benchmark(name: str) -> Callable[[Path], str]:
    """A benchmark's results file: per machine that ran it, the machine, the commit, the table and the notes; with
    several machines and row keys (``ROW_KEYS``), one table with a column per machine, and the notes every run
    shares once."""
    def render(root: Path) -> str:
        path = root / "benchmarks" / "results" / f"{name}.json"
        if not path.is_file():
            return f"Not run yet: `python benchmarks/{name}.py`."
        runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
        if len(runs) > 1 and name in ROW_KEYS:
            letters = machine_letters(runs)
            shared = [note for note in runs[0]["notes"] if all(note in run["notes"] for run in runs)]
            return "\n".join([*(f"**{letter}: {machine_summary(run['machine'])}**, commit {run['commit']}  "
                                for letter, run in zip(letters, runs)), "", machines_table(runs, ROW_KEYS[name]),
                              "", *(f"- {note}" for note in shared),
                              *(f"- {letter}: {note}" for letter, run in zip(letters, runs) for note in run["notes"]
                                if note not in shared), ""])
        parts = []
        for run in runs:
            rows = run["results"]
            parts += [f"**{machine_summary(run['machine'])}**, commit {run['commit']}:", "",
                      tabulate([list(r.values()) for r in rows], headers=list(rows[0]), tablefmt="github"), "",
                      *(f"- {note}" for note in run["notes"]), ""]
        return "\n".join(parts)

    return render


def _default_run_lines(name: str, s: dict) -> list[str]:
    """What the study says of the committed run on one set: its rank among the seeds, how many of its corrected and
    regressed rows are seed-dependent, and the phenomenon that moves most across seeds."""
    lines = []
    by_seed, primary, mean = s["adapter_accuracy_by_seed"], str(s["seeds"][0]), s["adapter"]["accuracy_mean"]
    if len(by_seed) > 1:
        better = sum(accuracy > by_seed[primary] for accuracy in by_seed.values())
        lines.append(f"`{name}`: the committed run (train.seed {primary}, {_pct(by_seed[primary])}) ranks "
                     f"{better + 1} of {len(by_seed)} seeds by accuracy (1 = best); a new seed should expect "
                     f"the mean, {_pct(mean)}.")
    moved = s["primary_seed_transitions"]
    if moved:
        lines.append(f"`{name}`: of the default run's {moved['corrected']} corrected rows, "
                     f"{moved['corrected_seed_dependent']} are seed-dependent (another seed gets them wrong); "
                     f"of its {moved['regressed']} regressed rows, {moved['regressed_seed_dependent']}. "
                     f"{s['stability']['seed-dependent']} of all rows are seed-dependent.")
    widest = max(s["phenomena"].items(), key=lambda item: item[1]["accuracy_max"] - item[1]["accuracy_min"],
                 default=None)
    if widest:
        lines.append(f"`{name}`: the widest phenomenon is `{widest[0]}`, "
                     f"{_pct(widest[1]['accuracy_min'])} to {_pct(widest[1]['accuracy_max'])} across seeds.")
    return lines


def _commits(comparison: dict) -> str:
    """Which commit each side of a seed-study comparison ran on: "`default` 81ffc7a, `r8` 24e7699"."""
    return ", ".join(f"`{config}` {commit[:7]}" for config, commit in comparison.get("baseline_commits", {}).items()) \
        or "unrecorded commits"


def _label_shift_line(challenger: str, comparison: dict) -> str:
    """Which predicted-label shares the challenger moved beyond the seed noise, of every set x label tested."""
    shifts = comparison["label_shifts"]
    moved = [f"`{s['set']}` {s['label']} {_pct(s['share_a'])} -> {_pct(s['share_b'])} "
             f"({100 * (s['share_b'] - s['share_a']):+.1f} [{100 * s['ci'][0]:+.1f}, {100 * s['ci'][1]:+.1f}])"
             for s in shifts if s["beyond_noise"]]
    head = (f"{comparison['question']}: predicted-label shares, `{challenger}` against the reference (means over "
            f"seeds; CIs over seeds and rows at {shifts[0]['confidence']:.1%}, Bonferroni over {len(shifts)} set x "
            "label tests): ")
    if not moved:
        return head + "every share within the seed noise."
    return head + f"{', '.join(moved)} beyond the seed noise; the other {len(shifts) - len(moved)} within it."


def moved_since_study(root: Path, default: dict) -> list[str]:
    """The sets whose committed base or train.seed adapter accuracy is not the seed study's: then the study is of
    an earlier pipeline (another dtype, kernel or code), and what it says of "the committed run" would be false."""
    moved = []
    for name, s in default["sets"].items():
        base, adapter = (root / paths.eval_metrics(name, model) for model in ("base", "adapter"))
        committed = [json.loads(p.read_text(encoding="utf-8"))["accuracy"] if p.is_file() else None
                     for p in (base, adapter)]
        if committed != [s["base_accuracy"], s["adapter_accuracy_by_seed"][str(s["seeds"][0])]]:
            moved.append(name)
    return moved


def _cost(timing: dict | None, key: str) -> str:
    """A challenger's seconds and their ratio to the default's on the same machine (``seed_study.timing``)."""
    if not timing:
        return "no default timed on its machine"
    seconds, reference = timing[key]
    if seconds is None:
        return "not recorded"
    return f"{seconds:.0f}" + (f" ({seconds / reference:.2f}x)" if reference else "")


def price_list(study: dict) -> tuple[str, list[str]]:
    """What each knob costs and buys against the default: fine-tune and adapter-evaluation seconds (and their ratios
    to the default's, timed on the same machine) and, per set, the difference of the seed means with its CI, the
    margin verdict and the smallest difference the study could detect; empty until a comparison has margin verdicts.
    Also a line per challenger timed against the committed run rather than the default config's seeds."""
    rows, references = [], []
    for challenger, item in study["comparisons"].items():
        timing = item.get("timing")
        costs = [_cost(timing, "finetune_seconds"), _cost(timing, "eval_seconds")]
        if timing and timing["committed_run"]:
            references.append(f"`{challenger}` is timed against the committed run of commit "
                              f"{timing['committed_run'][:7]} on the same machine (fine-tune "
                              f"{timing['finetune_seconds'][1]:.0f} s, evaluation {timing['eval_seconds'][1]:.0f} s): "
                              "the `default` config's seeds ran on another machine.")
        for each in item["sets"]:
            if "margin_verdict" not in each:
                continue
            rows.append([f"`{challenger}`", item["question"], *costs, f"`{each['set']}`",
                         f"{100 * each['delta']:+.1f} [{100 * each['ci'][0]:+.1f}, {100 * each['ci'][1]:+.1f}]",
                         each["margin_verdict"] or "none", "" if each["mdd"] is None else f"{100 * each['mdd']:.1f}",
                         "" if each["mdd"] is None else each["seeds_per_side"] or f"more than {MAX_SEEDS}"])
    if not rows:
        return "", []
    margin = next(item["margin"] for item in study["comparisons"].values() if "margin" in item)
    return tabulate(rows, headers=["config", "question", "fine-tune, s (vs default)", "evaluation, s (vs default)",
                                   "set", "B - default, points [CI]", f"verdict (±{margin:g} points)",
                                   "detectable, points", "seeds a side to settle"], tablefmt="github"), references


def pipeline_code_line(configs: dict[str, dict]) -> list[str]:
    """Whether the configs, collected at several commits, ran the same pipeline code (``seed_study.pipeline_code``):
    only then do their differences price the knobs alone. Empty for one commit or an entry that predates the
    fingerprint."""
    if len({entry["baseline_commit"] for entry in configs.values()}) < 2 \
            or any("pipeline_code" not in entry for entry in configs.values()):
        return []
    by_code: dict[str, list[str]] = {}
    for config, entry in configs.items():
        by_code.setdefault(entry["pipeline_code"], []).append(f"`{config}`")
    if len(by_code) == 1:
        return ["Every config ran the same pipeline code: the dvc.lock hashes of `src/` and `stages/` agree across "
                "these commits."]
    return ["**The configs ran different pipeline code** (dvc.lock hashes of `src/` and `stages/`): "
            + "; ".join(f"{', '.join(names)} code {code}" for code, names in by_code.items())
            + ". Their differences mix the knobs with the code changes (rerun: `python benchmarks/seed_study.py run "
            "--force`)."]


def seed_study(root: Path) -> str:
    """benchmarks/seed_study.py's results: the price list of the knobs first, then the spread across seeds per config
    and set, how many of the default run's corrected and regressed rows are seed-dependent, and whether each
    challenger beats the default beyond the seed noise; configs collected on different commits or machines say so
    (and whether they ran the same pipeline code), and a comparison whose experiments are no longer the configs'
    entries is labelled stale."""
    path = root / SEED_STUDY
    if not path.is_file():
        return "Not run yet: `python benchmarks/seed_study.py run`."
    study = json.loads(path.read_text(encoding="utf-8"))
    moved = moved_since_study(root, study["configs"]["default"])
    rows, lines, sources = [], [], {}
    for config, summary in study["configs"].items():
        for name, s in summary["sets"].items():
            spread, gain = s["adapter"], s["gain"]
            rows.append([f"`{config}`", f"`{name}`", len(s["seeds"]), s["compute_dtype"], _pct(s["base_accuracy"]),
                         _pct(spread["accuracy_mean"]), f"{100 * spread['accuracy_sd']:.1f}",
                         f"{_pct(spread['accuracy_min'])} to {_pct(spread['accuracy_max'])}",
                         f"{100 * gain['mean']:+.1f} [{100 * gain['ci_low']:+.1f}, {100 * gain['ci_high']:+.1f}]"])
            if config == "default" and not moved:
                lines += _default_run_lines(name, s)
        source = f"commit {summary['baseline_commit'][:7]}; {_machine(summary)}"
        sources.setdefault(source, []).append(f"`{config}`")
    table = tabulate(rows, headers=["config", "set", "seeds", "dtype", "base", "adapter mean", "sd (points)",
                                    "range across seeds", "gain, points [CI over seeds and rows]"], tablefmt="github")
    price, timed_against = price_list(study)
    verdicts = [f"{item['question']}: {each['verdict']}" for item in study["comparisons"].values()
                for each in item["sets"]]
    verdicts += [_label_shift_line(challenger, item) for challenger, item in study["comparisons"].items()
                 if item.get("label_shifts")]
    stale = [f"{item['question']}: stale, made from experiments at {_commits(item)}, no longer the study's entries "
             f"(rerun `python benchmarks/seed_study.py run --only {challenger}`); it said then: {each['verdict']}"
             for challenger, item in study.get("stale", {}).items() for each in item["sets"]]
    missing = [f"Not run yet: `{config}` (`python benchmarks/seed_study.py run --only {config}`)."
               for config in study["missing"]]
    if moved:
        missing.insert(0, f"**Stale: this study is of an earlier pipeline.** The committed run's accuracy on "
                          f"{', '.join(f'`{name}`' for name in moved)} is not the study's train.seed replicate (another "
                          "compute dtype or code made it), so the spreads above are that pipeline's seed noise, a "
                          "guide to this one's but not a measurement of it (rerun: `python benchmarks/seed_study.py "
                          "run`).")
    return "\n".join([*([price, ""] if price else []), table, "",
                      *(f"- {line}" for line in timed_against + lines + verdicts + stale + missing), "",
                      *(f"{', '.join(configs)}: {source}" for source, configs in sources.items()),
                      *pipeline_code_line(study["configs"])])


SECOND_TASK = Path("benchmarks/results/second_task.json")   # benchmarks/second_task.py: the hypothesis-only task


def second_task(root: Path) -> str:
    """benchmarks/second_task.py's result for docs/tasks.md: per set, the hypothesis-only run beside the default NLI
    run (baselines, base and adapter accuracies with CIs), then their row-by-row comparison."""
    path = root / SECOND_TASK
    if not path.is_file():
        return "Not run yet: `python benchmarks/second_task.py run`."
    result = json.loads(path.read_text(encoding="utf-8"))
    runs = result["reads"]   # run -> what its model reads
    ci = lambda s, which: f"{_pct(s[f'{which}_accuracy'])} [{100 * s[f'{which}_accuracy_ci_low']:.1f}, " \
                          f"{100 * s[f'{which}_accuracy_ci_high']:.1f}]"
    rows = [[f"`{name}`", label, s["rows"], _pct(s["majority_class_accuracy"]), ci(s, "baseline"), ci(s, "base"),
             ci(s, "adapter")]
            for name in result["runs"]["nli"]["sets"] for run, label in runs.items()
            for s in [result["runs"][run]["sets"][name]]]
    table = tabulate(rows, headers=["set", "the model reads", "rows", "majority class",
                                    "hypothesis-only TF-IDF baseline [CI]", "base [CI]", "adapter [CI]"],
                     tablefmt="github")
    losses = "; ".join(f"{label}: final loss {result['runs'][run]['final_loss']}, "
                       f"{result['runs'][run]['finetune_seconds']:.0f} s, "
                       f"{result['runs'][run]['train_rows_removed_for_holdout_overlap']} train rows held out as "
                       "test text" for run, label in runs.items())
    comparison = re.sub(r"^## ", "### ", result["comparison"].strip(), flags=re.M)
    shares = [f"- `{name}`: {_pct(s['share'])} [{_pct(s['ci'][0])}, {_pct(s['ci'][1])}] ({s['confidence']:.0%} paired "
              "bootstrap CI over rows; one training seed a run, so seed noise is not in it)"
              for name, s in result["gain_share"].items()]
    return "\n".join([table, "", "Share of the default run's gain (adapter minus base) that the hypothesis-only "
                                 "fine-tune gains too, on the same rows:", "", *shares, "",
                       f"Fine-tunes: {losses}. Experiment `{result['experiment']}` of commit "
                                 f"{result['commit'][:7]}; {_machine(result)}", "", comparison])


RENDERERS: dict[str, Callable[[Path], str]] = {
    "second_task": second_task,
    "results": results,
    "seed_study": seed_study,
    "timing": timing,
    "explanations": explanations,
    "calibration": calibration,
    **{name: benchmark(name) for name in BENCHMARKS},
}


def render_readme(text: str, root: Path) -> str:
    """``text`` with every generated block re-rendered; an unknown block name is an error."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise KeyError(f"README block 'generated:{name}' has no renderer; known: {', '.join(RENDERERS)}")
        return f"{match.group(1)}{RENDERERS[name](root).rstrip()}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def pages(root: Path) -> list[Path]:
    """The files that may hold generated blocks: the README and every docs page."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1)")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args()
    stale = []
    for page in pages(args.root):
        text = page.read_text(encoding="utf-8")
        fresh = render_readme(text, args.root)
        if fresh != text:
            stale.append(str(page.relative_to(args.root)))
            if not args.check:
                page.write_text(fresh, encoding="utf-8")
    if args.check and stale:
        sys.exit(f"{', '.join(stale)}: generated blocks are stale; run `python -m qlora_diff.tools.readme`.")
    print(f"{', '.join(stale)}: generated blocks rewritten." if stale else "every generated block is current.")


if __name__ == "__main__":
    main()
