"""Seed replicates by hand-computed numbers and by simulation: the spread across seeds, per-row stability, and the
seeds-and-rows CI's coverage of a known difference."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from scipy.special import expit
from synthetic import REPLICATE_FLIPS, REPLICATE_SEED, run_stage, write_project

from qlora_diff.analysis.seeds import (
    SEED_DEPENDENT,
    STABLE_CORRECT,
    STABLE_WRONG,
    correctness_matrix,
    row_stability,
    seed_spread,
    seed_row_ci,
)
from qlora_diff.analysis.stats import paired_bootstrap_ci
from qlora_diff.core.errors import InputError

IDENTITY = {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"}


def row(row_id: str, right: bool, gold_p: float | None = None) -> dict:
    out = {"id": row_id, "gold": "neutral", "prediction": "neutral" if right else "entailment", "correct": right}
    if gold_p is not None:
        out["probs"] = {"entailment": 1 - gold_p, "neutral": gold_p, "contradiction": 0.0}
    return out


def test_seed_spread_by_hand():
    """Three seeds on four rows: 2, 3 and 4 right -> accuracies 0.5, 0.75, 1.0; sd = sqrt(0.125 / 2) = 0.25."""
    correct = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=float)
    spread = seed_spread(correct)
    assert (spread.seeds, spread.mean, spread.min, spread.max) == (3, 0.75, 0.5, 1.0)
    assert spread.sd == pytest.approx(0.25, abs=1e-12)
    assert seed_spread(correct[:1]).sd == 0.0   # one seed: the spread is not measured


def test_row_stability_by_hand():
    """Base right on r1 only. Three seeds: r1 right in all (stable-correct, never broken), r2 right in two of three
    (seed-dependent, corrected twice), r3 right in none (stable-wrong); r2's p(gold) 0.9, 0.6, 0.3 -> mean 0.6,
    sd 0.3."""
    base = [row("r1", True, 0.8), row("r2", False, 0.2), row("r3", False, 0.1)]
    replicates = [[row("r1", True, 0.9), row("r2", True, 0.9), row("r3", False, 0.2)],
                  [row("r3", False, 0.2), row("r1", True, 0.7), row("r2", True, 0.6)],   # any row order
                  [row("r1", True, 0.8), row("r2", False, 0.3), row("r3", False, 0.2)]]
    stability = {r["id"]: r for r in row_stability(base, replicates, IDENTITY)}
    assert [r["id"] for r in row_stability(base, replicates, IDENTITY)] == ["r1", "r2", "r3"]
    assert {k: stability["r1"][k] for k in ("right", "corrected", "broken", "stability")} == \
        {"right": 3, "corrected": 0, "broken": 0, "stability": STABLE_CORRECT}
    assert {k: stability["r2"][k] for k in ("right", "corrected", "broken", "stability")} == \
        {"right": 2, "corrected": 2, "broken": 0, "stability": SEED_DEPENDENT}
    assert (stability["r2"]["gold_p_mean"], stability["r2"]["gold_p_sd"]) == (0.6, 0.3)
    assert (stability["r3"]["right"], stability["r3"]["stability"], stability["r3"]["gold_p_sd"]) == \
        (0, STABLE_WRONG, 0.0)


def test_rows_broken_by_some_seeds_are_counted():
    base = [row("r1", True)]
    replicates = [[row("r1", True)], [row("r1", False)], [row("r1", False)]]
    (only,) = row_stability(base, replicates, IDENTITY)
    assert (only["broken"], only["corrected"], only["stability"], only["gold_p_mean"]) == (2, 0, SEED_DEPENDENT, None)


def test_replicates_must_score_the_same_rows():
    with pytest.raises(InputError, match=r"replicate 1 scored other rows .*first missing id 'r2'"):
        correctness_matrix([[row("r1", True), row("r2", True)], [row("r1", True), row("r3", True)]])


def test_one_seed_per_side_is_the_paired_row_bootstrap():
    """Without seed replicates the seeds-and-rows CI is the paired t interval, which the paired bootstrap matches."""
    rng = np.random.default_rng(0)
    before, after = rng.random(400) < 0.5, rng.random(400) < 0.65
    two_level = seed_row_ci(before[None], after[None], 0.95)
    paired = paired_bootstrap_ci(before, after, 4000, 1, 0.95)
    assert two_level == pytest.approx(paired, abs=0.01)


def test_seed_noise_widens_the_interval():
    """Same rows, same mean skill; the seeds of B differ a lot: the CI over seeds and rows is wider than one seed pair's."""
    rng = np.random.default_rng(2)
    difficulty = rng.normal(size=300)
    draw = lambda shift: (rng.random(300) < expit(1.0 + shift - difficulty)).astype(float)
    before = np.array([draw(0.0)])
    after = np.array([draw(shift) for shift in (-1.0, -0.5, 0.0, 0.5, 1.0)])
    wide = seed_row_ci(before, after, 0.95)
    narrow = seed_row_ci(before, after[2:3], 0.95)
    assert wide[1] - wide[0] > 1.5 * (narrow[1] - narrow[0])


def simulated_coverage(replicates: int, seeds: int, rows: int = 300) -> float:
    """Share of simulated experiments whose seeds-and-rows 95% CI covers the true difference of two configs.

    Design: a population of rows with difficulty d ~ N(0, 1); config A has skill 0.8, B 1.0; each fine-tune (seed)
    shifts its skill by e ~ N(0, 0.3^2) and each of its answers by a row x seed effect N(0, 0.5^2) (seed-dependent
    rows). The truth is each config's accuracy over the row population and over seeds, by Monte Carlo."""
    rng = np.random.default_rng(7)
    skill = {"A": 0.8, "B": 1.0}
    population = rng.normal(size=(400_000,))
    truth = {c: float(expit(s + rng.normal(0, 0.3, population.size) + rng.normal(0, 0.5, population.size)
                            - population).mean()) for c, s in skill.items()}
    true_difference = truth["B"] - truth["A"]
    covered = 0
    for experiment in range(replicates):
        difficulty = rng.normal(size=rows)
        right = {c: (rng.random((seeds, rows)) < expit(s + rng.normal(0, 0.3, (seeds, 1))
                                                        + rng.normal(0, 0.5, (seeds, rows)) - difficulty)).astype(float)
                 for c, s in skill.items()}
        low, high = seed_row_ci(right["A"], right["B"], 0.95)
        covered += low <= true_difference <= high
    return covered / replicates


def test_the_seeds_and_rows_ci_covers_the_true_difference_at_its_nominal_rate():
    """Measured on the design above, 200 simulated experiments: 96.0% with 5 seeds per config, 95.5% with 3, for a
    nominal 95% (the binomial sd of a 95% coverage over 200 is 1.5 points: bounds 2.7 sd below, 2 above). A bootstrap
    over seeds, then rows, covers 98.5% here: it counts a row's seed noise twice (Owen 2007)."""
    assert 0.91 <= simulated_coverage(replicates=200, seeds=5) <= 0.98
    assert 0.91 <= simulated_coverage(replicates=200, seeds=3) <= 0.98


def test_seeds_stage_writes_the_spread_stability_and_the_report_section(tmp_path):
    """snli of the synthetic project (10 corrected, 2 regressed, 3 still wrong, 15 still right) with one replicate
    that answers the first 4 rows (corrected ones) as the base model: seed 42 gets 25 of 30 right, seed 7 gets 21.
    Mean 0.7667, sd = 4/30 / sqrt(2) = 0.0943; those 4 rows are seed-dependent, 4 of seed 42's 10 corrected rows."""
    write_project(tmp_path, replicate=True)
    done = run_stage(tmp_path, "seeds.py", "snli")
    assert "2 seed(s), adapter accuracy mean 76.7% (sd 9.4%, 70.0% to 83.3%)" in done.stdout
    metrics = json.loads((tmp_path / "metrics/eval/snli/seeds.json").read_text())
    assert metrics["seeds"] == [42, REPLICATE_SEED] and metrics["compute_dtype"] == "float32"
    assert metrics["adapter"] == {"accuracy_mean": 0.7667, "accuracy_sd": 0.0943, "accuracy_min": 0.7,
                                  "accuracy_max": 0.8333}
    assert metrics["adapter_accuracy_by_seed"] == {"42": 0.8333, "7": 0.7}
    assert metrics["gain"]["mean"] == pytest.approx(0.7667 - 17 / 30, abs=1e-4) and metrics["gain"]["covers"] == \
        "seeds and rows"
    assert metrics["stability"] == {"stable-correct": 21, "stable-wrong": 5, "seed-dependent": REPLICATE_FLIPS}
    assert metrics["primary_seed_transitions"] == {"corrected": 10, "corrected_seed_dependent": 4, "regressed": 2,
                                                   "regressed_seed_dependent": 0}
    assert metrics["slices"]["artifact=hard"]["rows"] == 15
    rows = [json.loads(line) for line in (tmp_path / "reports/stability/snli.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and [row["stability"] for row in rows[:5]] == [SEED_DEPENDENT] * 4 + [STABLE_CORRECT]
    run_stage(tmp_path, "compare.py", "snli")
    section = (tmp_path / "reports/eval/snli.md").read_text()
    assert "Of train.seed's 10 corrected rows, 4 are seed-dependent; of its 2 regressed rows, 0." in section


def test_explanations_can_leave_seed_dependent_rows_out(tmp_path):
    write_project(tmp_path, replicate=True)
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text() + "slices: {stable_transitions_only: true}\n")
    run_stage(tmp_path, "seeds.py", "snli")
    run_stage(tmp_path, "compare.py", "snli")
    section = (tmp_path / "reports/eval/snli.md").read_text()
    assert f"test seed-stable rows only ({REPLICATE_FLIPS} seed-dependent rows left out" in section


def test_one_seed_says_stability_was_not_measured(tmp_path):
    write_project(tmp_path)
    run_stage(tmp_path, "seeds.py", "snli")
    metrics = json.loads((tmp_path / "metrics/eval/snli/seeds.json").read_text())
    assert (metrics["replicates"], metrics["stability"], metrics["adapter"]["accuracy_sd"]) == (1, None, 0.0)
    assert metrics["gain"]["covers"] == "rows only (one seed)"
    rows = [json.loads(line) for line in (tmp_path / "reports/stability/snli.jsonl").read_text().splitlines()]
    assert {row["stability"] for row in rows} == {None}


@pytest.mark.parametrize("where, verb, knob", [(("fine_tune",), "fine-tuned", "quant.compute_dtype"),
                                               ((), "evaluated", "eval.compute_dtype")])
def test_replicates_trained_or_evaluated_in_another_dtype_are_refused(tmp_path, where, verb, knob):
    write_project(tmp_path, replicate=True)
    replicate = tmp_path / f"reports/predictions/snli/seeds/{REPLICATE_SEED}.json"
    metrics = json.loads(replicate.read_text())
    recorded = metrics
    for key in where:
        recorded = recorded[key]
    recorded["compute_dtype"] = "bfloat16"
    replicate.write_text(json.dumps(metrics))
    done = subprocess.run([sys.executable, str(REPO / "stages/seeds.py"), "snli"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert (f"the replicates were {verb} in different compute dtypes (seed 42: float32, seed 7: bfloat16); pin {knob}"
            in done.stderr)
    assert not (tmp_path / "metrics/eval/snli/seeds.json").exists()
