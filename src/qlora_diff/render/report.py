"""Render comparisons as Markdown a person can read: one section per evaluation set, and the cross-set summary."""

from __future__ import annotations

from tabulate import tabulate

from qlora_diff.analysis.compare import Comparison, Pair, gold_probability
from qlora_diff.analysis.explain import Explanation
from qlora_diff.analysis.slices import tags
from qlora_diff.core.tasks import Task


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _level(confidence: float) -> str:
    """``report.confidence`` as a percentage: 0.95 -> '95%', 0.995 -> '99.5%'."""
    return f"{100 * confidence:g}%"


def _table(rows: list[list], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github")


def summary_paragraph(stats: dict) -> str:
    direction = "rose" if stats["accuracy_delta"] > 0 else "fell" if stats["accuracy_delta"] < 0 else "stayed"
    return (
        f"On {stats['examples']} evaluation rows, accuracy {direction} from {_pct(stats['base_accuracy'])} "
        f"(base) to {_pct(stats['adapter_accuracy'])} (adapter), a change of "
        f"{100 * stats['accuracy_delta']:+.1f} points ({_level(stats['ci_confidence'])} paired-bootstrap CI "
        f"{100 * stats['accuracy_delta_ci_low']:+.1f} to {100 * stats['accuracy_delta_ci_high']:+.1f}). "
        f"The adapter corrected {stats['corrected']} rows and regressed {stats['regressed']}; "
        f"{stats['still_wrong']} stay wrong. The change is "
        f"{'statistically significant' if stats['significant'] else 'not statistically significant'} "
        f"(exact McNemar p = {stats['mcnemar_p_value']:.3g})."
    )


def _row_invariance(metrics: dict) -> str:
    """Whether the eval's matmuls gave a prompt the same bits in any batch (its predictions then cannot move with
    ``eval.batch_size``)."""
    invariant = metrics.get("row_invariant_matmuls")
    if invariant is None:
        return "n/a"
    return "yes" if invariant else "NO: predictions may move with eval.batch_size"


def machine_summary(machine: dict | None) -> str:
    """A run's machine fingerprint (``runtime.machine_fingerprint``) in one line."""
    if not machine:
        return "n/a"
    libraries = ", ".join(f"{name} {machine[name]}" for name in ("torch", "transformers", "peft", "bitsandbytes")
                          if machine.get(name))
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return (f"{machine['cpu']} ({' '.join(machine['cpu_flags']) or 'no listed ISA flags'}){gpu}, "
            f"{machine['threads']} threads; {libraries}")


def _metric_rows(base: dict, adapter: dict) -> list[list]:
    def both(key: str, fmt=lambda v: v) -> list:
        return [fmt(m[key]) if m.get(key) is not None else "n/a" for m in (base, adapter)]

    ci = lambda m: f"[{_pct(m.get('accuracy_ci_low'))}, {_pct(m.get('accuracy_ci_high'))}]"
    return [
        ["accuracy", *both("accuracy", _pct)],
        [f"accuracy {_level(base['ci_confidence'])} CI", ci(base), ci(adapter)],
        ["macro-F1", *both("macro_f1")],
        ["chance / majority class", f"{_pct(base.get('chance_accuracy'))} / {_pct(base.get('majority_class_accuracy'))}",
         ""],
        ["eval compute dtype", *both("compute_dtype")],
        ["eval near-tie floor, nats", *both("near_tie_margin", lambda v: f"{v:g}")],
        ["eval matmuls batch-invariant", _row_invariance(base), _row_invariance(adapter)],
        ["eval seconds", *both("seconds")],
        ["eval examples/s", *both("examples_per_second")],
        ["eval peak memory GB", *both("peak_memory_gb")],
        ["eval peak GPU memory GB", *both("peak_gpu_memory_gb")],
        ["parameters (total)", *both("parameters_total", lambda v: f"{v:,}")],
    ]


def _examples_table(chosen: list[Pair], collapse: dict[str, str], features: dict[str, dict[str, str]],
                    fields: tuple[str, ...]) -> str:
    if not chosen:
        return "_None._"

    def gold_change(base: dict, adapter: dict) -> str:
        before, after = gold_probability(base, collapse), gold_probability(adapter, collapse)
        return "n/a" if before is None or after is None else f"{before:.2f} -> {after:.2f}"

    rows = [[base["id"], *(base[name] for name in fields), base["gold"], base["prediction"], adapter["prediction"],
             gold_change(base, adapter), tags(features[base["id"]])] for base, adapter in chosen]
    return _table(rows, ["id", *fields, "gold", "base", "adapter", "p(gold) base -> adapter", "slices"])


def _interval(low: float, high: float) -> str:
    return f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def _near_tie_lines(stats: dict) -> list[str]:
    if "near_tie_margin" not in stats:
        return []
    return [f"- Near-ties: {stats['corrected_near_tie']} corrected and {stats['regressed_near_tie']} regressed rows have a "
            f"margin (top label's log-probability minus the runner-up's) below {stats['near_tie_margin']:g} nats in "
            f"either model, the noise floor of the dtype they were scored in (`report.near_tie_margin`); rounding "
            f"alone could flip them. "
            f"Without them: {stats['corrected_beyond_noise']} corrected vs {stats['regressed_beyond_noise']} regressed, "
            f"McNemar p = {stats['mcnemar_p_value_beyond_noise']:.4g}."]


def _confidence_sentence(name: str, calibration: dict) -> str:
    gap, (low, high) = calibration["confidence_minus_accuracy"], calibration["confidence_minus_accuracy_ci"]
    verdict = {"within noise": "neither over- nor under-confident beyond noise"}.get(calibration["confidence_verdict"],
                                                                                    calibration["confidence_verdict"])
    return (f"The {name} is {verdict}: mean confidence in its prediction {_pct(calibration['mean_confidence'])} vs "
            f"its accuracy, a gap of {100 * gap:+.1f} points {_interval(low, high)}.")


def _calibration_parts(comparison: Comparison) -> list[str]:
    """ECE/Brier and over- or under-confidence per model, accuracy under every decision rule, and the gain split."""
    base, adapter = comparison.base_metrics.get("calibration"), comparison.adapter_metrics.get("calibration")
    if not base or not adapter:
        return []
    split = comparison.stats.get("prior_split", {})
    rule_names = {"raw": "raw argmax", "contextual": "contextual calibration (content-free input)",
                  "batch": "batch calibration (mean over eval rows)", "length_normalised": "acc_norm (per answer byte)"}
    by_rule = lambda m, rule: (f"{_pct(m['accuracy_by_rule'][rule]['accuracy'])} [{_pct(m['accuracy_by_rule'][rule]['ci_low'])}, "
                               f"{_pct(m['accuracy_by_rule'][rule]['ci_high'])}]")
    parts = ["### Calibration and the label prior", "",
             f"ECE uses {base['ece_bins']} equal-width confidence bins; Brier is the multi-class score (0 is perfect). "
             f"Decision rule in force: `{comparison.base_metrics.get('decision_rule', 'none')}` (`eval.calibration`).",
             "",
             _table([[name, m["ece"], m["brier"], _pct(m["mean_confidence"]),
                      f"{100 * m['confidence_minus_accuracy']:+.1f} {_interval(*m['confidence_minus_accuracy_ci'])}"]
                     for name, m in (("base", base), ("adapter", adapter))],
                    ["model", "ECE", "Brier", "mean confidence", "confidence - accuracy, points [CI]"]), "",
             _confidence_sentence("base model", base) + " " + _confidence_sentence("adapter", adapter), "",
             _table([[rule_names[rule], by_rule(base, rule), by_rule(adapter, rule)] for rule in rule_names],
                    ["decision rule", "base accuracy [CI]", "adapter accuracy [CI]"]), ""]
    for rule, numbers in split.items():
        parts.append(f"- {rule_names[rule].capitalize()}: the base model goes from {_pct(numbers['base_raw_accuracy'])} "
                     f"to {_pct(numbers['base_calibrated_accuracy'])} by recalibrating its label prior alone "
                     f"({100 * numbers['prior_gain']:+.1f} points {_interval(*numbers['prior_gain_ci'])}); the adapter's raw "
                     f"argmax ({_pct(numbers['adapter_raw_accuracy'])}) adds "
                     f"{100 * numbers['adapter_raw_beyond_prior']:+.1f} points "
                     f"{_interval(*numbers['adapter_raw_beyond_prior_ci'])} beyond that.")
    return parts + ([""] if split else [])


def _explanation_parts(explanation: Explanation, confidence: float) -> list[str]:
    """The bag-of-words baseline, the hard-vs-easy gain split, the tested findings and the slice table."""
    only, split, task = explanation.hypothesis_only, explanation.gain_split, explanation.task
    level = _level(confidence)
    parts = ["### Explanations", "",
             f"A {task.baseline_name} classifier ({task.baseline_blurb}) scores {_pct(only['accuracy'])} [{_pct(only['accuracy_ci_low'])}, "
             f"{_pct(only['accuracy_ci_high'])}] here (chance {_pct(only['chance_accuracy'])}, majority class "
             f"{_pct(only['majority_class_accuracy'])}). The rows it gets right are *artifact-easy*, the rest *hard*.",
             ""]
    if split:
        parts += [f"Gain on hard rows: {100 * split['hard']['gain']:+.1f} points {_interval(*split['hard']['ci'])} "
                  f"({split['hard']['rows']} rows); on artifact-easy rows: {100 * split['easy']['gain']:+.1f} "
                  f"{_interval(*split['easy']['ci'])} ({split['easy']['rows']} rows); hard minus easy: "
                  f"{100 * split['difference']:+.1f} {_interval(*split['difference_ci'])} ({level} bootstrap CIs"
                  f"{'' if split['difference_beyond_noise'] else '; the difference could be noise'}).",
                  ""]
    tested = len(explanation.tests)
    if explanation.findings:
        parts += [f"Slices over-represented among corrected, regressed and still-wrong rows (one-sided Fisher exact "
                  f"test per category and slice, Benjamini-Hochberg q <= {explanation.q_threshold:g} across all "
                  f"{tested} tests):", ""] + [f"- {sentence}" for sentence in explanation.findings] + [""]
    else:
        parts += [f"Nothing stands out: no slice is over-represented among corrected, regressed or still-wrong rows "
                  f"at Benjamini-Hochberg q <= {explanation.q_threshold:g} ({tested} Fisher exact tests).", ""]
    ci = lambda interval: f"[{_pct(interval[0])}, {_pct(interval[1])}]"
    parts += ["### Accuracy by slice", "",
              f"Wilson CIs per model; the difference with a {level} paired-bootstrap CI; McNemar p per slice and "
              "Benjamini-Hochberg q across all slices.", "",
              _table([[f"{r['feature']} = {r['value']}", r["rows"], f"{_pct(r['base_accuracy'])} {ci(r['base_ci'])}",
                       f"{_pct(r['adapter_accuracy'])} {ci(r['adapter_ci'])}",
                       f"{100 * r['accuracy_delta']:+.1f} {_interval(*r['delta_ci'])}", r["corrected"], r["regressed"],
                       f"{r['p_value']:.3g}", f"{r['q_value']:.3g}"] for r in explanation.slices],
                     ["slice", "rows", "base [CI]", "adapter [CI]", "difference, points [CI]", "corrected",
                      "regressed", "McNemar p", "BH q"]), ""]
    return parts


def _group_table(rows: list[dict], name: str) -> str:
    ci = lambda interval: f"[{_pct(interval[0])}, {_pct(interval[1])}]"
    return _table([[r["group"], r["rows"], f"{_pct(r['base_accuracy'])} {ci(r['base_ci'])}",
                    f"{_pct(r['adapter_accuracy'])} {ci(r['adapter_ci'])}", f"{100 * r['accuracy_delta']:+.1f}",
                    r["corrected"], r["regressed"], f"{r['p_value']:.3g}", f"{r['q_value']:.3g}"] for r in rows],
                  [name, "rows", "base [CI]", "adapter [CI]", "difference (points)", "corrected", "regressed",
                   "McNemar p", "BH q"])


def _spread(numbers: dict) -> str:
    return (f"{_pct(numbers['accuracy_mean'])} (sd {100 * numbers['accuracy_sd']:.1f} points, "
            f"{_pct(numbers['accuracy_min'])} to {_pct(numbers['accuracy_max'])})")


def seed_summary(seeds: dict) -> str:
    """The seeds stage's verdict in a few sentences: the spread, the gain's CI over seeds and rows, the per-row
    counts and how many of train.seed's transitions another seed disagrees on."""
    gain = seeds["gain"]
    if seeds["replicates"] == 1:
        return (f"One fine-tune (train.seed {seeds['seeds'][0]}): how far these numbers move with the training seed "
                "was not measured, and every CI here covers row sampling only. Replicates: "
                "`dvc exp run -S 'train.extra_seeds=[1,2,3,4]'` (docs/seeds.md).")
    transitions, counts = seeds["primary_seed_transitions"], seeds["stability"]
    return (f"{seeds['replicates']} fine-tunes that differ only in the training seed "
            f"({', '.join(map(str, seeds['seeds']))}; compute dtype {seeds['compute_dtype']}). Adapter accuracy: mean "
            f"{_spread(seeds['adapter'])}. Gain over the base model: {100 * gain['mean']:+.1f} points "
            f"{_interval(gain['ci_low'], gain['ci_high'])}, a {_level(gain['confidence'])} CI over seeds and rows"
            f"{'' if gain['beyond_noise'] else '; the gain could be noise'}. Per row: "
            f"{counts['stable-correct']} right in every seed (stable-correct), {counts['stable-wrong']} in none "
            f"(stable-wrong), {counts['seed-dependent']} in some (seed-dependent). Of train.seed's "
            f"{transitions['corrected']} corrected rows, {transitions['corrected_seed_dependent']} are seed-dependent; "
            f"of its {transitions['regressed']} regressed rows, {transitions['regressed_seed_dependent']}.")


def _seed_parts(seeds: dict, explanation: Explanation) -> list[str]:
    """The seed summary, whether the explanations left seed-dependent rows out, and the spread per phenomenon and
    slice."""
    parts = ["### Training seeds", "", seed_summary(seeds), ""]
    if explanation.left_out_seed_dependent:
        parts += [f"The explanations above test seed-stable rows only ({explanation.left_out_seed_dependent} "
                  "seed-dependent rows left out; slices.stable_transitions_only).", ""]
    if seeds["replicates"] == 1:
        return parts
    for key, name in (("phenomena", "phenomenon"), ("slices", "slice")):
        if seeds[key]:
            parts += [f"Adapter accuracy per {name} across seeds ({name}s of at least slices.min_rows rows):", "",
                      _table([[group, v["rows"], _pct(v["accuracy_mean"]), f"{100 * v['accuracy_sd']:.1f}",
                               _pct(v["accuracy_min"]), _pct(v["accuracy_max"])] for group, v in seeds[key].items()],
                             [name, "rows", "mean", "sd (points)", "min", "max"]), ""]
    return parts


def render_set_section(comparison: Comparison, explanation: Explanation, seeds: dict) -> str:
    """One evaluation set's full diff, headed ``## Evaluation set `name` ``; ``seeds`` is the seeds stage's
    metrics."""
    stats = comparison.stats
    bias, per_class, labels = stats["label_bias"], stats["per_class"], comparison.labels
    shown = list(bias["gold"])
    parts = [
        f"## Evaluation set `{comparison.set_name}`", "",
        "### Summary", "", summary_paragraph(stats), "",
        _table([[stats[k] for k in ("corrected", "regressed", "still_wrong", "still_right")]],
               ["corrected", "regressed", "still wrong", "still right"]), "",
        "### Metrics side by side", "",
        _table(_metric_rows(comparison.base_metrics, comparison.adapter_metrics), ["", "base", "adapter"]), "",
        f"Evaluated on: {machine_summary(comparison.adapter_metrics.get('machine'))}.", "",
        "### Significance", "",
        f"- Accuracy difference: {100 * stats['accuracy_delta']:+.2f} points, "
        f"{_level(stats['ci_confidence'])} paired bootstrap CI [{100 * stats['accuracy_delta_ci_low']:+.2f}, "
        f"{100 * stats['accuracy_delta_ci_high']:+.2f}] from {stats['bootstrap_samples']} resamples.",
        f"- Exact McNemar test on the {stats['corrected'] + stats['regressed']} discordant rows "
        f"({stats['corrected']} corrected vs {stats['regressed']} regressed): p = {stats['mcnemar_p_value']:.4g}.",
        *_near_tie_lines(stats), "",
    ]
    parts += _calibration_parts(comparison)
    parts += _explanation_parts(explanation, stats["ci_confidence"])
    parts += _seed_parts(seeds, explanation)
    if comparison.by_phenomenon:
        parts += ["### Accuracy by phenomenon", "",
                  "Wilson CIs per model; McNemar p per phenomenon, and Benjamini-Hochberg q across the phenomena "
                  "(read q: several phenomena are several tests).", "",
                  _group_table(comparison.by_phenomenon, "phenomenon"), "",
                  "The same split by gold label: a phenomenon's two halves (e.g. entailed and not entailed) can move "
                  "in opposite directions, which is how a heuristic shows.", "",
                  _group_table(comparison.by_phenomenon_and_gold, "phenomenon / gold"), ""]
    examples = lambda name: _examples_table(comparison.examples[name], comparison.collapse,
                                                   explanation.features, explanation.fields)
    parts += [
        "Examples: the rows whose gold-label probability rose most (corrected), fell most (regressed) or moved most "
        "(still wrong), with their slices.", "",
        "### Corrected by the adapter", "", examples("corrected"), "",
        "### Regressed by the adapter", "", examples("regressed"), "",
        "### Still wrong", "", examples("still_wrong"), "",
        "### Label bias", "",
        "How often each label is predicted, against how often it is the gold label. A model that leans on one "
        "label shows it here before it shows in accuracy.", "",
        _table([[label, bias["gold"][label], bias["base"][label], bias["adapter"][label]] for label in shown],
               ["label", "gold", "base predicted", "adapter predicted"]), "",
        "### Per-class recall and F1", "",
        _table([[label, per_class["base"][label]["recall"], per_class["adapter"][label]["recall"],
                 per_class["base"][label]["f1"], per_class["adapter"][label]["f1"]] for label in labels],
               ["label", "base recall", "adapter recall", "base F1", "adapter F1"]), "",
        "### Prediction transitions", "", "Rows: base prediction; columns: adapter prediction.", "",
        _table([[b] + [stats["transitions"][f"{b}->{a}"] for a in shown] for b in shown], ["base \\ adapter"] + shown),
        "",
    ]
    return "\n".join(parts)


def headline(sets: dict[str, dict]) -> str:
    """Which sets improved, which did not, which regressed: never a general claim unless every set improved.
    Then any set where the adapter does not beat always answering the majority class.

    ``sets`` maps a set name to ``{"base": ..., "adapter": ..., "compare": ...}`` metrics; the compare stage decided
    which changes are significant and where the adapter stands against the majority class.
    """
    diff = {name: m["compare"] for name, m in sets.items()}

    def fmt(name: str) -> str:
        return f"`{name}` ({100 * diff[name]['accuracy_delta']:+.1f} points, p = {diff[name]['mcnemar_p_value']:.2g})"

    improved = [n for n in sets if diff[n]["accuracy_delta"] > 0 and diff[n]["significant"]]
    regressed = [n for n in sets if diff[n]["accuracy_delta"] < 0 and diff[n]["significant"]]
    unclear = [n for n in sets if n not in improved + regressed]
    if len(improved) == len(sets):
        parts = ["The adapter improved accuracy significantly on every evaluation set: " + ", ".join(map(fmt, improved)) + "."]
    else:
        parts = []
        if improved:
            parts.append("The adapter improved accuracy significantly on " + ", ".join(map(fmt, improved)) + ".")
        if regressed:
            parts.append("It made accuracy significantly worse on " + ", ".join(map(fmt, regressed)) + ".")
        if unclear:
            parts.append("The change is not statistically significant on " + ", ".join(map(fmt, unclear)) + ".")
        parts.append("So the fine-tune did not improve the task in general, only where stated.")
    for name, m in sets.items():
        adapter, majority = m["adapter"], m["base"]["majority_class_accuracy"]
        if m["compare"]["adapter_vs_majority_class"] != "above":
            parts.append(f"On `{name}` the adapter's accuracy ({_pct(adapter['accuracy'])}, CI "
                         f"[{_pct(adapter['accuracy_ci_low'])}, {_pct(adapter['accuracy_ci_high'])}]) is "
                         f"{m['compare']['adapter_vs_majority_class']} "
                         f"always answering the majority class ({_pct(majority)}).")
    return " ".join(parts)


def cross_set_table(sets: dict[str, dict], task: Task) -> tuple[list[list], list[str]]:
    """Rows and headers of the table that sets every evaluation set side by side, with baselines and CIs."""
    ci = lambda m: f"{_pct(m['accuracy'])} [{_pct(m['accuracy_ci_low'])}, {_pct(m['accuracy_ci_high'])}]"
    rows = [[f"`{name}`", m["compare"]["examples"], _pct(m["base"]["majority_class_accuracy"]),
             _pct(m["compare"].get("hypothesis_only_accuracy")), ci(m["base"]),
             ci(m["adapter"]), f"{100 * m['compare']['accuracy_delta']:+.1f} [{100 * m['compare']['accuracy_delta_ci_low']:+.1f}, "
             f"{100 * m['compare']['accuracy_delta_ci_high']:+.1f}]", f"{m['compare']['mcnemar_p_value']:.3g}"]
            for name, m in sets.items()]
    return rows, ["set", "rows", "majority class", task.baseline_name, "base accuracy [CI]", "adapter accuracy [CI]",
                  "difference, points [paired CI]", "McNemar p"]


def frozen_weights_and_attention(finetune: dict) -> str:
    """How the fine-tune ran besides its compute dtype, worded once for the report and the README."""
    return f"frozen weights {finetune.get('frozen_weights_dtype', 'n/a')}, {finetune.get('attention', 'n/a')} attention"


def render_summary(sets: dict[str, dict], finetune: dict, sections: dict[str, str], task: Task) -> str:
    """``reports/comparison.md``: the headline and the cross-set table, then every set's section.

    ``sets`` maps a set name to ``{"base": ..., "adapter": ..., "compare": ...}`` metrics.
    """
    parts = [
        "# What fine-tuning changed", "",
        "## Across evaluation sets", "", headline(sets), "",
        _table(*cross_set_table(sets, task)), "",
        "## Fine-tuning", "",
        f"{finetune.get('steps', 'n/a')} steps on {finetune.get('train_examples', 'n/a')} rows, "
        f"{finetune.get('parameters_trainable', 0):,} trainable parameters ({finetune.get('trainable_percent', 'n/a')}%), "
        f"final loss {finetune.get('final_loss', 'n/a')}, {finetune.get('seconds', 'n/a')} s, "
        f"peak memory {finetune.get('peak_memory_gb', 'n/a')} GB; compute dtype "
        f"{finetune.get('compute_dtype', 'n/a')} ({frozen_weights_and_attention(finetune)}) on "
        f"{finetune.get('device', 'n/a')}, "
        f"{finetune.get('shared_prefix_tokens', 0)} shared prompt-prefix tokens run once per batch.", "",
        f"Machine: {machine_summary(finetune.get('machine'))}.", "",
    ]
    return "\n".join(parts + [sections[name] for name in sets])
