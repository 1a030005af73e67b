"""What the adapter fixed and broke, example by example, and whether it is significant: statistics only.

Rendering lives in ``report.py``; the compare stage wires join -> compare -> render -> write.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from qlora_diff.analysis.calibration import confidence_and_correct, label_probability, reliability_rows
from qlora_diff.analysis.metrics import UNPARSEABLE, classification_metrics
from qlora_diff.analysis.stats import GroupRow, group_table, mcnemar_exact_p, paired_bootstrap_ci, significant
from qlora_diff.core.config import Config, ReportConfig
from qlora_diff.core.errors import InputError
from qlora_diff.core.numerics import noise_floor

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


def correctness(pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """Whether the base model and the adapter got each row right, as two 0/1 arrays in pair order."""
    return (np.array([b["correct"] for b, _ in pairs], dtype=float),
            np.array([a["correct"] for _, a in pairs], dtype=float))


def category(base_correct: bool, adapter_correct: bool) -> str:
    if adapter_correct:
        return "still_right" if base_correct else "corrected"
    return "regressed" if base_correct else "still_wrong"


def predicted_label(row: dict) -> str:
    return row["prediction"] or UNPARSEABLE


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


class PriorSplit(TypedDict):
    """For one label-free recalibration rule: how much of the gain it already gives the base model, and what the
    adapter's *raw* argmax adds beyond it (paired-bootstrap CIs)."""

    base_raw_accuracy: float
    base_calibrated_accuracy: float
    prior_gain: float
    prior_gain_ci: tuple[float, float]
    adapter_raw_accuracy: float
    adapter_raw_beyond_prior: float
    adapter_raw_beyond_prior_ci: tuple[float, float]
    adapter_calibrated_accuracy: float


class PairedStats(TypedDict, total=False):
    """One evaluation set, base vs adapter on the same rows (metrics/eval/<set>/compare.json, less ``per_class``).
    The near-tie keys are there when the predictions have margins (eval.method loglik)."""

    examples: int
    corrected: int
    regressed: int
    still_wrong: int
    still_right: int
    base_accuracy: float
    adapter_accuracy: float
    accuracy_delta: float
    accuracy_delta_ci_low: float
    accuracy_delta_ci_high: float
    ci_confidence: float
    bootstrap_samples: int
    mcnemar_p_value: float
    significant: bool          # mcnemar_p_value < 1 - ci_confidence: the verdict every sentence uses
    adapter_vs_majority_class: str   # above | not above | significantly below (always answering the majority class)
    per_class: dict[str, dict]
    label_bias: dict[str, dict[str, int]]
    transitions: dict[str, int]
    near_tie_margin: float
    corrected_near_tie: int
    regressed_near_tie: int
    corrected_beyond_noise: int
    regressed_beyond_noise: int
    mcnemar_p_value_beyond_noise: float
    prior_split: dict[str, PriorSplit]


@dataclass(frozen=True)
class Comparison:
    """Everything one evaluation set's report shows, computed once: statistics, examples and each model's metrics."""

    set_name: str
    stats: PairedStats
    examples: dict[str, list[Pair]]
    labels: list[str]
    collapse: dict[str, str]   # model label -> set label
    base_metrics: dict
    adapter_metrics: dict
    by_phenomenon: list[GroupRow]
    by_phenomenon_and_gold: list[GroupRow]

    def metrics(self) -> dict:
        """What goes to metrics/eval/<set>/compare.json: the statistics and the transition counts (per-class tables
        are in each model's own metrics)."""
        scalars = {k: v for k, v in self.stats.items() if k != "per_class"}
        if self.by_phenomenon:
            scalars["by_phenomenon"] = {row["group"]: {k: row[k] for k in (
                "rows", "base_accuracy", "adapter_accuracy", "accuracy_delta", "q_value")} for row in self.by_phenomenon}
        return {"eval_set": self.set_name, **scalars}


def near_tie_margin(cfg: Config, base_metrics: dict, adapter_metrics: dict) -> float:
    """``report.near_tie_margin``, or for ``auto`` the larger noise floor of the dtypes the two models were evaluated
    in, as their metrics record it (metrics without the field: the floor of their recorded dtype, else float32)."""
    if cfg.report.near_tie_margin != "auto":
        return cfg.report.near_tie_margin
    return max(metrics.get("near_tie_margin", noise_floor(metrics.get("compute_dtype", "float32")))
               for metrics in (base_metrics, adapter_metrics))


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


def prior_split(cfg: Config, pairs: list[Pair], base_metrics: dict, adapter_metrics: dict) -> dict[str, PriorSplit]:
    """How much of the gain a label-free recalibration of the base model already gives, per calibration rule: the
    base model raw -> calibrated, and the adapter's raw argmax beyond the calibrated base, with paired-bootstrap CIs.
    Accuracies are the evaluate stages' (``calibration.accuracy_by_rule``); the rows give the paired CIs."""
    if not all("predictions_by_rule" in row for pair in pairs for row in pair):
        return {}
    right = lambda which, rule: np.array([pair[which]["predictions_by_rule"][rule] == pair[which]["gold"]
                                          for pair in pairs], dtype=float)
    accuracy = lambda metrics, rule: metrics["calibration"]["accuracy_by_rule"][rule]["accuracy"]
    base_raw, adapter_raw = right(0, "raw"), right(1, "raw")
    report = cfg.report
    ci = lambda before, after: paired_bootstrap_ci(before, after, report.bootstrap_samples, report.seed,
                                                   report.confidence)
    split = {}
    for rule in ("contextual", "batch"):
        base_rule = right(0, rule)
        split[rule] = PriorSplit(base_raw_accuracy=accuracy(base_metrics, "raw"),
                                 base_calibrated_accuracy=accuracy(base_metrics, rule),
                                 prior_gain=round(float(base_rule.mean() - base_raw.mean()), 4),
                                 prior_gain_ci=ci(base_raw, base_rule),
                                 adapter_raw_accuracy=accuracy(adapter_metrics, "raw"),
                                 adapter_raw_beyond_prior=round(float(adapter_raw.mean() - base_rule.mean()), 4),
                                 adapter_raw_beyond_prior_ci=ci(base_rule, adapter_raw),
                                 adapter_calibrated_accuracy=accuracy(adapter_metrics, rule))
    return split


def versus_majority_class(adapter_metrics: dict, base_metrics: dict) -> str:
    """Whether the adapter beats always answering the set's majority class: ``above``, ``not above`` (below, but the
    majority rate is inside its CI) or ``significantly below`` (its CI lies below the majority rate)."""
    majority = base_metrics["majority_class_accuracy"]
    if adapter_metrics["accuracy"] >= majority:
        return "above"
    return "significantly below" if adapter_metrics["accuracy_ci_high"] < majority else "not above"


def compare_predictions(cfg: Config, pairs: list[Pair], labels: list[str], base_metrics: dict,
                        adapter_metrics: dict) -> PairedStats:
    """Counts, accuracy delta with CI and p-value, per-class and label-bias tables, in the set's label space."""
    cats = Counter(category(b["correct"], a["correct"]) for b, a in pairs)
    whole = group_table(*correctness(pairs), {"all rows": range(len(pairs))}, cfg.report, paired_ci=True)[0]
    gold = [b["gold"] for b, _ in pairs]
    base_pred = [predicted_label(b) for b, _ in pairs]
    adapter_pred = [predicted_label(a) for _, a in pairs]
    shown = labels + ([UNPARSEABLE] if UNPARSEABLE in base_pred + adapter_pred else [])
    transitions = Counter(zip(base_pred, adapter_pred))
    return {
        "examples": len(pairs),
        **{name: cats.get(name, 0) for name in CATEGORIES},
        "base_accuracy": whole["base_accuracy"],
        "adapter_accuracy": whole["adapter_accuracy"],
        "accuracy_delta": whole["accuracy_delta"],
        "accuracy_delta_ci_low": whole["delta_ci"][0],
        "accuracy_delta_ci_high": whole["delta_ci"][1],
        "ci_confidence": cfg.report.confidence,
        "bootstrap_samples": cfg.report.bootstrap_samples,
        "mcnemar_p_value": whole["p_value"],
        "significant": significant(whole["p_value"], cfg.report.confidence),
        "adapter_vs_majority_class": versus_majority_class(adapter_metrics, base_metrics),
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
        **near_tie_counts(pairs, near_tie_margin(cfg, base_metrics, adapter_metrics)),
        "prior_split": prior_split(cfg, pairs, base_metrics, adapter_metrics),
    }


def accuracy_by_group(pairs: list[Pair], keys: tuple[str, ...], report: ReportConfig) -> list[GroupRow]:
    """Per value of the row fields ``keys`` (e.g. phenomenon, or phenomenon and gold label), sorted by name: the
    group table of ``stats.group_table`` (several groups are several tests, hence its q-values). Each group is
    named by ``" / ".join`` of its values."""
    groups: dict[str, list[int]] = {}
    for index, (base, _) in enumerate(pairs):
        groups.setdefault(" / ".join(str(base[key]) for key in keys), []).append(index)
    base_correct, adapter_correct = correctness(pairs)
    return group_table(base_correct, adapter_correct, dict(sorted(groups.items())), report, paired_ci=False)


def compare(cfg: Config, set_name: str, pairs: list[Pair], base_metrics: dict, adapter_metrics: dict) -> Comparison:
    """The statistics plus ``report.examples_per_category`` teaching examples of each category with errors."""
    count, seed = cfg.report.examples_per_category, cfg.report.seed
    labels = cfg.eval_sets[set_name].labels(cfg.data.labels)
    collapse = cfg.eval_sets[set_name].collapse(cfg.data.labels)
    has_phenomena = bool(pairs) and all("phenomenon" in base for base, _ in pairs)
    return Comparison(
        set_name=set_name,
        stats=compare_predictions(cfg, pairs, labels, base_metrics, adapter_metrics),
        examples={name: pick_examples(pairs, name, count, seed, collapse)
                  for name in ("corrected", "regressed", "still_wrong")},
        labels=labels, collapse=collapse, base_metrics=base_metrics, adapter_metrics=adapter_metrics,
        by_phenomenon=accuracy_by_group(pairs, ("phenomenon",), cfg.report) if has_phenomena else [],
        by_phenomenon_and_gold=accuracy_by_group(pairs, ("phenomenon", "gold"), cfg.report)
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
