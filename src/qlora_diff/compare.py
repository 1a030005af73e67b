"""What the adapter fixed and broke, example by example, and whether it is significant: statistics only.

Rendering lives in ``report.py``; the compare stage wires join -> compare -> render -> write.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, bootstrap, false_discovery_control

from qlora_diff.calibration import confidence_and_correct, reliability_rows
from qlora_diff.config import Config
from qlora_diff.errors import InputError
from qlora_diff.metrics import UNPARSEABLE, accuracy_interval, classification_metrics

CATEGORIES = ("corrected", "regressed", "still_wrong", "still_right")
Pair = tuple[dict, dict]


def index_predictions(rows: list[dict], origin: str) -> dict[str, dict]:
    indexed: dict[str, dict] = {}
    for line, row in enumerate(rows, start=1):
        if "id" not in row:
            raise InputError(f"{origin}:{line}: prediction row has no 'id'.")
        if row["id"] in indexed:
            raise InputError(f"{origin}:{line}: duplicated id {row['id']!r}; each eval row must appear once.")
        indexed[row["id"]] = row
    return indexed


def join_predictions(base: list[dict], adapter: list[dict], base_origin: str = "base",
                     adapter_origin: str = "adapter") -> list[Pair]:
    """Pairs (base row, adapter row) by id in the base file's order; ids must match exactly."""
    base_by_id = index_predictions(base, base_origin)
    adapter_by_id = index_predictions(adapter, adapter_origin)
    only_base = sorted(set(base_by_id) - set(adapter_by_id))
    only_adapter = sorted(set(adapter_by_id) - set(base_by_id))
    if only_base or only_adapter:
        raise InputError(
            f"prediction ids differ: {len(only_base)} only in {base_origin} (e.g. {only_base[:3]}), "
            f"{len(only_adapter)} only in {adapter_origin} (e.g. {only_adapter[:3]}); "
            "rerun both evaluate stages of this set on the same data/prepared/eval/<set>.jsonl."
        )
    pairs = [(row, adapter_by_id[row["id"]]) for row in base]
    for b, a in pairs:
        if b["gold"] != a["gold"]:
            raise InputError(f"id {b['id']!r}: gold label differs between {base_origin} and {adapter_origin}.")
    return pairs


def category(base_correct: bool, adapter_correct: bool) -> str:
    if adapter_correct:
        return "still_right" if base_correct else "corrected"
    return "regressed" if base_correct else "still_wrong"


def mcnemar_exact_p(corrected: int, regressed: int) -> float:
    """Two-sided exact McNemar test: a binomial test on the discordant pairs."""
    if corrected + regressed == 0:
        return 1.0
    return float(binomtest(min(corrected, regressed), corrected + regressed, 0.5).pvalue)


def paired_bootstrap_ci(base_correct: np.ndarray, adapter_correct: np.ndarray, samples: int, seed: int,
                        confidence: float) -> tuple[float, float]:
    """Percentile CI of the accuracy difference, resampling eval rows (pairs) with replacement."""
    result = bootstrap(
        (np.asarray(base_correct, dtype=float), np.asarray(adapter_correct, dtype=float)),
        lambda base, adapter, axis: adapter.mean(axis) - base.mean(axis),
        paired=True, vectorized=True, n_resamples=samples, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed), batch=1000,
    )
    return round(float(result.confidence_interval.low), 4), round(float(result.confidence_interval.high), 4)


def predicted_label(row: dict) -> str:
    return row["prediction"] or UNPARSEABLE


def label_probability(row: dict, label: str | None, collapse: dict[str, str]) -> float | None:
    """The model's probability of ``label`` in the set's label space (summed over the model labels that collapse
    to it); None for generated answers, which have no probabilities."""
    if not row.get("probs") or label is None:
        return None
    return sum(p for model_label, p in row["probs"].items() if collapse[model_label] == label)


def gold_probability(row: dict, collapse: dict[str, str]) -> float | None:
    return label_probability(row, row["gold"], collapse)


def pick_examples(pairs: list[Pair], name: str, count: int, seed: int, collapse: dict[str, str]) -> list[Pair]:
    """The ``count`` rows of one category that teach most: the largest rise of the gold label's probability for
    corrected rows, the largest fall for regressed ones, the largest change either way for rows still wrong (ties
    by id). Without probabilities (eval.method generate), a seeded sample, sorted by id."""
    members = [p for p in pairs if category(p[0]["correct"], p[1]["correct"]) == name]
    if members and all(gold_probability(row, collapse) is not None for pair in members for row in pair):
        change = {id(p): gold_probability(p[1], collapse) - gold_probability(p[0], collapse) for p in members}
        rank = {"corrected": lambda p: -change[id(p)], "regressed": lambda p: change[id(p)],
                "still_wrong": lambda p: -abs(change[id(p)])}[name]
        return sorted(members, key=lambda p: (round(rank(p), 6), p[0]["id"]))[:count]
    chosen = random.Random(f"{seed}-{name}").sample(members, min(count, len(members)))
    return sorted(chosen, key=lambda p: p[0]["id"])


@dataclass(frozen=True)
class Comparison:
    """Everything one evaluation set's report shows, computed once: statistics, examples and each model's metrics."""

    set_name: str
    stats: dict
    examples: dict[str, list[Pair]]
    labels: list[str]
    collapse: dict[str, str]   # model label -> set label
    base_metrics: dict
    adapter_metrics: dict
    by_phenomenon: list[dict]
    by_phenomenon_and_gold: list[dict]

    def metrics(self) -> dict:
        """What goes to metrics/eval/<set>/compare.json: the statistics and the transition counts (per-class tables
        are in each model's own metrics)."""
        scalars = {k: v for k, v in self.stats.items() if k != "per_class"}
        if self.by_phenomenon:
            scalars["by_phenomenon"] = {row["group"]: {k: row[k] for k in (
                "rows", "base_accuracy", "adapter_accuracy", "accuracy_delta", "q_value")} for row in self.by_phenomenon}
        return {"eval_set": self.set_name, **scalars}


def near_tie_counts(pairs: list[Pair], threshold: float) -> dict:
    """Corrected and regressed rows where either model's margin is below ``threshold`` (the measured noise floor):
    rounding alone could flip them. The McNemar test is repeated without them."""
    if not all("margin" in row for pair in pairs for row in pair):
        return {}
    counts = Counter((category(b["correct"], a["correct"]), min(b["margin"], a["margin"]) < threshold)
                     for b, a in pairs)
    clear = {name: counts.get((name, False), 0) for name in ("corrected", "regressed")}
    return {"near_tie_margin": threshold, "corrected_near_tie": counts.get(("corrected", True), 0),
            "regressed_near_tie": counts.get(("regressed", True), 0), "corrected_beyond_noise": clear["corrected"],
            "regressed_beyond_noise": clear["regressed"],
            "mcnemar_p_value_beyond_noise": mcnemar_exact_p(clear["corrected"], clear["regressed"])}


def prior_split(cfg: Config, pairs: list[Pair]) -> dict:
    """How much of the gain a label-free recalibration of the base model already gives, per calibration: the base
    model raw -> calibrated, and the adapter (raw) beyond the calibrated base, with paired-bootstrap CIs."""
    if not all("predictions_by_rule" in row for pair in pairs for row in pair):
        return {}
    right = lambda which, rule: np.array([pair[which]["predictions_by_rule"][rule] == pair[which]["gold"]
                                          for pair in pairs], dtype=float)
    base_raw, adapter_raw = right(0, "raw"), right(1, "raw")
    report = cfg.report
    ci = lambda before, after: paired_bootstrap_ci(before, after, report.bootstrap_samples, report.seed,
                                                   report.confidence)
    split = {}
    for rule in ("contextual", "batch"):
        base_rule = right(0, rule)
        split[rule] = {"base_raw_accuracy": round(float(base_raw.mean()), 4),
                       "base_calibrated_accuracy": round(float(base_rule.mean()), 4),
                       "prior_gain": round(float(base_rule.mean() - base_raw.mean()), 4),
                       "prior_gain_ci": ci(base_raw, base_rule),
                       "adapter_accuracy": round(float(adapter_raw.mean()), 4),
                       "adapter_beyond_prior": round(float(adapter_raw.mean() - base_rule.mean()), 4),
                       "adapter_beyond_prior_ci": ci(base_rule, adapter_raw),
                       "adapter_calibrated_accuracy": round(float(right(1, rule).mean()), 4)}
    return split


def compare_predictions(cfg: Config, pairs: list[Pair], labels: list[str]) -> dict:
    """Counts, accuracy delta with CI and p-value, per-class and label-bias tables, in the set's label space."""
    cats = Counter(category(b["correct"], a["correct"]) for b, a in pairs)
    base_correct = np.array([b["correct"] for b, _ in pairs])
    adapter_correct = np.array([a["correct"] for _, a in pairs])
    gold = [b["gold"] for b, _ in pairs]
    low, high = paired_bootstrap_ci(base_correct, adapter_correct, cfg.report.bootstrap_samples, cfg.report.seed,
                                    cfg.report.confidence)
    base_pred = [predicted_label(b) for b, _ in pairs]
    adapter_pred = [predicted_label(a) for _, a in pairs]
    shown = labels + ([UNPARSEABLE] if UNPARSEABLE in base_pred + adapter_pred else [])
    transitions = Counter(zip(base_pred, adapter_pred))
    return {
        "examples": len(pairs),
        **{name: cats.get(name, 0) for name in CATEGORIES},
        "base_accuracy": round(float(base_correct.mean()), 4),
        "adapter_accuracy": round(float(adapter_correct.mean()), 4),
        "accuracy_delta": round(float(adapter_correct.mean() - base_correct.mean()), 4),
        "accuracy_delta_ci_low": low,
        "accuracy_delta_ci_high": high,
        "ci_confidence": cfg.report.confidence,
        "bootstrap_samples": cfg.report.bootstrap_samples,
        "mcnemar_p_value": mcnemar_exact_p(cats.get("corrected", 0), cats.get("regressed", 0)),
        "per_class": {
            "base": classification_metrics(gold, base_pred, labels, cfg.report.confidence)["per_class"],
            "adapter": classification_metrics(gold, adapter_pred, labels, cfg.report.confidence)["per_class"],
        },
        "label_bias": {
            "gold": {l: gold.count(l) for l in shown},
            "base": {l: base_pred.count(l) for l in shown},
            "adapter": {l: adapter_pred.count(l) for l in shown},
        },
        "transitions": {f"{b}->{a}": transitions.get((b, a), 0) for b in shown for a in shown},
        **near_tie_counts(pairs, cfg.report.near_tie_margin),
        "prior_split": prior_split(cfg, pairs),
    }


def accuracy_by_group(pairs: list[Pair], keys: tuple[str, ...], confidence: float) -> list[dict]:
    """Per value of the row fields ``keys`` (e.g. phenomenon, or phenomenon and gold label): both accuracies with
    Wilson CIs, the paired difference and exact McNemar p, and Benjamini-Hochberg q-values across the groups
    (several groups are several tests). Each result row is named by ``" / ".join`` of its values."""
    groups: dict[str, list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(" / ".join(str(pair[0][key]) for key in keys), []).append(pair)
    rows = []
    for name in sorted(groups):
        members = groups[name]
        base_right = sum(b["correct"] for b, _ in members)
        adapter_right = sum(a["correct"] for _, a in members)
        cats = Counter(category(b["correct"], a["correct"]) for b, a in members)
        base_ci = accuracy_interval(base_right, len(members), confidence)
        adapter_ci = accuracy_interval(adapter_right, len(members), confidence)
        rows.append({
            "group": name, "rows": len(members),
            "base_accuracy": round(base_right / len(members), 4), "base_ci": base_ci,
            "adapter_accuracy": round(adapter_right / len(members), 4), "adapter_ci": adapter_ci,
            "accuracy_delta": round((adapter_right - base_right) / len(members), 4),
            "corrected": cats.get("corrected", 0), "regressed": cats.get("regressed", 0),
            "p_value": mcnemar_exact_p(cats.get("corrected", 0), cats.get("regressed", 0)),
        })
    if rows:
        for row, q in zip(rows, false_discovery_control([row["p_value"] for row in rows], method="bh")):
            row["q_value"] = float(q)
    return rows


def compare(cfg: Config, set_name: str, pairs: list[Pair], base_metrics: dict, adapter_metrics: dict) -> Comparison:
    """The statistics plus ``report.examples_per_category`` teaching examples of each category with errors."""
    count, seed = cfg.report.examples_per_category, cfg.report.seed
    labels = cfg.eval_sets[set_name].labels(cfg.data.labels)
    collapse = cfg.eval_sets[set_name].collapse(cfg.data.labels)
    has_phenomena = bool(pairs) and all("phenomenon" in base for base, _ in pairs)
    return Comparison(
        set_name=set_name,
        stats=compare_predictions(cfg, pairs, labels),
        examples={name: pick_examples(pairs, name, count, seed, collapse)
                  for name in ("corrected", "regressed", "still_wrong")},
        labels=labels, collapse=collapse, base_metrics=base_metrics, adapter_metrics=adapter_metrics,
        by_phenomenon=accuracy_by_group(pairs, ("phenomenon",), cfg.report.confidence) if has_phenomena else [],
        by_phenomenon_and_gold=accuracy_by_group(pairs, ("phenomenon", "gold"), cfg.report.confidence)
        if has_phenomena else [],
    )


def reliability_plot_rows(comparison: Comparison, pairs: list[Pair], bins: int) -> list[dict]:
    """`dvc plots` data for the reliability diagram: per model and confidence bin, mean confidence vs accuracy."""
    if not all(row.get("probs") for pair in pairs for row in pair):
        return []
    out = []
    for index, model in enumerate(("base", "adapter")):
        confidence, correct, _ = confidence_and_correct([pair[index] for pair in pairs], comparison.labels,
                                                        comparison.collapse)
        out += [{"model": model, **point} for point in reliability_rows(confidence, correct, bins)]
    return out


def transition_rows(pairs: list[Pair]) -> list[dict]:
    """Plot data for `dvc plots`: one (base, adapter) prediction per row."""
    return [{"base": predicted_label(b), "adapter": predicted_label(a)} for b, a in pairs]
