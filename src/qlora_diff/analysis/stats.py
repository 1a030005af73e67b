"""The statistics every comparison uses, written once: exact McNemar, the paired bootstrap, Benjamini-Hochberg, and
the per-group table (both accuracies with Wilson CIs, the paired difference, the discordant counts, p and q).

The group table serves every split of the rows: slices (explain.py) and challenge phenomena (compare.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
from scipy.stats import binomtest, bootstrap, false_discovery_control

from qlora_diff.analysis.metrics import accuracy_interval
from qlora_diff.core.config import ReportConfig


class GroupRow(TypedDict, total=False):
    """One group of rows: both models' accuracy with Wilson CIs, the difference (with a paired-bootstrap CI when
    asked for), corrected/regressed counts, exact McNemar p and Benjamini-Hochberg q across the table's groups."""

    group: str
    feature: str   # slices only: the feature and value that define the group
    value: str
    rows: int
    base_accuracy: float
    base_ci: tuple[float, float]
    adapter_accuracy: float
    adapter_ci: tuple[float, float]
    accuracy_delta: float
    delta_ci: tuple[float, float]
    corrected: int
    regressed: int
    p_value: float
    q_value: float


def mcnemar_exact_p(corrected: int, regressed: int) -> float:
    """Two-sided exact McNemar test: a binomial test on the discordant pairs."""
    if corrected + regressed == 0:
        return 1.0
    return float(binomtest(min(corrected, regressed), corrected + regressed, 0.5).pvalue)


def paired_bootstrap_ci(before: np.ndarray, after: np.ndarray, samples: int, seed: int,
                        confidence: float) -> tuple[float, float]:
    """Percentile CI of the accuracy difference ``after - before``, resampling rows (pairs) with replacement."""
    result = bootstrap(
        (np.asarray(before, dtype=float), np.asarray(after, dtype=float)),
        lambda base, adapter, axis: adapter.mean(axis) - base.mean(axis),
        paired=True, vectorized=True, n_resamples=samples, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed), batch=1000,
    )
    return round(float(result.confidence_interval.low), 4), round(float(result.confidence_interval.high), 4)


def add_q_values(tests: Sequence[dict]) -> None:
    """Benjamini-Hochberg q-values across ``tests`` (each with a ``p_value``), written into each as ``q_value``:
    several tests at once need a false-discovery control."""
    if tests:
        for test, q in zip(tests, false_discovery_control([t["p_value"] for t in tests], method="bh")):
            test["q_value"] = float(q)


def significant(p_value: float, confidence: float) -> bool:
    """The one significance rule of every verdict: p below 1 - ``confidence`` (``report.confidence``), the level
    rounded so that floating point cannot move it (1 - 0.95 is 0.050000000000000044)."""
    return p_value < round(1 - confidence, 12)


def group_table(base_correct: np.ndarray, adapter_correct: np.ndarray, groups: Mapping[str, Sequence[int]],
                report: ReportConfig, paired_ci: bool) -> list[GroupRow]:
    """One row per group (name -> row indices), in the order given; q-values across all of them."""
    base_correct = np.asarray(base_correct, dtype=float)
    adapter_correct = np.asarray(adapter_correct, dtype=float)
    rows: list[GroupRow] = []
    for name, indices in groups.items():
        b, a = base_correct[list(indices)], adapter_correct[list(indices)]
        corrected, regressed = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        row = GroupRow(group=name, rows=len(indices),
                       base_accuracy=round(float(b.mean()), 4),
                       base_ci=accuracy_interval(int(b.sum()), len(indices), report.confidence),
                       adapter_accuracy=round(float(a.mean()), 4),
                       adapter_ci=accuracy_interval(int(a.sum()), len(indices), report.confidence),
                       accuracy_delta=round(float(a.mean() - b.mean()), 4))
        if paired_ci:
            row["delta_ci"] = (paired_bootstrap_ci(b, a, report.bootstrap_samples, report.seed, report.confidence)
                               if len(indices) > 1 else (float(a.mean() - b.mean()),) * 2)
        row.update(corrected=corrected, regressed=regressed, p_value=mcnemar_exact_p(corrected, regressed))
        rows.append(row)
    add_q_values(rows)
    return rows
