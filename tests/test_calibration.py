"""Calibration by hand-computed numbers: a known label bias is removed, ECE and Brier match pinned values, near-ties
follow their threshold, and the gain split adds up."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax

from qlora_diff.analysis.calibration import (
    brier_score,
    expected_calibration_error,
    label_probs,
    margins,
    reliability_rows,
    rule_scores,
)
from qlora_diff.analysis.compare import join_predictions, near_tie_counts, prior_split
from qlora_diff.core.config import parse_config

LABELS = ["entailment", "neutral", "contradiction"]


def biased_model(rows_per_label: int = 20, evidence: float = 3.0, bias=(-2.5, 0.0, 2.0)):
    """Rows whose unbiased log-odds favour their own label by ``evidence`` (balanced over labels, with noise), plus a
    label bias added to every input, the content-free one included (whose unbiased scores are flat)."""
    rng = np.random.default_rng(0)
    gold = np.repeat(np.arange(3), rows_per_label)
    unbiased = np.eye(3)[gold] * evidence + rng.normal(0, 0.3, (len(gold), 3))
    biased = log_softmax(unbiased + np.array(bias), axis=1)
    content_free = label_probs(np.array([bias]))[0]
    return unbiased, biased, content_free


def test_both_calibrations_recover_the_unbiased_argmax():
    unbiased, biased, content_free = biased_model()
    truth = unbiased.argmax(axis=1)
    scores = rule_scores(biased, content_free, np.array([10, 7, 13]))
    assert (scores["raw"].argmax(axis=1) != truth).sum() >= 20  # the bias flips a third of the rows
    assert (scores["contextual"].argmax(axis=1) == truth).all()
    assert (scores["batch"].argmax(axis=1) == truth).all()


def test_length_normalisation_divides_by_answer_bytes():
    scores = rule_scores(np.array([[-2.0, -3.0, -6.0]]), np.ones(3) / 3, np.array([10, 5, 20]))
    assert scores["length_normalised"].tolist() == [[-0.2, -0.6, -0.3]]


def test_ece_and_brier_equal_hand_computed_values():
    confidence = np.array([0.95, 0.85, 0.65, 0.62, 0.30])
    correct = np.array([1, 0, 1, 0, 0])
    # bins of width 0.1: (0.9,1] {0.95: acc 1}, (0.8,0.9] {0.85: acc 0}, (0.6,0.7] {0.65, 0.62: acc 0.5},
    # (0.2,0.3] {0.30: acc 0}: (0.05 + 0.85 + 2 * 0.135 + 0.30) / 5
    assert expected_calibration_error(confidence, correct, bins=10) == pytest.approx(0.294)
    assert brier_score(np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]), np.array([0, 2])) == pytest.approx(0.46)
    assert [r["rows"] for r in reliability_rows(confidence, correct, bins=10)] == [1, 2, 1, 1]


def test_margins_are_top_minus_runner_up():
    assert margins(np.array([[-0.5, -2.0, -0.7], [-3.0, -1.0, -1.0]])).tolist() == pytest.approx([0.2, 0.0])


def row(row_id: str, gold: str, predicted: str, margin: float, rules: dict[str, str] | None = None) -> dict:
    return {"id": row_id, "gold": gold, "prediction": predicted, "correct": gold == predicted, "margin": margin,
            "predictions_by_rule": {"raw": predicted, **(rules or {})}}


def test_near_tie_flags_follow_the_threshold():
    base = [row("a", "neutral", "entailment", 0.5), row("b", "neutral", "entailment", 0.0004),
            row("c", "neutral", "neutral", 0.2), row("d", "neutral", "neutral", 0.3)]
    adapter = [row("a", "neutral", "neutral", 0.3), row("b", "neutral", "neutral", 0.6),
               row("c", "neutral", "entailment", 0.002), row("d", "neutral", "neutral", 0.0001)]
    pairs = join_predictions(base, adapter)
    assert near_tie_counts(pairs, 0.001) == {
        "near_tie_margin": 0.001, "corrected_near_tie": 1, "regressed_near_tie": 0, "corrected_beyond_noise": 1,
        "regressed_beyond_noise": 1, "mcnemar_p_value_beyond_noise": 1.0}
    counts = near_tie_counts(pairs, 0.01)
    assert (counts["corrected_near_tie"], counts["regressed_near_tie"]) == (1, 1)


def test_prior_split_adds_up():
    """10 rows: base raw right on 2, contextual-calibrated base right on 6, adapter right on 9."""
    base, adapter = [], []
    for i in range(10):
        calibrated = "neutral" if i < 6 else "entailment"
        base.append(row(f"r{i}", "neutral", "neutral" if i < 2 else "contradiction", 1.0,
                        {"contextual": calibrated, "batch": calibrated}))
        adapter.append(row(f"r{i}", "neutral", "neutral" if i < 9 else "entailment", 1.0,
                           {"contextual": "neutral", "batch": "neutral"}))
    cfg = parse_config({"report": {"bootstrap_samples": 500}})
    # The evaluate stages' accuracy per rule for these rows (prior_split reads them there, never recounts them).
    by_rule = lambda raw, calibrated: {"calibration": {"accuracy_by_rule": {
        "raw": {"accuracy": raw}, "contextual": {"accuracy": calibrated}, "batch": {"accuracy": calibrated}}}}
    split = prior_split(cfg, join_predictions(base, adapter), by_rule(0.2, 0.6), by_rule(0.9, 1.0))
    contextual = split["contextual"]
    assert (contextual["base_raw_accuracy"], contextual["base_calibrated_accuracy"],
            contextual["adapter_raw_accuracy"]) == (0.2, 0.6, 0.9)
    assert (contextual["prior_gain"], contextual["adapter_raw_beyond_prior"]) == (0.4, 0.3)
    assert contextual["prior_gain_ci"][0] <= 0.4 <= contextual["prior_gain_ci"][1]
    assert contextual["adapter_calibrated_accuracy"] == 1.0
