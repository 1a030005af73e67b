"""Render the comparison as Markdown a person can read: a paragraph first, then the tables."""

from __future__ import annotations

from tabulate import tabulate

from qlora_diff.compare import pick_examples

SECTIONS = ("Summary", "Metrics side by side", "Significance", "Corrected by the adapter", "Regressed by the adapter",
            "Still wrong", "Label bias", "Per-class recall and F1", "Prediction transitions")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_paragraph(result: dict) -> str:
    significant = result["mcnemar_p_value"] < 1 - result["ci_confidence"]
    direction = "rose" if result["accuracy_delta"] > 0 else "fell" if result["accuracy_delta"] < 0 else "stayed"
    return (
        f"On {result['examples']} evaluation rows, accuracy {direction} from {_pct(result['base_accuracy'])} "
        f"(base) to {_pct(result['adapter_accuracy'])} (adapter), a change of "
        f"{100 * result['accuracy_delta']:+.1f} points ({int(100 * result['ci_confidence'])}% paired-bootstrap CI "
        f"{100 * result['accuracy_delta_ci_low']:+.1f} to {100 * result['accuracy_delta_ci_high']:+.1f}). "
        f"The adapter corrected {result['corrected']} rows and regressed {result['regressed']}; "
        f"{result['still_wrong']} stay wrong. The change is "
        f"{'statistically significant' if significant else 'not statistically significant'} "
        f"(exact McNemar p = {result['mcnemar_p_value']:.3g})."
    )


def _metric_rows(base: dict, adapter: dict, finetune: dict, chance: float) -> list[list]:
    def both(key: str, fmt=lambda v: v) -> list:
        return [fmt(base.get(key)) if base.get(key) is not None else "n/a",
                fmt(adapter.get(key)) if adapter.get(key) is not None else "n/a"]

    ci = lambda m: f"[{_pct(m.get('accuracy_ci_low'))}, {_pct(m.get('accuracy_ci_high'))}]"
    return [
        ["accuracy", *both("accuracy", _pct)],
        ["accuracy 95% CI", ci(base), ci(adapter)],
        ["macro-F1", *both("macro_f1")],
        ["chance / majority class", f"{_pct(chance)} / {_pct(base.get('majority_class_accuracy'))}", ""],
        ["eval seconds", *both("seconds")],
        ["eval examples/s", *both("examples_per_second")],
        ["eval peak memory GB", *both("peak_memory_gb")],
        ["eval peak GPU memory GB", *both("peak_gpu_memory_gb")],
        ["parameters (total)", *both("parameters_total", lambda v: f"{v:,}")],
        ["parameters (trainable in fine-tune)", "", f"{finetune.get('parameters_trainable', 0):,} "
                                                    f"({finetune.get('trainable_percent', 'n/a')}%)"],
        ["fine-tune seconds", "", finetune.get("seconds", "n/a")],
        ["fine-tune peak memory GB", "", finetune.get("peak_memory_gb", "n/a")],
    ]


def _examples_table(pairs: list, name: str, count: int, seed: int) -> str:
    chosen = pick_examples(pairs, name, count, seed)
    if not chosen:
        return "_None._"
    rows = []
    for base, adapter in chosen:
        prob = lambda r: f" ({r['probs'][r['prediction']]:.2f})" if r.get("probs") and r["prediction"] else ""
        rows.append([base["id"], base["premise"], base["hypothesis"], base["gold"],
                     f"{base['prediction']}{prob(base)}", f"{adapter['prediction']}{prob(adapter)}"])
    return tabulate(rows, headers=["id", "premise", "hypothesis", "gold", "base (p)", "adapter (p)"], tablefmt="github")


def render_markdown(result: dict, pairs: list, base: dict, adapter: dict, finetune: dict, labels: list[str],
                    examples_per_category: int, seed: int) -> str:
    bias = result["label_bias"]
    shown = list(bias["gold"])
    per_class = result["per_class"]
    parts = [
        "# What fine-tuning changed", "",
        "## Summary", "", summary_paragraph(result), "",
        tabulate([[result[k] for k in ("corrected", "regressed", "still_wrong", "still_right")]],
                 headers=["corrected", "regressed", "still wrong", "still right"], tablefmt="github"), "",
        "## Metrics side by side", "",
        tabulate(_metric_rows(base, adapter, finetune, 1 / len(labels)), headers=["", "base", "adapter"],
                 tablefmt="github"), "",
        "## Significance", "",
        f"- Accuracy difference: {100 * result['accuracy_delta']:+.2f} points, "
        f"{int(100 * result['ci_confidence'])}% paired bootstrap CI [{100 * result['accuracy_delta_ci_low']:+.2f}, "
        f"{100 * result['accuracy_delta_ci_high']:+.2f}] from {result['bootstrap_samples']} resamples.",
        f"- Exact McNemar test on the {result['corrected'] + result['regressed']} discordant rows "
        f"({result['corrected']} corrected vs {result['regressed']} regressed): p = {result['mcnemar_p_value']:.4g}.", "",
        "## Corrected by the adapter", "", _examples_table(pairs, "corrected", examples_per_category, seed), "",
        "## Regressed by the adapter", "", _examples_table(pairs, "regressed", examples_per_category, seed), "",
        "## Still wrong", "", _examples_table(pairs, "still_wrong", examples_per_category, seed), "",
        "## Label bias", "",
        "How often each label is predicted, against how often it is the gold label. A model that leans on one "
        "label shows it here before it shows in accuracy.", "",
        tabulate([[label, bias["gold"][label], bias["base"][label], bias["adapter"][label]] for label in shown],
                 headers=["label", "gold", "base predicted", "adapter predicted"], tablefmt="github"), "",
        "## Per-class recall and F1", "",
        tabulate([[label, per_class["base"][label]["recall"], per_class["adapter"][label]["recall"],
                   per_class["base"][label]["f1"], per_class["adapter"][label]["f1"]] for label in labels],
                 headers=["label", "base recall", "adapter recall", "base F1", "adapter F1"], tablefmt="github"), "",
        "## Prediction transitions", "", "Rows: base prediction; columns: adapter prediction.", "",
        tabulate([[b] + [result["transitions"][f"{b}->{a}"] for a in shown] for b in shown],
                 headers=["base \\ adapter"] + shown, tablefmt="github"), "",
    ]
    return "\n".join(parts)
