"""Decide a comparison against a margin: one verdict from a CI, the smallest difference a study can see, and how
many seeds it would take to settle the margin.

"Not significant" is not "equivalent". A difference of accuracies B - A with its CI (at ``report.confidence``) and a
margin m (points of accuracy, ``report.equivalence_margin``) gives exactly one verdict:
- **better** / **worse**: the CI excludes 0;
- **equivalent within ±m**: the CI lies inside (-m, +m): two one-sided tests (TOST), each at (1 - confidence) / 2;
- **not worse by more than m** (non-inferiority: the lower bound > -m), or its mirror **not better by more than m**;
- **inconclusive**: the CI reaches past both -m and +m; how wide it is against the margin is said.

Power and planning use the normal approximation of that CI: SE = CI width / (2 z). With seed variances s_a^2 and
s_b^2 of the two configs' accuracies (sample sds across seeds) and n_a, n_b seeds, SE^2 = k^2 (s_a^2 / n_a +
s_b^2 / n_b) + R, where k = t(df) / z widens the seed part as the two-level bootstrap does (df = n_a + n_b - 2)
and R is the row part, what remains of the measured SE^2. Then
- the **minimum detectable difference** at power 1 - beta is MDD = (z_{1 - alpha/2} + z_{1 - beta}) SE: a true
  difference that large makes the CI exclude 0 with that probability;
- with a true difference of 0, "equivalent" comes out with probability 2 Phi(m / SE - z_{1 - alpha/2}) - 1, so
  the **seeds per side** to resolve the margin at power 1 - beta is the smallest n with
  SE(n) <= m / (z_{1 - alpha/2} + z_{1 - beta/2}).
tests/test_margin.py checks each rate against simulated studies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm
from scipy.stats import t as student_t

BETTER, WORSE, EQUIVALENT, NOT_WORSE, NOT_BETTER, INCONCLUSIVE = (
    "better", "worse", "equivalent", "not worse", "not better", "inconclusive")
VERDICTS = (BETTER, WORSE, EQUIVALENT, NOT_WORSE, NOT_BETTER, INCONCLUSIVE)
POWER = 0.8
MAX_SEEDS = 50   # planning stops here: a margin that needs more seeds is out of a study's reach


def decide(ci_low: float, ci_high: float, margin: float) -> str:
    """The one verdict of a difference B - A with CI [ci_low, ci_high] against the margin (same units)."""
    if ci_low > 0:
        return BETTER
    if ci_high < 0:
        return WORSE
    if -margin < ci_low and ci_high < margin:
        return EQUIVALENT
    if ci_low > -margin:
        return NOT_WORSE
    if ci_high < margin:
        return NOT_BETTER
    return INCONCLUSIVE


def sentence(verdict: str, ci_low: float, ci_high: float, margin: float, name_a: str, name_b: str) -> str:
    """The verdict in words, with the CI and the margin in points of accuracy."""
    m = f"{100 * margin:.1f}"
    return {
        BETTER: f"`{name_b}` is better than `{name_a}` (the CI excludes 0)"
                + (f"; by less than the ±{m}-point margin" if ci_high < margin else ""),
        WORSE: f"`{name_b}` is worse than `{name_a}` (the CI excludes 0)"
               + (f"; by less than the ±{m}-point margin" if ci_low > -margin else ""),
        EQUIVALENT: f"`{name_b}` is equivalent to `{name_a}` within ±{m} points (the CI lies inside the margin)",
        NOT_WORSE: f"`{name_b}` is not worse than `{name_a}` by more than {m} points (the CI's lower bound is above "
                   f"-{m}); it may be better by more",
        NOT_BETTER: f"`{name_b}` is not better than `{name_a}` by more than {m} points (the CI's upper bound is "
                    f"below +{m}); it may be worse by more",
        INCONCLUSIVE: f"inconclusive against the ±{m}-point margin: the CI is {100 * (ci_high - ci_low):.1f} points "
                      f"wide, {(ci_high - ci_low) / (2 * margin):.1f}x the width of the margin band, and reaches "
                      "past both ends of it",
    }[verdict]


def z(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence``."""
    return float(norm.ppf(1 - (1 - confidence) / 2))


def seed_widening(seeds_a: int, seeds_b: int, confidence: float) -> float:
    """t(df) / z at ``confidence``, df = seeds_a + seeds_b - 2 (1 with no seed degrees of freedom)."""
    df = seeds_a + seeds_b - 2
    return float(student_t.ppf(1 - (1 - confidence) / 2, df)) / z(confidence) if df > 0 else 1.0


@dataclass(frozen=True)
class Plan:
    """What a study as run could detect, and what settling the margin would take."""

    margin: float
    se: float                  # the normal-approximation SE of the difference as measured
    mdd: float                 # minimum detectable difference at POWER
    seeds_per_side: int | None   # seeds per side for "equivalent" at POWER under no difference; None: > MAX_SEEDS
    seeds_now: tuple[int, int]
    power: float = POWER

    def extra_fine_tunes(self) -> int | None:
        if self.seeds_per_side is None:
            return None
        return sum(max(0, self.seeds_per_side - seeds) for seeds in self.seeds_now)


def standard_error(ci_low: float, ci_high: float, confidence: float) -> float:
    return (ci_high - ci_low) / (2 * z(confidence))


def mdd(se: float, confidence: float, power: float = POWER) -> float:
    """The smallest true difference whose CI excludes 0 with probability ``power``."""
    return (z(confidence) + float(norm.ppf(power))) * se


def se_with_seeds(seeds: int, sd_a: float, sd_b: float, row_variance: float, confidence: float) -> float:
    """SE of the difference with ``seeds`` per side, the seed sds and row variance held at their measured values."""
    seed_part = (sd_a**2 + sd_b**2) / seeds * seed_widening(seeds, seeds, confidence) ** 2
    return math.sqrt(seed_part + row_variance)


def plan(ci_low: float, ci_high: float, confidence: float, margin: float, sd_a: float, sd_b: float,
         seeds_a: int, seeds_b: int, power: float = POWER) -> Plan:
    """MDD of the study as run and the seeds per side that would resolve ``margin`` at ``power``, from its CI and
    the seed sds (a side with one seed: the other side's sd, or the committed seed study's, passed in)."""
    se = standard_error(ci_low, ci_high, confidence)
    seed_part = (sd_a**2 / seeds_a + sd_b**2 / seeds_b) * seed_widening(seeds_a, seeds_b, confidence) ** 2
    row_variance = max(se**2 - seed_part, 0.0)
    target = margin / (z(confidence) + float(norm.ppf(1 - (1 - power) / 2)))
    needed = next((n for n in range(2, MAX_SEEDS + 1)
                   if se_with_seeds(n, sd_a, sd_b, row_variance, confidence) <= target), None)
    return Plan(margin=margin, se=se, mdd=mdd(se, confidence, power), seeds_per_side=needed,
                seeds_now=(seeds_a, seeds_b), power=power)
