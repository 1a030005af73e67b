"""Training-seed replicates: how far a result moves when only the training seed changes, per set and per row, and a
comparison of two configs that counts that movement as noise.

A fine-tune's seed decides the LoRA initialisation and the order of the training rows (``train.seed``); which rows
are trained and evaluated stays fixed by ``data.seed`` and the eval sets' seeds. So every replicate scores the same
rows, and the rows x seeds table of right/wrong answers is what everything here reads:

- the spread of accuracy across seeds (mean, sd, min, max);
- a CI for a difference that covers row sampling *and* seed variation (``SeedRowNoise``: seed and row variance
  components of the crossed seeds x rows design, a t interval);
- per row: in how many seeds the adapter is right, corrects or breaks the base model, the mean and sd of p(gold)
  across seeds (dataset cartography, Swayamdipta et al. 2020, with seeds in place of epochs), and a label.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from qlora_diff.analysis.calibration import label_probability
from qlora_diff.analysis.compare import index_predictions
from qlora_diff.core.config import Config
from qlora_diff.core.errors import InputError

STABLE_CORRECT, STABLE_WRONG, SEED_DEPENDENT = "stable-correct", "stable-wrong", "seed-dependent"


def correctness_matrix(replicates: list[list[dict]], origin: str = "replicates") -> np.ndarray:
    """Seeds x rows of 0/1 (right or wrong), rows in the first replicate's order; every replicate must hold exactly
    the same row ids."""
    return _seed_matrix(replicates, origin, lambda row: bool(row["correct"]))


def prediction_matrix(replicates: list[list[dict]], label: str, origin: str = "replicates") -> np.ndarray:
    """Seeds x rows of 0/1: whether each seed predicted ``label`` for the row (rows as in ``correctness_matrix``):
    its mean is the share of predictions with that label, the model's label prior on these rows."""
    return _seed_matrix(replicates, origin, lambda row: row["prediction"] == label)


def _seed_matrix(replicates: list[list[dict]], origin: str, value: Callable[[dict], bool]) -> np.ndarray:
    if not replicates:
        raise InputError(f"{origin}: no replicate to read.")
    order = [row["id"] for row in replicates[0]]
    matrix = []
    for index, rows in enumerate(replicates):
        by_id = index_predictions(rows, f"{origin}: replicate {index}")   # ids present and unique
        if set(by_id) != set(order):
            missing = next((i for i in order if i not in by_id), None)
            raise InputError(f"{origin}: replicate {index} scored other rows than replicate 0 "
                             f"({len(rows)} vs {len(order)} rows; first missing id {missing!r}).")
        matrix.append([value(by_id[i]) for i in order])
    return np.array(matrix, dtype=float)


@dataclass(frozen=True)
class SeedSpread:
    """Accuracy across seeds: what one more seed of the same config may give."""

    seeds: int
    mean: float
    sd: float        # sample sd (ddof 1); 0 with one seed, where it is not measured
    min: float
    max: float

    def as_metrics(self) -> dict:
        return {"seeds": self.seeds, "accuracy_mean": round(self.mean, 4), "accuracy_sd": round(self.sd, 4),
                "accuracy_min": round(self.min, 4), "accuracy_max": round(self.max, 4)}


def seed_spread(correct: np.ndarray) -> SeedSpread:
    accuracies = correct.mean(axis=1)
    return SeedSpread(seeds=len(accuracies), mean=float(accuracies.mean()),
                      sd=float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
                      min=float(accuracies.min()), max=float(accuracies.max()))


@dataclass(frozen=True)
class SeedRowNoise:
    """What the CI of a difference B - A of two seeds x rows tables on the same rows is made of.

    The tables are a crossed design: every seed answers every row. With n_a, n_b seeds, R rows, s_a^2 and s_b^2 the
    sample variances of each side's per-seed accuracies (seed noise, including each seed's row-level coin flips) and
    H the variance over rows of the true per-row difference, the observed difference of the mean accuracies has
    variance s_a^2 / n_a + s_b^2 / n_b + H / R. H is the variance over rows of the observed per-row differences less
    each side's seed x row residual variance over its seeds (what a row's answer varies by from seed to seed beyond
    the seed's overall level), so a row's seed noise is counted once, not again as row noise as resampling both
    seeds and rows would (Owen 2007). A side with one seed has no seed variance: the base model, which has no seed,
    or a single fine-tune, whose own seed noise is then not in the CI."""

    rows: int
    seeds: tuple[int, int]
    seed_variance: tuple[float, float]
    heterogeneity: float

    def parts(self, seeds: tuple[int, int] | None = None) -> list[tuple[float, float]]:
        """(variance, degrees of freedom) of each part of the difference's variance with ``seeds`` per side."""
        n_a, n_b = seeds or self.seeds
        return [(self.seed_variance[0] / n_a, n_a - 1), (self.seed_variance[1] / n_b, n_b - 1),
                (self.heterogeneity / self.rows, self.rows - 1)]

    def se(self, seeds: tuple[int, int] | None = None) -> float:
        return math.sqrt(sum(variance for variance, _ in self.parts(seeds)))

    def df(self, seeds: tuple[int, int] | None = None) -> float:
        """Welch-Satterthwaite degrees of freedom of the variance estimate: few when seed noise dominates."""
        parts = [(variance, df) for variance, df in self.parts(seeds) if variance > 0 and df > 0]
        if not parts:
            return math.inf
        return sum(variance for variance, _ in parts) ** 2 / sum(variance**2 / df for variance, df in parts)

    def half_width(self, confidence: float, seeds: tuple[int, int] | None = None) -> float:
        return t_quantile(confidence, self.df(seeds)) * self.se(seeds)


def t_quantile(confidence: float, df: float) -> float:
    """The two-sided Student t quantile of ``confidence`` (the normal one for infinite df)."""
    tail = (1 - confidence) / 2
    return float(norm.ppf(1 - tail) if math.isinf(df) else student_t.ppf(1 - tail, df))


def _residual_variance(side: np.ndarray) -> float:
    """The seed x row residual mean square of a seeds x rows table (0 with one seed)."""
    seeds, rows = side.shape
    if seeds < 2:
        return 0.0
    residual = side - side.mean(axis=0) - side.mean(axis=1, keepdims=True) + side.mean()
    return float((residual**2).sum() / ((seeds - 1) * (rows - 1)))


def seed_row_noise(before: np.ndarray, after: np.ndarray) -> SeedRowNoise:
    """``SeedRowNoise`` of ``after`` - ``before``, both seeds x rows on the same rows."""
    before, after = np.atleast_2d(before).astype(float), np.atleast_2d(after).astype(float)
    if before.shape[1] != after.shape[1]:
        raise ValueError(f"both sides must score the same rows: {before.shape[1]} vs {after.shape[1]}")
    rows = before.shape[1]
    per_row = after.mean(axis=0) - before.mean(axis=0)
    row_variance = float(per_row.var(ddof=1)) if rows > 1 else 0.0
    heterogeneity = max(row_variance - sum(_residual_variance(side) / len(side) for side in (before, after)), 0.0)
    seed_variance = tuple(float(side.mean(axis=1).var(ddof=1)) if len(side) > 1 else 0.0 for side in (before, after))
    return SeedRowNoise(rows=rows, seeds=(len(before), len(after)), seed_variance=seed_variance,
                        heterogeneity=heterogeneity)


def seed_row_ci(before: np.ndarray, after: np.ndarray, confidence: float) -> tuple[float, float]:
    """CI of mean accuracy(after) - mean accuracy(before), both seeds x rows on the same rows: a t interval on
    ``SeedRowNoise``, covering seed variation and row sampling. With one seed a side it is the paired t interval of
    the per-row differences."""
    noise = seed_row_noise(before, after)
    observed = float(np.atleast_2d(after).mean() - np.atleast_2d(before).mean())
    half = noise.half_width(confidence)
    return round(observed - half, 4) + 0.0, round(observed + half, 4) + 0.0   # + 0.0: no "-0.0" in a report


def row_stability(base_rows: list[dict], replicates: list[list[dict]], collapse: dict[str, str]) -> list[dict]:
    """Per row (base file order): in how many seeds the adapter is right, corrects and breaks the base model's
    answer, the mean and sd of its p(gold) across seeds (None without probabilities), and its label: right in
    every seed (stable-correct), in none (stable-wrong), or in some (seed-dependent); None with one seed, where
    stability is not measured."""
    return _stability_rows(base_rows, replicates, correctness_matrix([base_rows, *replicates], "base and replicates"),
                           collapse)


def _stability_rows(base_rows: list[dict], replicates: list[list[dict]], correct: np.ndarray,
                    collapse: dict[str, str]) -> list[dict]:
    """``row_stability`` from the rows x seeds table ``correct`` (base model first) already checked for ids."""
    base, adapter = correct[0], correct[1:]
    by_id = [{row["id"]: row for row in rows} for rows in replicates]
    out = []
    for index, row in enumerate(base_rows):
        right = int(adapter[:, index].sum())
        gold_p = [label_probability(seed_rows[row["id"]], row["gold"], collapse) for seed_rows in by_id]
        known = None if any(p is None for p in gold_p) else np.array(gold_p)
        out.append({
            "id": row["id"], "seeds": len(replicates), "right": right,
            "corrected": int(((adapter[:, index] == 1) & (base[index] == 0)).sum()),
            "broken": int(((adapter[:, index] == 0) & (base[index] == 1)).sum()),
            "gold_p_mean": None if known is None else round(float(known.mean()), 4),
            "gold_p_sd": None if known is None else round(float(known.std(ddof=1)) if len(known) > 1 else 0.0, 4),
            "stability": None if len(replicates) == 1 else STABLE_CORRECT if right == len(replicates)
            else STABLE_WRONG if right == 0 else SEED_DEPENDENT,
        })
    return out


def group_spread(correct: np.ndarray, groups: dict[str, list[int]], min_rows: int) -> dict[str, dict]:
    """Per group of at least ``min_rows`` rows (a slice, a phenomenon): the adapter's accuracy across seeds. A
    small group's spread would mostly be row noise, as in the slice tests."""
    return {name: {"rows": len(indices), **seed_spread(correct[:, indices]).as_metrics()}
            for name, indices in groups.items() if len(indices) >= min_rows}


def transitions_across_seeds(stability: list[dict], base_correct: np.ndarray, primary_correct: np.ndarray) -> dict:
    """The primary seed's corrected and regressed rows, and how many of each another seed disagrees on."""
    dependent = np.array([row["stability"] == SEED_DEPENDENT for row in stability])
    corrected = (base_correct == 0) & (primary_correct == 1)
    regressed = (base_correct == 1) & (primary_correct == 0)
    return {"corrected": int(corrected.sum()), "corrected_seed_dependent": int((corrected & dependent).sum()),
            "regressed": int(regressed.sum()), "regressed_seed_dependent": int((regressed & dependent).sum())}


def _check_one_dtype(set_name: str, dtypes: dict[int, str | None], verb: str, knob: str) -> None:
    """Every replicate that records its dtype recorded the same one, or an error naming each seed's and ``knob``."""
    recorded = {seed: dtype for seed, dtype in dtypes.items() if dtype}
    if len(set(recorded.values())) > 1:
        listed = ", ".join(f"seed {seed}: {dtype}" for seed, dtype in recorded.items())
        raise InputError(f"eval set '{set_name}': the replicates were {verb} in different compute dtypes ({listed}); "
                         f"pin {knob} and rerun them on one machine class.")


def seed_report(cfg: Config, set_name: str, base_rows: list[dict], replicates: dict[int, list[dict]],
                compute_dtypes: dict[int, str], features: dict[str, dict[str, str]],
                eval_dtypes: dict[int, str | None] | None = None) -> tuple[dict, list[dict]]:
    """One evaluation set across training seeds (``replicates``: seed -> adapter predictions, train.seed first):
    the tracked metrics of metrics/eval/<set>/seeds.json and the per-row stability rows.

    Every replicate must have been trained in the same compute dtype (``compute_dtypes``) and evaluated in the same
    one (``eval_dtypes``, where recorded): a bf16 and an fp32 fine-tune, or evaluation, differ by more than their
    seeds (fp32 instead of bf16 evaluation moved 3% of one adapter's predictions), and a study that mixed them
    would count the dtype as seed noise. ``auto`` resolves per machine, and DVC's run-cache or a remote can bring
    a replicate from another machine."""
    _check_one_dtype(set_name, compute_dtypes, "fine-tuned", "quant.compute_dtype")
    _check_one_dtype(set_name, eval_dtypes or {}, "evaluated", "eval.compute_dtype")
    seeds = list(replicates)
    correct = correctness_matrix([base_rows, *replicates.values()], f"eval set '{set_name}'")
    stability = _stability_rows(base_rows, list(replicates.values()), correct,
                                cfg.eval_sets[set_name].collapse(cfg.data.labels))
    base_correct, adapter_correct = correct[0], correct[1:]
    report = cfg.report
    gain_ci = seed_row_ci(base_correct, adapter_correct, report.confidence)
    slices: dict[str, list[int]] = {}
    phenomena: dict[str, list[int]] = {}
    for index, row in enumerate(base_rows):
        for feature, value in features[row["id"]].items():
            slices.setdefault(f"{feature}={value}", []).append(index)
        if "phenomenon" in row:
            phenomena.setdefault(row["phenomenon"], []).append(index)
    measured = len(seeds) > 1
    counts = {label: sum(row["stability"] == label for row in stability)
              for label in (STABLE_CORRECT, STABLE_WRONG, SEED_DEPENDENT)}
    metrics = {
        "eval_set": set_name,
        "seeds": seeds,
        "replicates": len(seeds),
        "compute_dtype": next(iter(compute_dtypes.values())),
        "adapter": {key: value for key, value in seed_spread(adapter_correct).as_metrics().items() if key != "seeds"},
        "adapter_accuracy_by_seed": {str(seed): round(float(adapter_correct[i].mean()), 4) for i, seed in enumerate(seeds)},
        "gain": {"mean": round(float(adapter_correct.mean() - base_correct.mean()), 4), "ci_low": gain_ci[0],
                 "ci_high": gain_ci[1], "confidence": report.confidence,
                 "covers": "seeds and rows" if measured else "rows only (one seed)",
                 "beyond_noise": bool(gain_ci[0] > 0 or gain_ci[1] < 0)},
        "stability": counts if measured else None,
        "primary_seed_transitions": transitions_across_seeds(stability, base_correct, adapter_correct[0])
        if measured else None,
        "slices": group_spread(adapter_correct, dict(sorted(slices.items())), cfg.slices.min_rows),
        "phenomena": group_spread(adapter_correct, dict(sorted(phenomena.items())), cfg.slices.min_rows),
    }
    return metrics, stability
