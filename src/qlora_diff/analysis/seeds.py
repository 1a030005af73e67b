"""Training-seed replicates: how far a result moves when only the training seed changes, per set and per row, and a
comparison of two configs that counts that movement as noise.

A fine-tune's seed decides the LoRA initialisation and the order of the training rows (``train.seed``); which rows
are trained and evaluated stays fixed by ``data.seed`` and the eval sets' seeds. So every replicate scores the same
rows, and the rows x seeds table of right/wrong answers is what everything here reads:

- the spread of accuracy across seeds (mean, sd, min, max);
- a two-level bootstrap (resample seeds, then rows, the rows shared by both sides because they are the same rows):
  a CI for a difference that covers row sampling *and* seed variation;
- per row: in how many seeds the adapter is right, corrects or breaks the base model, the mean and sd of p(gold)
  across seeds (dataset cartography, Swayamdipta et al. 2020, with seeds in place of epochs), and a label.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _seed_corrected(side: np.ndarray) -> np.ndarray:
    """A side's seeds spread by sqrt(n / (n - 1)) around their mean row: resampling n seeds with replacement
    otherwise shrinks the seed variance by (n - 1) / n, which matters with 3 or 5 seeds."""
    seeds = len(side)
    if seeds < 2:
        return side
    center = side.mean(axis=0)
    return center + (side - center) * np.sqrt(seeds / (seeds - 1))


def two_level_bootstrap_ci(before: np.ndarray, after: np.ndarray, samples: int, seed: int,
                           confidence: float) -> tuple[float, float]:
    """CI of mean accuracy(after) - mean accuracy(before), both seeds x rows on the same rows.

    Each resample draws seeds with replacement on each side independently (separate fine-tunes), then rows with
    replacement, the same rows for both sides (paired). A side with one seed (the base model) contributes row noise
    only. Two small-sample corrections, because a study has a handful of seeds, not a population of them: each
    side's seed spread is bias-corrected (``_seed_corrected``), and the seed part of the interval's variance is
    widened by (t(df) / z)^2 with df = sum of (seeds - 1) over the sides, as a t interval would be; the row part
    is left as it is. Without them, 11-12% of simulated 5- and 3-seed null comparisons excluded 0 at 95%
    (tests/test_runs.py states the rate with them)."""
    before, after = np.atleast_2d(before).astype(float), np.atleast_2d(after).astype(float)
    if before.shape[1] != after.shape[1]:
        raise ValueError(f"both sides must score the same rows: {before.shape[1]} vs {after.shape[1]}")
    observed = float(after.mean() - before.mean())
    df = len(before) + len(after) - 2
    before, after = _seed_corrected(before), _seed_corrected(after)
    rng = np.random.default_rng(seed)
    rows = before.shape[1]
    differences = np.empty(samples)
    for start in range(0, samples, 500):   # 500 resamples at a time bound the memory to 500 x rows weights
        count = min(500, samples - start)
        row_weights = rng.multinomial(rows, np.full(rows, 1 / rows), size=count) / rows
        side_means = []
        for side in (before, after):
            seed_weights = rng.multinomial(len(side), np.full(len(side), 1 / len(side)), size=count) / len(side)
            side_means.append(np.einsum("bs,sr,br->b", seed_weights, side, row_weights))
        differences[start:start + count] = side_means[1] - side_means[0]
    tail = (1 - confidence) / 2
    low, high = np.percentile(differences, [100 * tail, 100 * (1 - tail)])
    if df > 0:   # widen the seed part of the variance by (t / z)^2, leave the row part
        seed_variance = sum(side.mean(axis=1).var(ddof=1) / len(side) for side in (before, after) if len(side) > 1)
        seed_share = min(1.0, seed_variance / max(float(differences.var()), 1e-12))
        ratio = student_t.ppf(1 - tail, df) / norm.ppf(1 - tail)
        widen = np.sqrt(seed_share * ratio**2 + 1 - seed_share)
        low, high = observed + (low - observed) * widen, observed + (high - observed) * widen
    return round(float(low), 4) + 0.0, round(float(high), 4) + 0.0   # + 0.0: no "-0.0" in a report


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
    gain_ci = two_level_bootstrap_ci(base_correct, adapter_correct, report.bootstrap_samples, report.seed,
                                     report.confidence)
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
