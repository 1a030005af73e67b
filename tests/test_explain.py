"""Explanations on synthetic prediction files: a planted effect is stated with its numbers, random flips are not
(false-discovery control measured over fixed-seed null runs), and the statistics equal scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import model_metrics, seed_metrics

from qlora_diff.analysis.compare import category, compare, join_predictions, pick_examples
from qlora_diff.analysis.explain import (
    attach_features,
    explain,
    findings,
    gain_split,
    over_representation,
    slice_members,
    slice_plot_rows,
)
from qlora_diff.core.config import parse_config
from qlora_diff.core.errors import InputError
from qlora_diff.render.report import render_set_section

LABELS = ["entailment", "neutral", "contradiction"]
CFG = parse_config({"report": {"bootstrap_samples": 500}})
HYPOTHESIS_ONLY = {"accuracy": 0.5, "accuracy_ci_low": 0.45, "accuracy_ci_high": 0.55, "chance_accuracy": 0.3333,
                   "majority_class_accuracy": 0.34}


def row(row_id: str, gold: str, correct: bool, gold_prob: float = 0.6) -> dict:
    predicted = gold if correct else next(label for label in LABELS if label != gold)
    rest = (1 - gold_prob) / 2
    return {"id": row_id, "premise": "p", "hypothesis": "h", "gold": gold, "prediction": predicted,
            "probs": {label: gold_prob if label == gold else rest for label in LABELS}, "correct": correct}


def synthetic(outcomes: list[tuple[bool, bool]], features: list[dict[str, str]]) -> tuple[list, list[dict]]:
    """Joined (base, adapter) pairs and slice rows from per-row (base correct, adapter correct) and features."""
    base = [row(f"r{i:04d}", "neutral", b) for i, (b, _) in enumerate(outcomes)]
    adapter = [row(f"r{i:04d}", "neutral", a) for i, (_, a) in enumerate(outcomes)]
    slice_rows = [{"id": f"r{i:04d}", "features": f} for i, f in enumerate(features)]
    return join_predictions(base, adapter), slice_rows


def random_run(seed: int, rows: int = 400) -> tuple[list, list[dict]]:
    """Random flips, independent of five random yes/no features and a 3-way gold-like feature: no real effect."""
    rng = np.random.default_rng(seed)
    outcomes = [(bool(b), bool(a)) for b, a in zip(rng.random(rows) < 0.5, rng.random(rows) < 0.6)]
    features = [{"gold": str(rng.choice(LABELS)), "artifact": "easy" if rng.random() < 0.5 else "hard",
                 **{f"w{k}_in_hypothesis": "yes" if rng.random() < 0.25 else "no" for k in range(5)}}
                for _ in range(rows)]
    return synthetic(outcomes, features)


def planted_run() -> tuple[list, list[dict]]:
    """600 rows, 120 (20%) with a negation word in the hypothesis. 40 rows regress, 30 of them negation rows (75%);
    80 are corrected and 60 stay wrong, spread evenly over negation and other rows."""
    outcomes, negation = [], []
    plan = [("regressed", True, 30), ("regressed", False, 10), ("corrected", True, 16), ("corrected", False, 64),
            ("still_wrong", True, 12), ("still_wrong", False, 48), ("still_right", True, 62),
            ("still_right", False, 358)]
    as_outcome = {"corrected": (False, True), "regressed": (True, False), "still_wrong": (False, False),
                  "still_right": (True, True)}
    for name, has_negation, count in plan:
        outcomes += [as_outcome[name]] * count
        negation += [has_negation] * count
    features = [{"gold": "neutral", "artifact": "hard" if i % 2 else "easy",
                 "negation_in_hypothesis": "yes" if neg else "no"} for i, neg in enumerate(negation)]
    return synthetic(outcomes, features)


def test_a_planted_negation_effect_is_stated_with_the_right_numbers():
    pairs, slice_rows = planted_run()
    explanation = explain(CFG, pairs, slice_rows, HYPOTHESIS_ONLY)
    stated = [s for s in explanation.findings if s.startswith("Regressed rows have a negation word in the hypothesis")]
    test = next(t for t in explanation.tests if (t["category"], t["feature"], t["value"]) ==
                ("regressed", "negation_in_hypothesis", "yes"))
    assert (test["both"], test["category_rows"], test["slice_rows"]) == (30, 40, 120)
    assert test["lift"] == pytest.approx(0.75 / 0.20)
    assert stated == [f"Regressed rows have a negation word in the hypothesis 3.8x as often as all rows "
                      f"(75% vs 20%, q = {test['q_value']:.2g})."]
    assert test["q_value"] < 1e-6
    negation = next(r for r in explanation.slices if (r["feature"], r["value"]) == ("negation_in_hypothesis", "yes"))
    assert (negation["rows"], negation["corrected"], negation["regressed"]) == (120, 16, 30)
    assert negation["accuracy_delta"] == pytest.approx((16 - 30) / 120, abs=1e-4)
    low, high = negation["delta_ci"]
    assert low < negation["accuracy_delta"] < high
    assert explanation.metrics()["slices"]["negation_in_hypothesis"]["accuracy_delta"] == negation["accuracy_delta"]


def test_random_flips_state_findings_in_at_most_10_of_100_null_runs():
    runs_with_findings = 0
    for seed in range(100):
        pairs, slice_rows = random_run(seed)
        members = slice_members(pairs, attach_features(pairs, slice_rows, "null"))
        categories = [category(b["correct"], a["correct"]) for b, a in pairs]
        tests = over_representation(categories, members, min_rows=10)
        assert len(tests) == 3 * (3 + 2 + 10)  # every category x every slice value
        runs_with_findings += bool(findings(tests, CFG))
    assert runs_with_findings <= 10, runs_with_findings


def test_fisher_and_bh_values_on_a_pinned_table():
    """10 rows, 4 regressed (rows 0-2 and 5); the slice holds rows 0-4. Regressed x in-slice is [[3, 1], [2, 4]]:
    one-sided Fisher p = P(X >= 3), X ~ hypergeometric(10 rows, 5 in the slice, 4 regressed)
    = (C(5,3) C(5,1) + C(5,4) C(5,0)) / C(10,4) = 55/210; out of the slice P(X >= 1) = 1 - C(5,4)/C(10,4) = 205/210.
    BH over these 2 tests: q = min(2 * 55/210, 205/210) = 110/210 and 205/210."""
    categories = ["regressed"] * 3 + ["still_right"] * 2 + ["regressed"] + ["still_right"] * 4
    members = {("negation_in_hypothesis", "yes"): [0, 1, 2, 3, 4], ("negation_in_hypothesis", "no"): [5, 6, 7, 8, 9]}
    tests = {t["value"]: t for t in over_representation(categories, members, min_rows=1)}
    assert set(tests) == {"yes", "no"} and all(t["category"] == "regressed" for t in tests.values())
    assert (tests["yes"]["both"], tests["yes"]["category_rows"], tests["yes"]["slice_rows"]) == (3, 4, 5)
    assert tests["yes"]["p_value"] == pytest.approx(55 / 210, rel=1e-9)
    assert tests["no"]["p_value"] == pytest.approx(205 / 210, rel=1e-9)
    assert tests["yes"]["lift"] == pytest.approx((3 / 4) / (5 / 10))
    assert tests["yes"]["q_value"] == pytest.approx(110 / 210, rel=1e-9)
    assert tests["no"]["q_value"] == pytest.approx(205 / 210, rel=1e-9)


def test_nothing_stands_out_is_said_when_nothing_passes():
    pairs, slice_rows = random_run(seed=1)
    explanation = explain(CFG, pairs, slice_rows, HYPOTHESIS_ONLY)
    assert explanation.findings == []
    comparison = compare(CFG, "snli", pairs, *(model_metrics(CFG, [pair[i] for pair in pairs]) for i in (0, 1)))
    seeds = seed_metrics(CFG, "snli", [b for b, _ in pairs], {42: [a for _, a in pairs]})
    assert "Nothing stands out: no slice is over-represented" in render_set_section(comparison, explanation, seeds)


def test_gain_split_on_hard_and_easy_rows():
    # hard: 40 rows, 20 corrected -> +50 points; easy: 60 rows, 6 regressed -> -10 points
    outcomes = [(False, True)] * 20 + [(True, True)] * 20 + [(True, False)] * 6 + [(True, True)] * 54
    features = [{"artifact": "hard"}] * 40 + [{"artifact": "easy"}] * 60
    pairs, slice_rows = synthetic(outcomes, features)
    split = gain_split(CFG, pairs, slice_members(pairs, attach_features(pairs, slice_rows, "split")))
    assert (split["hard"]["gain"], split["easy"]["gain"], split["difference"]) == (0.5, -0.1, 0.6)
    assert split["hard"]["ci"][0] < 0.5 < split["hard"]["ci"][1]
    assert split["difference_ci"][0] < 0.6 < split["difference_ci"][1] and split["difference_ci"][0] > 0.3


def test_features_must_cover_the_compared_rows():
    pairs, slice_rows = random_run(seed=2, rows=20)
    with pytest.raises(InputError, match="slices.jsonl: slice features cover 19 rows, predictions 20"):
        attach_features(pairs, slice_rows[1:], "slices.jsonl")


def test_examples_are_the_largest_gold_probability_changes():
    base = [row("a", "neutral", False, 0.30), row("b", "neutral", False, 0.10), row("c", "neutral", True, 0.50),
            row("d", "neutral", True, 0.90)]
    adapter = [row("a", "neutral", True, 0.40), row("b", "neutral", True, 0.95), row("c", "neutral", False, 0.30),
               row("d", "neutral", False, 0.05)]
    pairs = join_predictions(base, adapter)
    identity = {label: label for label in LABELS}
    assert [p[0]["id"] for p in pick_examples(pairs, "corrected", 2, 0, identity)] == ["b", "a"]
    assert [p[0]["id"] for p in pick_examples(pairs, "regressed", 1, 0, identity)] == ["d"]
    two_way = {"entailment": "entailment", "neutral": "not_entailment", "contradiction": "not_entailment"}
    collapsed = [{**r, "gold": "not_entailment"} for r in base[:1]]
    from qlora_diff.analysis.compare import gold_probability
    assert gold_probability(collapsed[0], two_way) == pytest.approx(0.30 + 0.35)


def test_slice_plot_has_both_models_per_slice():
    pairs, slice_rows = planted_run()
    rows = slice_plot_rows(explain(CFG, pairs, slice_rows, HYPOTHESIS_ONLY))
    negation = [r for r in rows if r["slice"] == "negation_in_hypothesis=yes"]
    assert negation == [{"slice": "negation_in_hypothesis=yes", "model": "base", "accuracy": round(92 / 120, 4)},
                        {"slice": "negation_in_hypothesis=yes", "model": "adapter", "accuracy": round(78 / 120, 4)}]
