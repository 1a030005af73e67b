"""Comparing two runs' adapters on the same rows: a planted difference is reported with its numbers, seed-like
noise is not called real, mismatched runs fail clearly, and revisions are read through DVC without a checkout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from synthetic import run_rows, two_run_repo

from qlora_diff.analysis.margin import BETTER, WORSE
from qlora_diff.analysis.runs import Run, align, compare_runs, label_shifts, read_run, render, seed_reference
from qlora_diff.core.config import parse_config
from qlora_diff.core.errors import InputError

CFG = parse_config({"report": {"bootstrap_samples": 1000}})


rows = run_rows


def one_seed(correct) -> Run:
    return Run({"snli": {42: rows(correct)}})


def test_a_planted_difference_is_reported_with_its_numbers():
    """200 rows; A is right on the first 100. B also fixes 30 of A's wrong rows and breaks 5 of its right ones:
    delta = (30 - 5) / 200 = +12.5 points; McNemar p = 2 * P(X <= 5), X ~ Binomial(35, 1/2)."""
    a = [i < 100 for i in range(200)]
    b = [(ok and i >= 5) or (100 <= i < 130) for i, ok in enumerate(a)]
    (diff,) = compare_runs(one_seed(a), one_seed(b), CFG, "main", "lora-r8")
    assert (diff.rows, diff.fixed, diff.broken) == (200, 30, 5)
    assert (diff.accuracy_a, diff.accuracy_b, diff.delta) == pytest.approx((0.5, 0.625, 0.125))
    from math import comb
    assert diff.mcnemar_p == pytest.approx(2 * sum(comb(35, k) for k in range(6)) / 2**35, rel=1e-9)
    # Normal approximation: per-row difference d in {+1 (30), -1 (5), 0}; var(d) = 35/200 - 0.125**2, so the
    # SE is sqrt(0.159375 / 200) = 0.0282 and the 95% interval 0.125 -/+ 0.0553; the percentile bootstrap is close.
    assert (diff.ci_low, diff.ci_high) == pytest.approx((0.0697, 0.1803), abs=0.01)
    sentence = diff.verdict("main", "lora-r8")
    assert sentence.startswith("`lora-r8` is 12.5 points above `main` on `snli` (62.5% vs 50.0%")
    assert "seed noise was not measured" in sentence and "shows neither that one config is better nor that the two are equivalent" in sentence
    markdown = render([diff], "main", "lora-r8")
    assert "| `snli` |    200 | 50.0%    | 62.5%       | +12.5 [" in markdown


def test_the_verdict_names_the_direction_and_says_level_for_equal_runs():
    a = [i < 100 for i in range(200)]
    (same,) = compare_runs(one_seed(a), one_seed(a), CFG, "main", "copy")
    assert same.verdict("main", "copy").startswith("`copy` is level with `main` on `snli` (50.0% vs 50.0%")
    (worse,) = compare_runs(one_seed(a), one_seed([i < 90 for i in range(200)]), CFG, "main", "worse")
    assert worse.verdict("main", "worse").startswith("`worse` is 5.0 points below `main`")


def test_two_runs_that_differ_by_noise_are_rarely_called_different():
    """100 fixed-seed null comparisons. Each row has its own chance of being right, the same in both runs (most rows
    are stable, a fifth are seed-dependent coin flips); A and B are independent draws of it, as two training seeds
    of one config would be, so nothing real separates the two adapters."""
    called_real = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        p_right = rng.choice([0.02, 0.5, 0.98], size=400, p=[0.25, 0.2, 0.55])
        a, b = rng.random(400) < p_right, rng.random(400) < p_right
        (diff,) = compare_runs(one_seed(a), one_seed(b), parse_config({"report": {"bootstrap_samples": 200}}))
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
        compare_runs(Run({"snli": {1: a}, "challenge": {1: a}}), Run({"snli": {1: a}}), CFG)
    with pytest.raises(InputError, match=r"id 'r0000' has gold 'entailment' in A but 'neutral' in B"):
        align("snli", a, [{**a[0], "gold": "neutral"}] + a[1:])


def test_two_revisions_are_read_through_dvc_without_a_checkout(tmp_path):
    repo = two_run_repo(tmp_path)   # tag run-a: 6 of 10 right; HEAD: 9 of 10; no workspace copy
    (diff,) = compare_runs(read_run("run-a", str(repo)), read_run("HEAD", str(repo)), CFG)
    assert (diff.accuracy_a, diff.accuracy_b, diff.fixed, diff.broken) == (0.6, 0.9, 3, 0)


def test_runs_evaluated_in_different_dtypes_carry_a_caveat_naming_both(tmp_path):
    """HEAD evaluated in fp32, run-bf16 in bf16, both trained in bf16; run-a records no dtype (an older run)."""
    repo = two_run_repo(tmp_path)
    head, bf16, older = (read_run(rev, str(repo)) for rev in ("HEAD", "run-bf16", "run-a"))
    assert head.dtypes == {"fine-tune": "bfloat16", "snli": "float32"} and older.dtypes == {}
    (diff,) = compare_runs(bf16, head, CFG, "main", "exp")
    assert diff.dtype_caveat.startswith("Caveat: the adapters were evaluated in bfloat16 (`main`) and float32 (`exp`)")
    assert "trained in" not in diff.dtype_caveat
    assert diff.dtype_caveat in render([diff], "main", "exp")
    assert compare_runs(older, head, CFG)[0].dtype_caveat is None       # nothing recorded: nothing claimed
    assert compare_runs(bf16, bf16, CFG)[0].dtype_caveat is None
    trained = Run(head.replicates, dtypes={"fine-tune": "float32", "snli": "float32"})
    assert compare_runs(trained, head, CFG, "a", "b")[0].dtype_caveat.startswith(
        "Caveat: the adapters were trained in float32 (`a`) and bfloat16 (`b`), so")


def test_a_run_whose_predictions_are_not_in_the_cache_is_refused_by_revision_and_path(tmp_path):
    repo = two_run_repo(tmp_path)
    shutil.rmtree(repo / ".dvc" / "cache")   # as in a fresh clone that has not pulled
    with pytest.raises(InputError, match=r"run 'run-a': reports/predictions/snli/adapter.jsonl is in neither git, its DVC "
                                         r"cache nor a remote; fetch it \(`dvc pull`"):
        read_run("run-a", str(repo))


def seeded_runs(rng, p_right: np.ndarray, seeds: int, shift: float = 0.0) -> dict[int, list[dict]]:
    """``seeds`` fine-tunes of one config: each seed moves every row's chance by the same random amount (a seed
    that is good or bad overall) plus ``shift``, then each row is drawn."""
    out = {}
    for seed in range(seeds):
        level = np.clip(p_right + rng.normal(0, 0.04) + shift, 0, 1)
        out[seed] = rows(rng.random(len(p_right)) < level)
    return out


def test_a_difference_beyond_the_seed_noise_is_called_real():
    """B's config is 10 points better on every row's chance; 5 seeds each, seed sd ~4 points: the CI over seeds
    and rows excludes 0 and the margin verdict is "better"."""
    rng = np.random.default_rng(3)
    p_right = rng.choice([0.1, 0.5, 0.9], size=600)
    a, b = seeded_runs(rng, p_right, 5), seeded_runs(rng, p_right, 5, shift=0.10)
    (diff,) = compare_runs(Run({"snli": a}), Run({"snli": b}), CFG, "r16", "r8")
    assert (diff.seeds.seeds_a, diff.seeds.seeds_b) == (5, 5) and diff.real
    assert diff.seeds.delta == pytest.approx(0.10, abs=0.03) and diff.seeds.ci_low > 0
    assert diff.margin_verdict == BETTER
    assert diff.verdict("r16", "r8").endswith("`r8` is better than `r16` (the CI excludes 0).")
    assert "| 5 / 5: +" in render([diff], "r16", "r8")


def test_seed_noise_alone_is_rarely_called_real_once_seeds_are_measured():
    """100 null comparisons of one config against itself, 5 seeds each, where a seed moves the whole set by
    sd 4 points (1,000 rows). Between the two train.seed adapters McNemar calls 64 of them real; the CI over seeds
    and rows calls 6 (6 with 3 seeds too), at a nominal 5%: at most 9, the binomial 95% upper bound for 5 of 100."""
    fixed_seed_real = seed_aware_real = 0
    cfg = parse_config({"report": {"bootstrap_samples": 400}})
    for trial in range(100):
        rng = np.random.default_rng(1000 + trial)
        p_right = rng.choice([0.05, 0.5, 0.95], size=1000, p=[0.3, 0.2, 0.5])
        a, b = seeded_runs(rng, p_right, 5), seeded_runs(rng, p_right, 5)
        (diff,) = compare_runs(Run({"snli": a}), Run({"snli": b}), cfg)
        seed_aware_real += diff.real
        fixed_seed_real += diff.significant   # McNemar between the two train.seed adapters
        assert (diff.margin_verdict in (BETTER, WORSE)) == diff.real
    assert seed_aware_real <= 9, seed_aware_real
    assert fixed_seed_real > 3 * max(seed_aware_real, 1), (fixed_seed_real, seed_aware_real)


def test_one_seed_against_several_says_whose_noise_is_missing():
    rng = np.random.default_rng(5)
    p_right = rng.choice([0.1, 0.9], size=300)
    a = seeded_runs(rng, p_right, 1)
    b = seeded_runs(rng, p_right, 3)
    (diff,) = compare_runs(Run({"snli": a}), Run({"snli": b}), CFG, "main", "exp")
    assert (diff.seeds.seeds_a, diff.seeds.seeds_b) == (1, 3)
    assert "`main` has one seed, so its own seed noise is not in this CI" in diff.verdict("main", "exp")


def test_replicates_with_other_rows_are_refused_by_name():
    a = {1: rows([True] * 5), 2: rows([True] * 5)}
    b = {1: rows([True] * 5), 2: rows([True] * 4)}
    with pytest.raises(InputError, match=r"eval set 'snli': A and B seed 2 scored different rows \(5 vs 4\); "
                                         r"first mismatch: id 'r0004' only in A"):
        compare_runs(Run({"snli": a}), Run({"snli": b}), CFG)


def test_slices_over_represented_among_the_rows_b_fixed_are_stated():
    """400 rows; 80 carry negation. B fixes 40 rows, 30 of them negation rows (75% vs 20% overall)."""
    a = [i % 2 == 0 for i in range(400)]
    negation = [i < 80 for i in range(400)]
    fixed = [i for i in range(400) if not a[i] and negation[i]][:30] + [i for i in range(400) if not a[i] and not negation[i]][:10]
    b = [ok or i in fixed for i, ok in enumerate(a)]
    features = [{"id": f"r{i:04d}", "features": {"negation_in_hypothesis": "yes" if n else "no"}}
                for i, n in enumerate(negation)]
    (diff,) = compare_runs(one_seed(a), Run({"snli": {42: rows(b)}}, {"snli": features}), CFG)
    assert diff.fixed == 40 and diff.findings
    assert diff.findings[0].startswith("Rows B fixed have a negation word in the hypothesis 3.8x as often")
    assert "Rows B fixed have a negation word" in render([diff], "A", "B")


def test_a_single_seed_verdict_quotes_the_committed_seed_study_as_a_reference(tmp_path):
    study = tmp_path / "seed_study.json"
    study.write_text(json.dumps({"configs": {"default": {"sets": {"snli": {
        "seeds": [42, 1, 2, 3, 4], "adapter": {"accuracy_sd": 0.012, "accuracy_min": 0.68, "accuracy_max": 0.71}}}}}}))
    (diff,) = compare_runs(one_seed([True] * 5), one_seed([True] * 5), CFG)
    markdown = render([diff], "A", "B", seed_reference(study))
    assert ("For reference, measured for the default config and not for these runs: across 5 training seeds the "
            "adapter's accuracy on `snli` had sd 1.2 points (68.0% to 71.0%") in markdown
    assert seed_reference(tmp_path / "absent.json") == {}


def test_a_knob_that_moves_the_label_prior_is_caught_where_accuracy_alone_would_not_say_which_label():
    """B's seeds answer `neutral` 20 points more often (synthetic rows: wrong = neutral): the neutral and entailment
    shares move beyond the seed noise at the Bonferroni-widened level, contradiction (never predicted) does not;
    the same config against itself moves no share."""
    rng = np.random.default_rng(5)
    p_right = rng.choice([0.3, 0.7, 0.9], size=600)
    a, b, again = seeded_runs(rng, p_right, 5), seeded_runs(rng, p_right, 3, shift=-0.2), seeded_runs(rng, p_right, 3)
    shifts = {s["label"]: s for s in label_shifts(Run({"snli": a}), Run({"snli": b}), CFG)}
    assert shifts["neutral"]["share_b"] - shifts["neutral"]["share_a"] == pytest.approx(0.2, abs=0.06)   # 2 sd of the seed means
    assert shifts["neutral"]["beyond_noise"] and shifts["neutral"]["ci"][0] > 0
    assert shifts["entailment"]["beyond_noise"] and shifts["entailment"]["ci"][1] < 0
    assert not shifts["contradiction"]["beyond_noise"] and shifts["contradiction"]["share_b"] == 0
    assert shifts["neutral"]["confidence"] == pytest.approx(1 - 0.05 / 3, abs=1e-4)   # 1 set x 3 labels
    assert not any(s["beyond_noise"] for s in label_shifts(Run({"snli": a}), Run({"snli": again}), CFG))
