"""Label-prior corrections and calibration quality, computed from the label log-probabilities one forward pass gives.

A model can score far below chance only because it leans on one label. Two label-free corrections remove that lean
without training: *contextual calibration* (Zhao et al. 2021) divides each row's label probabilities by those the
model gives a content-free input ("N/A" as every text field); *batch calibration* (Zhou et al. 2024) divides by
the mean label probabilities over the unlabeled eval rows. lm-evaluation-harness's ``acc_norm`` divides each label's
log-likelihood by the byte length of its answer word. Whatever one of these fixes is the label prior, not the task.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from scipy.stats import bootstrap

from qlora_diff.analysis.metrics import accuracy_interval
from qlora_diff.core.config import ReportConfig

RULES = ("raw", "contextual", "batch", "length_normalised")


def label_probs(logprobs: np.ndarray) -> np.ndarray:
    """Probabilities renormalised over the labels, row by row."""
    return np.exp(log_softmax(np.asarray(logprobs, dtype=float), axis=1))


def rule_scores(logprobs: np.ndarray, content_free_probs: np.ndarray, answer_bytes: np.ndarray) -> dict[str, np.ndarray]:
    """Per decision rule, scores whose argmax is that rule's prediction (shape rows x labels)."""
    logprobs = np.asarray(logprobs, dtype=float)
    log_p = log_softmax(logprobs, axis=1)
    return {
        "raw": logprobs,
        "contextual": log_p - np.log(np.asarray(content_free_probs, dtype=float)),
        "batch": log_p - np.log(np.exp(log_p).mean(axis=0)),
        "length_normalised": logprobs / np.asarray(answer_bytes, dtype=float),
    }


def margins(logprobs: np.ndarray) -> np.ndarray:
    """Top label's log-probability minus the runner-up's: how far a prediction is from flipping."""
    top_two = np.sort(np.asarray(logprobs, dtype=float), axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1], right-closed ((0.9, 1.0] is the last), the first also closed at 0."""
    return np.clip(np.ceil(np.asarray(confidence, dtype=float) * bins).astype(int) - 1, 0, bins - 1)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """ECE over :func:`bin_index` bins: the row-weighted mean |accuracy - mean confidence| (Guo et al. 2017)."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    index = bin_index(confidence, bins)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return total / len(confidence) if len(confidence) else 0.0


def brier_score(probs: np.ndarray, gold_index: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of the squared distance between the label probabilities and the
    one-hot gold label (0 is perfect; always 1/k to every label scores 1 - 1/k)."""
    probs = np.asarray(probs, dtype=float)
    one_hot = np.eye(probs.shape[1])[np.asarray(gold_index)]
    return float(((probs - one_hot) ** 2).sum(axis=1).mean()) if len(probs) else 0.0


def reliability_rows(confidence: np.ndarray, correct: np.ndarray, bins: int) -> list[dict]:
    """Reliability-diagram points: per non-empty bin, its mean confidence, accuracy and row count."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    index = bin_index(confidence, bins)
    return [{"bin": f"({b / bins:.1f}, {(b + 1) / bins:.1f}]", "confidence": round(float(confidence[index == b].mean()), 4),
             "accuracy": round(float(correct[index == b].mean()), 4), "rows": int((index == b).sum())}
            for b in range(bins) if (index == b).any()]


def label_probability(row: dict, label: str | None, collapse: dict[str, str]) -> float | None:
    """The model's probability of ``label`` in the set's label space, summed over the model labels that collapse to
    it (a 2-way set adds neutral + contradiction); None for generated answers, which have no probabilities."""
    if not row.get("probs") or label is None:
        return None
    return sum(p for model_label, p in row["probs"].items() if collapse[model_label] == label)


def set_label_probs(row: dict, set_labels: list[str], collapse: dict[str, str]) -> np.ndarray:
    """A row's probabilities of every set label, in ``set_labels`` order."""
    return np.array([label_probability(row, target, collapse) for target in set_labels])


def confidence_and_correct(rows: list[dict], set_labels: list[str], collapse: dict[str, str]) -> tuple[np.ndarray, ...]:
    """Per row: the probability the model gave the label it predicted (set label space), whether it was right,
    and all set-label probabilities."""
    probs = np.array([set_label_probs(row, set_labels, collapse) for row in rows])
    predicted = np.array([set_labels.index(row["prediction"]) for row in rows])
    correct = np.array([row["correct"] for row in rows], dtype=float)
    return probs[np.arange(len(rows)), predicted], correct, probs


def calibration_metrics(rows: list[dict], set_labels: list[str], collapse: dict[str, str], report: ReportConfig) -> dict:
    """ECE and Brier of the model's label probabilities, its mean confidence in what it predicted against its
    accuracy (positive: over-confident, with a bootstrap CI), and the accuracy under every decision rule."""
    confidence, correct, probs = confidence_and_correct(rows, set_labels, collapse)
    gap = bootstrap((confidence - correct,), np.mean, n_resamples=report.bootstrap_samples, method="percentile",
                    confidence_level=report.confidence, rng=np.random.default_rng(report.seed)).confidence_interval
    low, high = round(float(gap.low), 4), round(float(gap.high), 4)   # the CI as shown decides the verdict
    by_rule = {}
    for rule in RULES:
        right = sum(row["predictions_by_rule"][rule] == row["gold"] for row in rows)
        rule_low, rule_high = accuracy_interval(right, len(rows), report.confidence)
        by_rule[rule] = {"accuracy": round(right / len(rows), 4), "ci_low": rule_low, "ci_high": rule_high}
    return {
        "ece": round(expected_calibration_error(confidence, correct, report.calibration_bins), 4),
        "ece_bins": report.calibration_bins,
        "brier": round(brier_score(probs, np.array([set_labels.index(row["gold"]) for row in rows])), 4),
        "mean_confidence": round(float(confidence.mean()), 4),
        "confidence_minus_accuracy": round(float(confidence.mean() - correct.mean()), 4),
        "confidence_minus_accuracy_ci": [low, high],
        "confidence_verdict": "over-confident" if low > 0 else "under-confident" if high < 0 else "within noise",
        "accuracy_by_rule": by_rule,
    }
