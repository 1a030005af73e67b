"""Why rows were corrected or regressed: accuracy per slice, and slices over-represented in each category, tested.

Every slice (feature = value, e.g. ``negation_in_hypothesis = yes``) of at least ``slices.min_rows`` rows is tested
against every category (corrected, regressed, still wrong) with a one-sided Fisher exact test (category rows vs the
other rows); Benjamini-Hochberg controls the false discovery rate across *all* of those tests at once. Only
findings with q <= ``slices.q_threshold`` become sentences. With ``slices.stable_transitions_only`` and seed
replicates, rows whose answer changes with the training seed belong to no category: only seed-stable transitions
are explained.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap, fisher_exact

from qlora_diff.analysis.compare import Pair, category, correctness
from qlora_diff.analysis.slices import ARTIFACT_EASY, ARTIFACT_HARD, YES, describe
from qlora_diff.analysis.stats import GroupRow, add_q_values, group_table, paired_bootstrap_ci
from qlora_diff.core.config import Config
from qlora_diff.core.errors import InputError
from qlora_diff.core.tasks import Task

EXPLAINED = ("corrected", "regressed", "still_wrong")
UNSTABLE = "seed_dependent"   # the category of a row left out of the tests (slices.stable_transitions_only)
CATEGORY_WORDS = {"corrected": "Corrected rows", "regressed": "Regressed rows", "still_wrong": "Still-wrong rows"}


@dataclass(frozen=True)
class Explanation:
    """One evaluation set's slice analysis: the table, every over-representation test, and the stated findings."""

    features: dict[str, dict[str, str]]   # row id -> feature -> value
    slices: list[GroupRow]
    tests: list[dict]
    findings: list[str]
    gain_split: dict | None
    hypothesis_only: dict   # the bag-of-words baseline's metrics on the set (the slices stage)
    q_threshold: float
    task: Task
    fields: tuple[str, ...]   # the rows' text fields, as the examples show them
    left_out_seed_dependent: int = 0   # rows not tested because their answer changes with the training seed

    def metrics(self) -> dict:
        """Per tracked slice: rows, both accuracies and the delta, so `dvc metrics diff` follows them; plus the
        hard-vs-easy gain split and how many findings passed."""
        tracked = {}
        for row in self.slices:
            feature, value = row["feature"], row["value"]
            if value == YES or feature == "artifact":
                key = feature if value == YES else f"{feature}_{value}"
                tracked[key] = {k: row[k] for k in ("rows", "base_accuracy", "adapter_accuracy", "accuracy_delta")}
        out = {"slices": tracked, "findings": len(self.findings),
               "hypothesis_only_accuracy": self.hypothesis_only["accuracy"]}
        if self.gain_split:
            out["gain_hard_minus_easy"] = self.gain_split["difference"]
        return out


def attach_features(pairs: list[Pair], slice_rows: list[dict], origin: str) -> dict[str, dict[str, str]]:
    """Row id -> features, checked to cover exactly the compared rows."""
    features = {row["id"]: row["features"] for row in slice_rows}
    missing = [base["id"] for base, _ in pairs if base["id"] not in features]
    if missing or len(features) != len(pairs):
        raise InputError(f"{origin}: slice features cover {len(features)} rows, predictions {len(pairs)} "
                         f"(missing e.g. {missing[:3]}); rerun `dvc repro` for this set.")
    return features


def slice_members(pairs: list[Pair], features: dict[str, dict[str, str]]) -> dict[tuple[str, str], list[int]]:
    """(feature, value) -> indices of the pairs in it, features in their row order, values sorted."""
    members: dict[tuple[str, str], list[int]] = {}
    for index, (base, _) in enumerate(pairs):
        for feature, value in features[base["id"]].items():
            members.setdefault((feature, value), []).append(index)
    order = list(features[pairs[0][0]["id"]]) if pairs else []
    return dict(sorted(members.items(), key=lambda item: (order.index(item[0][0]), item[0][1])))


def slice_table(cfg: Config, pairs: list[Pair], members: dict[tuple[str, str], list[int]]) -> list[GroupRow]:
    """Per slice, in ``members`` order: the group table (``stats.group_table``) with a paired-bootstrap CI of the
    difference and q-values across every slice, each row also naming its ``feature`` and ``value``."""
    base_correct, adapter_correct = correctness(pairs)
    rows = group_table(base_correct, adapter_correct, {f"{f} = {v}": indices for (f, v), indices in members.items()},
                       cfg.report, paired_ci=True)
    return [GroupRow(feature=feature, value=value, **row) for (feature, value), row in zip(members, rows)]


def over_representation(categories: list[str], members: dict[tuple[str, str], list[int]], min_rows: int) -> list[dict]:
    """Fisher exact (one-sided, greater) for each category x slice of >= ``min_rows`` rows, with the lift
    P(slice | category) / P(slice) and Benjamini-Hochberg q across all tests together. Rows of category
    ``UNSTABLE`` are in no test, on either side."""
    total = sum(name != UNSTABLE for name in categories)
    counts = Counter(categories)
    members = {key: [i for i in indices if categories[i] != UNSTABLE] for key, indices in members.items()}
    tests = []
    for name in EXPLAINED:
        in_category = counts.get(name, 0)
        if in_category == 0:
            continue
        for (feature, value), indices in members.items():
            if len(indices) < min_rows or len(indices) == total:
                continue
            both = sum(categories[i] == name for i in indices)
            table = [[both, in_category - both], [len(indices) - both, total - in_category - len(indices) + both]]
            rate_in_category, rate_overall = both / in_category, len(indices) / total
            tests.append({
                "category": name, "feature": feature, "value": value, "category_rows": in_category,
                "slice_rows": len(indices), "both": both, "rate_in_category": rate_in_category,
                "rate_overall": rate_overall, "lift": rate_in_category / rate_overall,
                "p_value": float(fisher_exact(table, alternative="greater").pvalue),
            })
    add_q_values(tests)
    return tests


def finding_sentence(test: dict, cfg: Config, words: dict[str, str] = CATEGORY_WORDS) -> str:
    """One passed test as a sentence; ``words`` names the categories (e.g. "Fixed by B" between two runs)."""
    lift = f"{test['lift']:.1f}" if test["lift"] >= 1.1 else f"{test['lift']:.2f}"  # a small lift keeps its digits
    return (f"{words[test['category']]} have {describe(test['feature'], test['value'], cfg)} "
            f"{lift}x as often as all rows ({100 * test['rate_in_category']:.0f}% vs "
            f"{100 * test['rate_overall']:.0f}%, q = {test['q_value']:.2g}).")


def findings(tests: list[dict], cfg: Config, words: dict[str, str] = CATEGORY_WORDS) -> list[str]:
    """Sentences for the tests that pass ``slices.q_threshold``, strongest first within each category."""
    passed = [t for t in tests if t["q_value"] <= cfg.slices.q_threshold]
    passed.sort(key=lambda t: (EXPLAINED.index(t["category"]), t["q_value"], -t["lift"], t["feature"], t["value"]))
    return [finding_sentence(t, cfg, words) for t in passed]


def gain_split(cfg: Config, pairs: list[Pair], members: dict[tuple[str, str], list[int]]) -> dict | None:
    """The adapter's gain on hard vs artifact-easy rows, each with a bootstrap CI, and their difference (rows
    resampled within each group)."""
    hard, easy = members.get(("artifact", ARTIFACT_HARD)), members.get(("artifact", ARTIFACT_EASY))
    if not hard or not easy or len(hard) < 2 or len(easy) < 2:
        return None
    base, adapter = correctness(pairs)
    gains = adapter - base
    report = cfg.report
    difference = bootstrap((gains[hard], gains[easy]), lambda h, e, axis: h.mean(axis) - e.mean(axis),
                           vectorized=True, n_resamples=report.bootstrap_samples, confidence_level=report.confidence,
                           method="percentile", rng=np.random.default_rng(report.seed)).confidence_interval
    split = {}
    for name, indices in (("hard", hard), ("easy", easy)):
        split[name] = {"rows": len(indices), "gain": round(float(gains[indices].mean()), 4),
                       "ci": paired_bootstrap_ci(base[indices], adapter[indices], report.bootstrap_samples,
                                                 report.seed, report.confidence)}
    split["difference"] = round(split["hard"]["gain"] - split["easy"]["gain"], 4)
    split["difference_ci"] = (round(float(difference.low), 4), round(float(difference.high), 4))
    split["difference_beyond_noise"] = split["difference_ci"][0] > 0 or split["difference_ci"][1] < 0
    return split


def explain(cfg: Config, pairs: list[Pair], slice_rows: list[dict], hypothesis_only: dict,
            origin: str = "slices", seed_dependent: frozenset[str] = frozenset()) -> Explanation:
    """The slice table, every over-representation test, the findings that pass and the hard-vs-easy split. Rows in
    ``seed_dependent`` (ids) are left out of the tests; the slice table still counts every row."""
    features = attach_features(pairs, slice_rows, origin)
    members = slice_members(pairs, features)
    categories = [UNSTABLE if b["id"] in seed_dependent else category(b["correct"], a["correct"]) for b, a in pairs]
    tests = over_representation(categories, members, cfg.slices.min_rows)
    return Explanation(features=features, slices=slice_table(cfg, pairs, members), tests=tests,
                       findings=findings(tests, cfg), gain_split=gain_split(cfg, pairs, members),
                       hypothesis_only=hypothesis_only, q_threshold=cfg.slices.q_threshold, task=cfg.task_spec,
                       fields=tuple(cfg.fields),
                       left_out_seed_dependent=categories.count(UNSTABLE))


def slice_plot_rows(explanation: Explanation) -> list[dict]:
    """`dvc plots` data: per slice and model, its accuracy (the grouped-bar template draws base vs adapter)."""
    return [{"slice": f"{row['feature']}={row['value']}", "model": model, "accuracy": row[f"{model}_accuracy"]}
            for row in explanation.slices for model in ("base", "adapter")]
