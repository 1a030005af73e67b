"""Verdicts against a margin, and what the study can see: each verdict at its boundary, and by simulation (400
studies each, fixed seeds) the rates the docs promise: "equivalent" at most alpha of the time when the true
difference is the margin, about the planned power when it is 0 with the planned seeds, and the minimum detectable
difference detected at about 80%."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from qlora_diff.analysis.margin import (
    BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    NOT_BETTER,
    NOT_WORSE,
    WORSE,
    decide,
    plan,
    sentence,
)
from qlora_diff.analysis.seeds import SeedRowNoise, seed_row_ci, seed_row_noise

CONFIDENCE, ROWS, STUDIES = 0.95, 300, 400


@pytest.mark.parametrize("low, high, verdict", [
    (0.001, 0.02, BETTER), (-0.02, -0.001, WORSE), (-0.019, 0.019, EQUIVALENT), (-0.019, 0.05, NOT_WORSE),
    (-0.05, 0.019, NOT_BETTER), (-0.021, 0.021, INCONCLUSIVE), (-0.02, 0.0, NOT_BETTER), (0.0, 0.02, NOT_WORSE)])
def test_each_verdict_at_its_boundary(low, high, verdict):
    """Margin 2 points. A CI touching 0 does not exclude it; a CI touching the margin is not inside it."""
    assert decide(low, high, 0.02) == verdict


def test_the_sentences_say_what_the_ci_supports_and_never_more():
    assert sentence(EQUIVALENT, -0.01, 0.012, 0.02, "main", "r8") == (
        "`r8` is equivalent to `main` within ±2.0 points (the CI lies inside the margin)")
    assert sentence(BETTER, 0.004, 0.015, 0.02, "main", "r8").endswith(", by less than the 2.0-point margin")
    assert sentence(NOT_WORSE, -0.015, 0.04, 0.02, "main", "r8").startswith(
        "`r8` is not worse than `main` by more than 2.0 points")
    assert sentence(INCONCLUSIVE, -0.03, 0.05, 0.02, "main", "r8") == (
        "inconclusive against the ±2.0-point margin: the CI is 8.0 points wide, 2.0x the margin band, and reaches "
        "past both ends")


def simulate(seeds: int, shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two configs' seeds x rows right/wrong tables on the same rows. Each row has its own logit of being right;
    each seed moves every row's logit together (sd 0.15, about 1.5 accuracy points across seeds, like the default
    config's 1.3 to 1.5); config B's logits are shifted by ``shift``."""
    logits = rng.normal(0.8, 2.0, ROWS)
    draw = lambda offset: (rng.random((seeds, ROWS))
                           < 1 / (1 + np.exp(-(logits + offset + rng.normal(0, 0.15, (seeds, 1)))))).astype(float)
    return draw(0.0), draw(shift)


def true_difference(shift: float) -> float:
    """The accuracy difference a logit shift makes, over the row population and seed effects (a large sample)."""
    rng = np.random.default_rng(12345)
    logits = rng.normal(0.8, 2.0, 200_000) + rng.normal(0, 0.15, 200_000)
    return float(np.mean(1 / (1 + np.exp(-(logits + shift))) - 1 / (1 + np.exp(-logits))))


def shift_for(difference: float) -> float:
    """The logit shift whose true accuracy difference is ``difference`` (bisection)."""
    low, high = 0.0, 2.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if true_difference(middle) < difference else (low, middle)
    return (low + high) / 2


def verdicts(seeds: int, difference: float, margin: float, first_seed: int) -> list[str]:
    """The verdicts of STUDIES simulated studies with ``seeds`` a side and a true difference ``difference``."""
    shift = shift_for(difference)
    return [decide(*seed_row_ci(*simulate(seeds, shift, np.random.default_rng(first_seed + i)), CONFIDENCE), margin)
            for i in range(STUDIES)]


def population_noise(seeds: int) -> SeedRowNoise:
    """The design's variance components, measured on one large null pilot (40 seeds a side), as if ``seeds`` a
    side had been run: what the formulas are checked with, so that the check is of the formulas, not of how well
    a small pilot estimates its noise."""
    return replace(seed_row_noise(*simulate(40, 0.0, np.random.default_rng(99))), seeds=(seeds, seeds))


def test_equivalent_comes_out_at_most_alpha_of_the_time_when_the_true_difference_is_the_margin():
    calls = verdicts(seeds=5, difference=0.03, margin=0.03, first_seed=1000)
    assert calls.count(EQUIVALENT) <= (1 - CONFIDENCE) * STUDIES, calls.count(EQUIVALENT)
    assert true_difference(shift_for(0.03)) == pytest.approx(0.03, abs=1e-5)


def test_the_minimum_detectable_difference_is_detected_at_about_the_planned_power():
    planned = plan(population_noise(3), margin=0.03, confidence=CONFIDENCE)
    assert 0.01 < planned.mdd < 0.1
    detected = verdicts(seeds=3, difference=planned.mdd, margin=0.03, first_seed=2000).count(BETTER) / STUDIES
    assert detected == pytest.approx(0.8, abs=0.05), (detected, planned.mdd)


def test_with_the_planned_seeds_and_no_difference_equivalent_comes_out_at_about_the_planned_power():
    planned = plan(population_noise(3), margin=0.03, confidence=CONFIDENCE)
    seeds = planned.seeds_per_side
    assert seeds is not None and seeds > 3 and planned.extra_fine_tunes() == 2 * (seeds - 3)
    assert planned.equivalence_power(seeds) >= 0.8 > planned.equivalence_power(seeds - 1)
    rate = verdicts(seeds=seeds, difference=0.0, margin=0.03, first_seed=3000).count(EQUIVALENT) / STUDIES
    assert rate == pytest.approx(planned.equivalence_power(seeds), abs=0.05), (rate, seeds)


def test_a_single_seed_side_borrows_the_other_sides_seed_variance_and_none_without_any():
    a, b = simulate(3, 0.0, np.random.default_rng(5))
    one = plan(seed_row_noise(a[:1], b), 0.03, CONFIDENCE)
    assert one.noise.seed_variance[0] == one.noise.seed_variance[1] == pytest.approx(float(b.mean(axis=1).var(ddof=1)))
    assert plan(seed_row_noise(a[:1], b[:1]), 0.03, CONFIDENCE) is None
    fallback = plan(seed_row_noise(a[:1], b[:1]), 0.03, CONFIDENCE, fallback_variance=0.013**2)
    assert fallback.noise.seed_variance == (0.013**2, 0.013**2)
