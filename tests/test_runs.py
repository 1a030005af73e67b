"""Comparing two runs' adapters on the same rows: a planted difference is reported with its numbers, seed-like
noise is not called real, mismatched runs fail clearly, and revisions are read through DVC without a checkout."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import run_rows, two_run_repo

from qlora_diff.analysis.runs import align, compare_runs, read_run, render
from qlora_diff.core.config import parse_config
from qlora_diff.core.errors import InputError

CFG = parse_config({"report": {"bootstrap_samples": 1000}})


rows = run_rows


def test_a_planted_difference_is_reported_with_its_numbers():
    """200 rows; A is right on the first 100. B also fixes 30 of A's wrong rows and breaks 5 of its right ones:
    delta = (30 - 5) / 200 = +12.5 points; McNemar p = 2 * P(X <= 5), X ~ Binomial(35, 1/2)."""
    a = [i < 100 for i in range(200)]
    b = [(ok and i >= 5) or (100 <= i < 130) for i, ok in enumerate(a)]
    (diff,) = compare_runs({"snli": rows(a)}, {"snli": rows(b)}, CFG, "main", "lora-r8")
    assert (diff.rows, diff.fixed, diff.broken) == (200, 30, 5)
    assert (diff.accuracy_a, diff.accuracy_b, diff.delta) == pytest.approx((0.5, 0.625, 0.125))
    from math import comb
    assert diff.mcnemar_p == pytest.approx(2 * sum(comb(35, k) for k in range(6)) / 2**35, rel=1e-9)
    # Normal approximation: per-row difference d in {+1 (30), -1 (5), 0}; var(d) = 35/200 - 0.125**2, so the
    # SE is sqrt(0.159375 / 200) = 0.0282 and the 95% interval 0.125 -/+ 0.0553; the percentile bootstrap is close.
    assert (diff.ci_low, diff.ci_high) == pytest.approx((0.0697, 0.1803), abs=0.01)
    sentence = diff.verdict("main", "lora-r8")
    assert sentence.startswith("`lora-r8` is 12.5 points above `main` on `snli` (62.5% vs 50.0%")
    assert "seed noise was not measured" in sentence and "does not show that one config is better" in sentence
    markdown = render([diff], "main", "lora-r8")
    assert "| `snli` |    200 | 50.0%    | 62.5%       | +12.5 [" in markdown


def test_two_runs_that_differ_by_noise_are_rarely_called_different():
    """100 fixed-seed null comparisons. Each row has its own chance of being right, the same in both runs (most rows
    are stable, a fifth are seed-dependent coin flips); A and B are independent draws of it, as two training seeds
    of one config would be, so nothing real separates the two adapters."""
    called_real = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        p_right = rng.choice([0.02, 0.5, 0.98], size=400, p=[0.25, 0.2, 0.55])
        a, b = rng.random(400) < p_right, rng.random(400) < p_right
        (diff,) = compare_runs({"snli": rows(a)}, {"snli": rows(b)}, parse_config({"report": {"bootstrap_samples": 200}}))
        called_real += diff.significant
        assert ("not significant" in diff.verdict("A", "B")) == (not diff.significant)
    assert called_real <= 5, called_real


def test_mismatched_runs_name_the_set_and_the_first_mismatched_id():
    a, b = rows([True] * 5), rows([True] * 5)
    b[2] = {**b[2], "id": "other"}
    with pytest.raises(InputError, match=r"eval set 'snli': A and B scored different rows \(5 vs 5\); "
                                         r"first mismatch: id 'r0002' only in A"):
        align("snli", a, b)
    with pytest.raises(InputError, match=r"first mismatch: id 'r0004' only in B"):
        align("snli", a[:4], b[:2] + a[2:5])
    with pytest.raises(InputError, match=r"eval set 'snli' of B:2: duplicated id 'r0000'"):
        align("snli", a, [a[0], a[0]] + a[2:])
    with pytest.raises(InputError, match=r"eval set 'challenge' exists only in one run \(not in B\)"):
        compare_runs({"snli": a, "challenge": a}, {"snli": a}, CFG)
    with pytest.raises(InputError, match=r"id 'r0000' has gold 'entailment' in A but 'neutral' in B"):
        align("snli", a, [{**a[0], "gold": "neutral"}] + a[1:])


def test_two_revisions_are_read_through_dvc_without_a_checkout(tmp_path):
    repo = two_run_repo(tmp_path)   # tag run-a: 6 of 10 right; HEAD: 9 of 10; no workspace copy
    (diff,) = compare_runs(read_run("run-a", str(repo)), read_run("HEAD", str(repo)), CFG)
    assert (diff.accuracy_a, diff.accuracy_b, diff.fixed, diff.broken) == (0.6, 0.9, 3, 0)
