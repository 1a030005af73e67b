"""Hand-built predictions of a small project, as the evaluate and slices stages leave them, for the compare and
report stages and the page tests: every count is known in advance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

from qlora_diff.analysis.calibration import RULES, calibration_metrics
from qlora_diff.analysis.metrics import classification_metrics
from qlora_diff.analysis.seeds import seed_report
from qlora_diff.core.config import parse_config

LABELS = ["entailment", "neutral", "contradiction"]


def prediction(row_id: str, gold: str, predicted: str) -> dict:
    probs = {label: (0.8 if label == predicted else 0.1) for label in LABELS}
    return {"id": row_id, "premise": f"premise {row_id}", "hypothesis": f"hypothesis {row_id}", "gold": gold,
            "prediction": predicted, "probs": probs, "correct": gold == predicted, "margin": 1.3863,
            "predictions_by_rule": {rule: predicted for rule in RULES}}


HYPOTHESIS_ONLY = {"accuracy": 0.5, "accuracy_ci_low": 0.3, "accuracy_ci_high": 0.7, "chance_accuracy": 0.3333,
                   "majority_class_accuracy": 0.5}


def model_metrics(cfg, rows: list[dict]) -> dict:
    """What an evaluate stage writes for ``rows``: accuracy with its CI, the baselines, per-class, and calibration
    when the rows have probabilities (eval.method loglik)."""
    metrics = classification_metrics([r["gold"] for r in rows], [r["prediction"] for r in rows], LABELS,
                                     cfg.report.confidence)
    if all(r.get("probs") and "predictions_by_rule" in r for r in rows):
        metrics["calibration"] = calibration_metrics(rows, LABELS, {label: label for label in LABELS}, cfg.report)
    return metrics


def slice_rows(base: list[dict]) -> list[dict]:
    """Slice features as the slices stage writes them: every other row artifact-easy."""
    return [{"id": r["id"], "features": {"gold": r["gold"], "artifact": "easy" if i % 2 else "hard"}}
            for i, r in enumerate(base)]


def seed_metrics(cfg, name: str, base: list[dict], replicates: dict[int, list[dict]]) -> dict:
    """What the seeds stage writes for these replicates (train.seed first), all trained in float32."""
    features = {row["id"]: row["features"] for row in slice_rows(base)}
    return seed_report(cfg, name, base, replicates, {seed: "float32" for seed in replicates}, features)[0]


def build_pairs(corrected: int, regressed: int, still_wrong: int, still_right: int) -> tuple[list, list]:
    base, adapter = [], []
    plan = [("c", "contradiction", "neutral", "contradiction")] * corrected + \
           [("r", "neutral", "neutral", "entailment")] * regressed + \
           [("w", "entailment", "neutral", "contradiction")] * still_wrong + \
           [("s", "entailment", "entailment", "entailment")] * still_right
    for i, (kind, gold, before, after) in enumerate(plan):
        base.append(prediction(f"{kind}{i:03d}", gold, before))
        adapter.append(prediction(f"{kind}{i:03d}", gold, after))
    return base, adapter


def write_set(root, name: str, base: list[dict], adapter: list[dict]) -> None:
    """Prediction files and evaluate metrics of one set, as the evaluate stages leave them."""
    predictions, metrics = root / "reports" / "predictions" / name, root / "metrics" / "eval" / name
    predictions.mkdir(parents=True)
    metrics.mkdir(parents=True)
    (predictions / "slices.jsonl").write_text("".join(json.dumps(r) + "\n" for r in slice_rows(base)))
    (metrics / "slices.json").write_text(json.dumps(HYPOTHESIS_ONLY))
    for which, rows in (("base", base), ("adapter", adapter)):
        (predictions / f"{which}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (metrics / f"{which}.json").write_text(json.dumps({**model_metrics(parse_config({}), rows),
                                                           "compute_dtype": "float32"}))


def run_stage(root, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(REPO / "stages" / args[0]), *args[1:]], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


# Two sets: `snli` improves significantly (10 corrected, 2 regressed), `hard` does not (3 vs 4).
PROJECT_SETS = {"snli": (10, 2, 3, 15), "hard": (3, 4, 13, 10)}


REPLICATE_SEED, REPLICATE_FLIPS = 7, 4   # one replicate per set: the first 4 rows answered as the base model did


def write_replicate(root: Path, name: str, base: list[dict], adapter: list[dict]) -> None:
    """Seed REPLICATE_SEED's predictions and metrics, as evaluate_seed leaves them: the adapter's, except that the
    first REPLICATE_FLIPS rows take the base model's answer (so those rows are seed-dependent)."""
    rows = [dict(row, prediction=before["prediction"], correct=before["correct"]) if i < REPLICATE_FLIPS else row
            for i, (before, row) in enumerate(zip(base, adapter))]
    folder = root / "reports" / "predictions" / name / "seeds"
    folder.mkdir(parents=True)
    (folder / f"{REPLICATE_SEED}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = {**model_metrics(parse_config({}), rows), "compute_dtype": "float32",
               "fine_tune": {"seed": REPLICATE_SEED, "compute_dtype": "float32"}}
    (folder / f"{REPLICATE_SEED}.json").write_text(json.dumps(metrics))


def write_project(root: Path, sets: dict[str, tuple[int, int, int, int]] = PROJECT_SETS, replicate: bool = False
                  ) -> None:
    """params.yaml, the plot templates and each set's predictions and metrics: the inputs of compare and report.
    With ``replicate``, each set also has the predictions of one more training seed (``write_replicate``)."""
    root.mkdir(parents=True, exist_ok=True)
    eval_sets = ", ".join(f"{name}: {{source: bundled, size: {sum(counts)}}}" for name, counts in sets.items())
    (root / "params.yaml").write_text("report: {bootstrap_samples: 300, examples_per_category: 2}\n"
                                      f"eval_sets: {{{eval_sets}}}\n"
                                      + (f"train: {{extra_seeds: [{REPLICATE_SEED}]}}\n" if replicate else ""))
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots", ignore=shutil.ignore_patterns("*.html"))
    for name, counts in sets.items():
        write_set(root, name, *build_pairs(*counts))
        if replicate:
            write_replicate(root, name, *build_pairs(*counts))
    (root / "metrics" / "finetune.json").write_text(json.dumps({"steps": 3, "final_loss": 0.5,
                                                                 "compute_dtype": "float32"}))


def build_reports(root: Path, sets: dict[str, tuple[int, int, int, int]] = PROJECT_SETS, replicate: bool = False
                  ) -> None:
    """write_project, then the seeds and compare stages of every set and the report stage."""
    write_project(root, sets, replicate)
    for name in sets:
        run_stage(root, "seeds.py", name)
        run_stage(root, "compare.py", name)
    run_stage(root, "report.py")


def run_rows(correct: list[bool], prefix: str = "r") -> list[dict]:
    """One run's adapter predictions, right where ``correct`` says."""
    return [{"id": f"{prefix}{i:04d}", "gold": "entailment", "prediction": "entailment" if ok else "neutral",
             "correct": bool(ok)} for i, ok in enumerate(correct)]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _commit_run(repo: Path, correct: list[bool], message: str, eval_dtype: str | None = None) -> None:
    """One run's adapter predictions (DVC-tracked) and, given ``eval_dtype``, the metrics that record its dtypes."""
    path = repo / "reports/predictions/snli/adapter.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in run_rows(correct)))
    if eval_dtype:
        (repo / "metrics/eval/snli").mkdir(parents=True, exist_ok=True)
        (repo / "metrics/finetune.json").write_text(json.dumps({"compute_dtype": "bfloat16"}))
        (repo / "metrics/eval/snli/adapter.json").write_text(json.dumps({"compute_dtype": eval_dtype}))
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", str(path)], cwd=repo, check=True, capture_output=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def empty_run_repo(tmp_path: Path) -> Path:
    """A git + DVC repo at ``tmp_path/repo`` whose params.yaml names one evaluation set, ``snli``; nothing
    committed yet."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("eval_sets:\n  snli:\n    source: bundled\n")
    return repo


def two_run_repo(tmp_path: Path) -> Path:
    """A git + DVC repo with two runs of one set: tag ``run-a`` (6 of 10 rows right, no metrics: a run from before
    dtypes were recorded), tag ``run-bf16`` (the same rows; bf16 training and evaluation) and HEAD (9 of 10: B fixes
    3, breaks none; bf16 training, fp32 evaluation). The workspace copy of the predictions is deleted: only DVC's
    cache holds them."""
    repo = empty_run_repo(tmp_path)
    _commit_run(repo, [True] * 6 + [False] * 4, "run a")
    git(repo, "tag", "run-a")
    _commit_run(repo, [True] * 6 + [False] * 4, "run a, dtypes recorded", eval_dtype="bfloat16")
    git(repo, "tag", "run-bf16")
    _commit_run(repo, [True] * 9 + [False], "run b", eval_dtype="float32")
    (repo / "reports/predictions/snli/adapter.jsonl").unlink()
    return repo
