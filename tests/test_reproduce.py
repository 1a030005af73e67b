"""The reproduction check: identical predictions are called identical (naming any statistic that moved), changed
predictions are counted and tested per set and model with their likely cause, and a committed revision is read
from git while the workspace holds the rebuilt run."""

from __future__ import annotations

import json
import subprocess
import sys
from math import comb
from pathlib import Path

import pytest
from synthetic import empty_run_repo, git, run_rows

from qlora_diff.analysis.reproduce import (
    IDENTICAL,
    SEED_NOISE_SDS,
    Snapshot,
    differing_statistics,
    render,
    reproduction_verdict,
)
from qlora_diff.core.config import parse_config

CFG = parse_config({"eval_sets": {"snli": {"source": "bundled"}}, "report": {"bootstrap_samples": 1000}})
MACHINE_A = {"cpu": "CPU A", "cpu_flags": ["avx2"], "gpu": None, "threads": 2, "torch": "2.13.0"}
MACHINE_B = {**MACHINE_A, "cpu": "CPU B", "cpu_flags": ["avx2", "avx512f"]}


def snapshot(base_correct: list[bool], adapter_correct: list[bool], accuracy: float, machine: dict,
             dtype: str = "float32", seconds: float = 10.0) -> Snapshot:
    metrics = {"metrics/eval/snli/adapter.json": {"accuracy": accuracy, "compute_dtype": dtype, "machine": machine,
                                                  "seconds": seconds, "per_class": {"neutral": {"f1": 0.5}}}}
    return Snapshot({("snli", "base"): run_rows(base_correct), ("snli", "adapter"): run_rows(adapter_correct)},
                    metrics)


def test_the_same_predictions_on_another_machine_are_identical_and_timings_are_not_statistics():
    base, adapter = [i % 3 == 0 for i in range(60)], [i % 2 == 0 for i in range(60)]
    verdict = reproduction_verdict(CFG, snapshot(base, adapter, 0.5, MACHINE_A),
                                   snapshot(base, adapter, 0.5, MACHINE_B, seconds=99.0), "HEAD")
    assert verdict.identical and verdict.differing_statistics == []
    assert [(d.set_name, d.model, d.changed) for d in verdict.drifts] == [("snli", "base", 0), ("snli", "adapter", 0)]
    markdown = render(verdict)
    assert markdown.startswith(f"Reproduction check against `HEAD`: **{IDENTICAL}** (`snli` base, `snli` adapter")
    assert "Every recorded statistic in `metrics/` is the committed value" in markdown


def test_identical_predictions_still_name_a_statistic_that_moved_in_its_last_recorded_digit():
    rows = [True] * 10
    committed, here = snapshot(rows, rows, 0.6921, MACHINE_A), snapshot(rows, rows, 0.6920, MACHINE_A)
    here.metrics["metrics/eval/snli/adapter.json"]["per_class"]["neutral"]["f1"] = 0.51
    assert differing_statistics(committed, here) == [
        "metrics/eval/snli/adapter.json: accuracy 0.6921 -> 0.692",
        "metrics/eval/snli/adapter.json: per_class.neutral.f1 0.5 -> 0.51"]
    markdown = render(reproduction_verdict(CFG, committed, here, "HEAD"))
    assert f"**{IDENTICAL}**" in markdown and "- metrics/eval/snli/adapter.json: accuracy 0.6921 -> 0.692" in markdown


def test_changed_predictions_are_counted_tested_and_blamed_on_what_differs():
    """200 rows. The rebuilt adapter fixes 10 of the committed adapter's wrong rows and breaks 2 of its right ones:
    12 rows changed, delta = (10 - 2) / 200 = +4.0 points, McNemar p = 2 * P(X <= 2), X ~ Binomial(12, 1/2).
    With a seed sd of 1.0 point the seed-noise bound is 1.96 * sqrt(2) * 1.0 = 2.77 points: +4.0 is beyond it."""
    base = [i < 70 for i in range(200)]
    committed = [i < 100 for i in range(200)]
    rebuilt = [(ok and i >= 2) or (100 <= i < 110) for i, ok in enumerate(committed)]
    verdict = reproduction_verdict(CFG, snapshot(base, committed, 0.5, MACHINE_A, "float32"),
                                   snapshot(base, rebuilt, 0.54, MACHINE_B, "bfloat16"), "HEAD", {"snli": 0.01})
    assert not verdict.identical
    base_drift, adapter_drift = verdict.drifts
    assert base_drift.changed == 0 and base_drift.beyond_seed_noise is None   # no seed noise for an untrained model
    diff = adapter_drift.difference
    assert (adapter_drift.changed, diff.fixed, diff.broken) == (12, 10, 2)
    assert diff.delta == pytest.approx(0.04)
    assert diff.mcnemar_p == pytest.approx(2 * sum(comb(12, k) for k in range(3)) / 2**12, rel=1e-9)
    assert SEED_NOISE_SDS * 0.01 == pytest.approx(0.0277, abs=1e-4) and adapter_drift.beyond_seed_noise is True
    assert verdict.causes == [
        'metrics/eval/snli/adapter.json: compute_dtype "float32" -> "bfloat16"',
        'metrics/eval/snli/adapter.json: machine ' + json.dumps(MACHINE_A) + " -> " + json.dumps(MACHINE_B)]
    markdown = render(verdict)
    assert markdown.startswith("Reproduction check against `HEAD`: **predictions differ** in `snli` adapter "
                               "(12 of 200 rows).")
    assert "- `snli` adapter: 12 of 200 predictions changed; accuracy 50.0% committed, 54.0% here, difference " \
           "+4.0 points (paired 95% CI [" in markdown
    assert "beyond the training-seed noise (|difference| > 2.77 x the seed study's sd of 1.0 points" in markdown
    within = reproduction_verdict(CFG, snapshot(base, committed, 0.5, MACHINE_A),
                                  snapshot(base, rebuilt, 0.54, MACHINE_A), "HEAD", {"snli": 0.02})
    assert within.drifts[1].beyond_seed_noise is False and "within the training-seed noise" in render(within)
    assert "no recorded dtype, device or machine field differs" in render(within)


def _write_run(repo: Path, adapter_correct: list[bool], machine: dict) -> None:
    for model, correct in (("base", [True] * 5 + [False] * 5), ("adapter", adapter_correct)):
        path = repo / f"reports/predictions/snli/{model}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in run_rows(correct)))
        metrics = repo / f"metrics/eval/snli/{model}.json"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"accuracy": sum(correct) / 10, "compute_dtype": "float32",
                                       "machine": machine}))


def check(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qlora_diff.analysis.reproduce", *args], cwd=repo,
                          capture_output=True, text=True)


def test_the_command_reads_the_committed_run_from_git_and_writes_its_verdict(tmp_path):
    repo = empty_run_repo(tmp_path)
    _write_run(repo, [True] * 8 + [False] * 2, MACHINE_A)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "committed run")
    _write_run(repo, [True] * 8 + [False] * 2, MACHINE_B)    # rebuilt elsewhere: the same predictions
    same = check(repo)
    assert same.returncode == 0 and same.stdout.startswith(f"Reproduction check against `HEAD`: **{IDENTICAL}**")
    assert (repo / "reproduction.md").read_text() == same.stdout
    _write_run(repo, [True] * 6 + [False] * 4, MACHINE_B)    # two rows broken
    moved = check(repo, "--strict")
    assert moved.returncode == 1 and "**predictions differ** in `snli` adapter (2 of 10 rows)" in moved.stdout
    unknown = check(repo, "--against", "nosuchrev")
    assert unknown.returncode == 1 and unknown.stderr.strip().splitlines() == [
        "error: unknown revision 'nosuchrev': give a git commit, branch or tag, a DVC experiment name "
        "(`dvc exp list`), or 'workspace'"]


def test_the_fresh_clone_benchmark_times_the_stages_dvc_ran_and_names_those_it_skipped(tmp_path):
    """benchmarks/repro_fresh_clone.py reads DVC's output: a stage it ran is timed to the next one, and a stage DVC
    skipped as up to date (the evaluations, when the fine-tune reproduced the adapter bit for bit) is named, so the
    wall time is never read as the full run's."""
    import os

    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    from repro_fresh_clone import timed_stages

    script = ("echo \"Running stage 'finetune':\"; sleep 0.3; echo \"Stage 'evaluate_adapter@snli' didn't change, "
              "skipping\"; echo \"Running stage 'report':\"")
    wall, stages, skipped = timed_stages(["bash", "-c", script], tmp_path, dict(os.environ))
    assert list(stages) == ["finetune", "report"] and skipped == ["evaluate_adapter@snli"]
    assert stages["finetune"] >= 0.3 and wall >= stages["finetune"] + stages["report"]
