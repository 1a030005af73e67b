"""Render comparisons as Markdown a person can read: one section per evaluation set, and the cross-set summary."""

from __future__ import annotations

from tabulate import tabulate

from qlora_diff.compare import Comparison, Pair

SECTIONS = ("Summary", "Metrics side by side", "Significance", "Corrected by the adapter", "Regressed by the adapter",
            "Still wrong", "Label bias", "Per-class recall and F1", "Prediction transitions")
SUMMARY_SECTIONS = ("Across evaluation sets", "Fine-tuning")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _table(rows: list[list], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github")


def summary_paragraph(stats: dict) -> str:
    significant = stats["mcnemar_p_value"] < 1 - stats["ci_confidence"]
    direction = "rose" if stats["accuracy_delta"] > 0 else "fell" if stats["accuracy_delta"] < 0 else "stayed"
    return (
        f"On {stats['examples']} evaluation rows, accuracy {direction} from {_pct(stats['base_accuracy'])} "
        f"(base) to {_pct(stats['adapter_accuracy'])} (adapter), a change of "
        f"{100 * stats['accuracy_delta']:+.1f} points ({int(100 * stats['ci_confidence'])}% paired-bootstrap CI "
        f"{100 * stats['accuracy_delta_ci_low']:+.1f} to {100 * stats['accuracy_delta_ci_high']:+.1f}). "
        f"The adapter corrected {stats['corrected']} rows and regressed {stats['regressed']}; "
        f"{stats['still_wrong']} stay wrong. The change is "
        f"{'statistically significant' if significant else 'not statistically significant'} "
        f"(exact McNemar p = {stats['mcnemar_p_value']:.3g})."
    )


def _metric_rows(base: dict, adapter: dict) -> list[list]:
    def both(key: str, fmt=lambda v: v) -> list:
        return [fmt(m[key]) if m.get(key) is not None else "n/a" for m in (base, adapter)]

    ci = lambda m: f"[{_pct(m.get('accuracy_ci_low'))}, {_pct(m.get('accuracy_ci_high'))}]"
    return [
        ["accuracy", *both("accuracy", _pct)],
        ["accuracy 95% CI", ci(base), ci(adapter)],
        ["macro-F1", *both("macro_f1")],
        ["chance / majority class", f"{_pct(base.get('chance_accuracy'))} / {_pct(base.get('majority_class_accuracy'))}",
         ""],
        ["eval seconds", *both("seconds")],
        ["eval examples/s", *both("examples_per_second")],
        ["eval peak memory GB", *both("peak_memory_gb")],
        ["eval peak GPU memory GB", *both("peak_gpu_memory_gb")],
        ["parameters (total)", *both("parameters_total", lambda v: f"{v:,}")],
    ]


def _examples_table(chosen: list[Pair]) -> str:
    if not chosen:
        return "_None._"
    prob = lambda r: f" ({r['probs'][r['prediction']]:.2f})" if r.get("probs") and r["prediction"] else ""
    rows = [[base["id"], base["premise"], base["hypothesis"], base["gold"], f"{base['prediction']}{prob(base)}",
             f"{adapter['prediction']}{prob(adapter)}"] for base, adapter in chosen]
    return _table(rows, ["id", "premise", "hypothesis", "gold", "base (p)", "adapter (p)"])


def _group_table(rows: list[dict], name: str) -> str:
    ci = lambda interval: f"[{_pct(interval[0])}, {_pct(interval[1])}]"
    return _table([[r["group"], r["rows"], f"{_pct(r['base_accuracy'])} {ci(r['base_ci'])}",
                    f"{_pct(r['adapter_accuracy'])} {ci(r['adapter_ci'])}", f"{100 * r['accuracy_delta']:+.1f}",
                    r["corrected"], r["regressed"], f"{r['p_value']:.3g}", f"{r['q_value']:.3g}"] for r in rows],
                  [name, "rows", "base [CI]", "adapter [CI]", "difference (points)", "corrected", "regressed",
                   "McNemar p", "BH q"])


def render_set_section(comparison: Comparison) -> str:
    """One evaluation set's full diff, headed ``## Evaluation set `name` ``."""
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
        "### Significance", "",
        f"- Accuracy difference: {100 * stats['accuracy_delta']:+.2f} points, "
        f"{int(100 * stats['ci_confidence'])}% paired bootstrap CI [{100 * stats['accuracy_delta_ci_low']:+.2f}, "
        f"{100 * stats['accuracy_delta_ci_high']:+.2f}] from {stats['bootstrap_samples']} resamples.",
        f"- Exact McNemar test on the {stats['corrected'] + stats['regressed']} discordant rows "
        f"({stats['corrected']} corrected vs {stats['regressed']} regressed): p = {stats['mcnemar_p_value']:.4g}.", "",
    ]
    if comparison.by_phenomenon:
        parts += ["### Accuracy by phenomenon", "",
                  "Wilson CIs per model; McNemar p per phenomenon, and Benjamini-Hochberg q across the phenomena "
                  "(read q: several phenomena are several tests).", "",
                  _group_table(comparison.by_phenomenon, "phenomenon"), "",
                  "The same split by gold label: a phenomenon's two halves (e.g. entailed and not entailed) can move "
                  "in opposite directions, which is how a heuristic shows.", "",
                  _group_table(comparison.by_phenomenon_and_gold, "phenomenon / gold"), ""]
    parts += [
        "### Corrected by the adapter", "", _examples_table(comparison.examples["corrected"]), "",
        "### Regressed by the adapter", "", _examples_table(comparison.examples["regressed"]), "",
        "### Still wrong", "", _examples_table(comparison.examples["still_wrong"]), "",
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

    ``sets`` maps a set name to ``{"base": ..., "adapter": ..., "compare": ...}`` metrics; a change is
    significant when its McNemar p is below 1 - confidence.
    """
    diff = {name: m["compare"] for name, m in sets.items()}

    def fmt(name: str) -> str:
        return f"`{name}` ({100 * diff[name]['accuracy_delta']:+.1f} points, p = {diff[name]['mcnemar_p_value']:.2g})"

    significant = lambda name: diff[name]["mcnemar_p_value"] < 1 - diff[name]["ci_confidence"]
    improved = [n for n in sets if diff[n]["accuracy_delta"] > 0 and significant(n)]
    regressed = [n for n in sets if diff[n]["accuracy_delta"] < 0 and significant(n)]
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
        parts.append("So the fine-tune did not improve NLI in general, only where stated.")
    for name, m in sets.items():
        adapter, majority = m["adapter"], m["base"]["majority_class_accuracy"]
        if adapter["accuracy"] < majority:
            below = "significantly below" if adapter["accuracy_ci_high"] < majority else "not above"
            parts.append(f"On `{name}` the adapter's accuracy ({_pct(adapter['accuracy'])}, CI "
                         f"[{_pct(adapter['accuracy_ci_low'])}, {_pct(adapter['accuracy_ci_high'])}]) is {below} "
                         f"always answering the majority class ({_pct(majority)}).")
    return " ".join(parts)


def render_summary(sets: dict[str, dict], finetune: dict, sections: dict[str, str]) -> str:
    """``reports/comparison.md``: the headline and the cross-set table, then every set's section.

    ``sets`` maps a set name to ``{"base": ..., "adapter": ..., "compare": ...}`` metrics.
    """
    ci = lambda m: f"{_pct(m['accuracy'])} [{_pct(m['accuracy_ci_low'])}, {_pct(m['accuracy_ci_high'])}]"
    rows = [[f"`{name}`", m["compare"]["examples"], _pct(m["base"]["majority_class_accuracy"]), ci(m["base"]),
             ci(m["adapter"]), f"{100 * m['compare']['accuracy_delta']:+.1f} [{100 * m['compare']['accuracy_delta_ci_low']:+.1f}, "
             f"{100 * m['compare']['accuracy_delta_ci_high']:+.1f}]", f"{m['compare']['mcnemar_p_value']:.3g}"]
            for name, m in sets.items()]
    parts = [
        "# What fine-tuning changed", "",
        "## Across evaluation sets", "", headline(sets), "",
        _table(rows, ["set", "rows", "majority class", "base accuracy [CI]", "adapter accuracy [CI]",
                      "difference, points [paired CI]", "McNemar p"]), "",
        "## Fine-tuning", "",
        f"{finetune.get('steps', 'n/a')} steps on {finetune.get('train_examples', 'n/a')} rows, "
        f"{finetune.get('parameters_trainable', 0):,} trainable parameters ({finetune.get('trainable_percent', 'n/a')}%), "
        f"final loss {finetune.get('final_loss', 'n/a')}, {finetune.get('seconds', 'n/a')} s, "
        f"peak memory {finetune.get('peak_memory_gb', 'n/a')} GB.", "",
    ]
    return "\n".join(parts + [sections[name] for name in sets])
