"""Classification metrics with confidence intervals and the baselines every accuracy is read against."""

from __future__ import annotations

from collections import Counter

from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

UNPARSEABLE = "unparseable"  # the prediction of a generated answer that names no label


def chance_rate(labels: list[str]) -> float:
    """Accuracy of guessing a label uniformly at random."""
    return round(1 / len(labels), 4)


def majority_class_rate(gold: list[str]) -> float:
    """Accuracy of always predicting the most common gold label."""
    return round(max(Counter(gold).values()) / len(gold), 4) if gold else 0.0


def accuracy_interval(correct: int, total: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval: well-behaved near 0 and 1 and on small samples like the reference's 100 rows."""
    if total == 0:
        return 0.0, 0.0
    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return round(interval.low, 4), round(interval.high, 4)


def classification_metrics(gold: list[str], predicted: list[str | None], labels: list[str], confidence: float) -> dict:
    """Accuracy (+CI), macro-F1, per-class precision/recall/F1 and baselines; ``None`` predictions count as wrong."""
    predicted = [p if p is not None else UNPARSEABLE for p in predicted]
    correct = sum(g == p for g, p in zip(gold, predicted))
    low, high = accuracy_interval(correct, len(gold), confidence)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "ci_confidence": confidence,
        "macro_f1": round(float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)), 4),
        "per_class": {
            label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                    "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "examples": len(gold),
        "correct": correct,
        "chance_accuracy": chance_rate(labels),
        "majority_class_accuracy": majority_class_rate(gold),
    }
