"""Decide a comparison against a margin: one verdict from a CI, the smallest difference a study could see, and how
many seeds per side would settle the margin.

"Not significant" is not "equivalent". A difference of accuracies B - A with its CI (at ``report.confidence``) and a
margin m (``report.equivalence_margin``, in accuracy points) gives exactly one verdict:
- **better** / **worse**: the CI excludes 0;
- **equivalent within ±m**: the CI lies inside (-m, +m): two one-sided tests (TOST), each at (1 - confidence) / 2;
- **not worse by more than m** (non-inferiority: the lower bound > -m), or its mirror **not better by more than m**;
- **inconclusive**: the CI reaches past both -m and +m.

Power and planning read the CI's variance components (``seeds.SeedRowNoise``): the observed difference is normal with
sd SE(n) around the true one, and the interval is D ± t(df) SE_hat with SE_hat^2 ~ SE^2 chi2(df) / df (the
Satterthwaite approximation the interval itself uses). Each probability below averages over that chi2, so it holds
for a handful of seeds as well as for many:
- **minimum detectable difference**: the smallest true difference whose CI excludes 0 with probability ``power``,
  with the seeds as run;
- **seeds per side**: the fewest seeds a side that make "equivalent" at least ``power`` likely when the true
  difference is 0.
tests/test_margin.py checks each against simulated studies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import chi2, norm

from qlora_diff.analysis.seeds import SeedRowNoise, t_quantile

BETTER, WORSE, EQUIVALENT, NOT_WORSE, NOT_BETTER, INCONCLUSIVE = (
    "better", "worse", "equivalent", "not worse", "not better", "inconclusive")
POWER = 0.8
MAX_SEEDS = 50   # planning stops here: a margin that needs more seeds a side is out of a seed study's reach
_CHI2_NODES = (np.arange(64) + 0.5) / 64   # quantile midpoints: the average over SE_hat's chi2 distribution


def decide(ci_low: float, ci_high: float, margin: float) -> str:
    """The one verdict of a difference B - A with CI [ci_low, ci_high] against ``margin`` (same units)."""
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
    """The verdict in words, with the CI's width against the margin where it matters."""
    m = f"{100 * margin:.1f}"
    inside = {BETTER: ci_high < margin, WORSE: ci_low > -margin}
    return {
        BETTER: f"`{name_b}` is better than `{name_a}` (the CI excludes 0)"
                + (f", by less than the {m}-point margin" if inside[BETTER] else ""),
        WORSE: f"`{name_b}` is worse than `{name_a}` (the CI excludes 0)"
               + (f", by less than the {m}-point margin" if inside[WORSE] else ""),
        EQUIVALENT: f"`{name_b}` is equivalent to `{name_a}` within ±{m} points (the CI lies inside the margin)",
        NOT_WORSE: f"`{name_b}` is not worse than `{name_a}` by more than {m} points (the CI's lower bound is above "
                   f"-{m}); it may be better by more",
        NOT_BETTER: f"`{name_b}` is not better than `{name_a}` by more than {m} points (the CI's upper bound is "
                    f"below +{m}); it may be worse by more",
        INCONCLUSIVE: f"inconclusive against the ±{m}-point margin: the CI is {100 * (ci_high - ci_low):.1f} points "
                      f"wide, {(ci_high - ci_low) / (2 * margin):.1f}x the margin band, and reaches past both ends",
    }[verdict]


def _ci_spreads(noise: SeedRowNoise, seeds: tuple[int, int], confidence: float) -> np.ndarray:
    """Half-widths the interval takes across SE_hat's distribution, at the chi2 quantile midpoints."""
    df = noise.df(seeds)
    scale = np.ones_like(_CHI2_NODES) if math.isinf(df) else np.sqrt(chi2.ppf(_CHI2_NODES, df) / df)
    return t_quantile(confidence, df) * noise.se(seeds) * scale


def p_better(noise: SeedRowNoise, difference: float, seeds: tuple[int, int], confidence: float) -> float:
    """P(the CI's lower bound > 0) when the true difference is ``difference``."""
    se = noise.se(seeds)
    return float(np.mean(norm.cdf((difference - _ci_spreads(noise, seeds, confidence)) / se)))


def p_equivalent(noise: SeedRowNoise, margin: float, seeds: tuple[int, int], confidence: float) -> float:
    """P(the CI lies inside ±margin) when the true difference is 0."""
    se = noise.se(seeds)
    gaps = np.clip(margin - _ci_spreads(noise, seeds, confidence), 0, None)
    return float(np.mean(2 * norm.cdf(gaps / se) - 1))


@dataclass(frozen=True)
class Plan:
    """What a study as run could detect, and what settling the margin would take. ``noise.seeds`` are the seeds as
    run; a side measured with one seed is planned with the other side's seed variance (or the seed study's)."""

    noise: SeedRowNoise
    margin: float
    confidence: float
    power: float = POWER

    @property
    def mdd(self) -> float:
        """The minimum detectable difference with the seeds as run."""
        if self.noise.se() == 0:
            return 0.0
        return float(brentq(lambda d: p_better(self.noise, d, self.noise.seeds, self.confidence) - self.power,
                            0.0, 1.0))

    def equivalence_power(self, seeds: int) -> float:
        return p_equivalent(self.noise, self.margin, (seeds, seeds), self.confidence)

    @property
    def seeds_per_side(self) -> int | None:
        """The fewest seeds a side (at least 2) that make "equivalent" ``power`` likely under no difference; None
        beyond MAX_SEEDS."""
        return next((n for n in range(2, MAX_SEEDS + 1) if self.equivalence_power(n) >= self.power), None)

    def extra_fine_tunes(self) -> int | None:
        """Fine-tunes to add to the study as run to reach ``seeds_per_side`` on both sides."""
        needed = self.seeds_per_side
        return None if needed is None else sum(max(0, needed - seeds) for seeds in self.noise.seeds)


def plan(noise: SeedRowNoise, margin: float, confidence: float, fallback_variance: float | None = None,
         power: float = POWER) -> Plan | None:
    """The plan of a comparison whose CI has ``noise``. A side with one seed borrows the other side's seed variance,
    or ``fallback_variance`` (the seed study's) when neither side has two seeds; None when there is neither."""
    variances = [variance for variance, seeds in zip(noise.seed_variance, noise.seeds) if seeds > 1]
    borrowed = variances[0] if len(variances) == 1 else fallback_variance
    if not variances and borrowed is None:
        return None
    seed_variance = tuple(variance if seeds > 1 else borrowed
                          for variance, seeds in zip(noise.seed_variance, noise.seeds))
    planned = SeedRowNoise(rows=noise.rows, seeds=noise.seeds, seed_variance=seed_variance,
                           heterogeneity=noise.heterogeneity)
    return Plan(noise=planned, margin=margin, confidence=confidence, power=power)
