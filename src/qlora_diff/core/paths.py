"""Every file the pipeline reads or writes, relative to the repository root, named once.

`dvc.yaml` has to spell the same paths (it cannot import Python); tests/test_structure.py checks that each stage's
outputs there are exactly the ones named here, and that no stage script or library module spells a path itself.
"""

from __future__ import annotations

from pathlib import Path

BASE_MODEL = Path("models/base")
BASE_MODEL_INFO = Path("models/base.json")

TRAIN_ROWS = Path("data/prepared/train.jsonl")
TRAIN_DATA_METRICS = Path("metrics/data.json")

HYPOTHESIS_MODEL = Path("models/hypothesis_baseline.pkl")
HYPOTHESIS_METRICS = Path("metrics/hypothesis_baseline.json")

ADAPTER = Path("models/adapter")
FINETUNE_METRICS = Path("metrics/finetune.json")
FINETUNE_CHECKPOINTS = Path("checkpoints/finetune")
LIVE_DIR = Path("dvclive")   # the training curves: dvclive/plots/metrics/train/*.tsv

PLOT_TEMPLATES = Path(".dvc/plots")   # the project's `dvc plots` templates (DVC's templates directory)
OFFLINE_PLOTS_PAGE = Path(".dvc/plots/offline.html")   # plots.html_template in .dvc/config

PLOTS = Path("reports/plots")   # `dvc plots` data, one folder per evaluation set
REPORT_MARKDOWN = Path("reports/comparison.md")
REPORT_HTML = Path("reports/comparison.html")

MODELS = ("base", "adapter")


def eval_rows(eval_set: str) -> Path:
    return Path(f"data/prepared/eval/{eval_set}.jsonl")


def eval_data_metrics(eval_set: str) -> Path:
    return Path(f"metrics/eval/{eval_set}/data.json")


def slice_rows(eval_set: str) -> Path:
    """Per-row slice features and the hypothesis-only prediction (the slices stage)."""
    return Path(f"reports/predictions/{eval_set}/slices.jsonl")


def slice_metrics(eval_set: str) -> Path:
    """The hypothesis-only baseline's metrics on the set: what splits its rows into artifact-easy and hard."""
    return Path(f"metrics/eval/{eval_set}/slices.json")


def predictions(eval_set: str, model: str) -> Path:
    return Path(f"reports/predictions/{eval_set}/{model}.jsonl")


def eval_metrics(eval_set: str, model: str) -> Path:
    return Path(f"metrics/eval/{eval_set}/{model}.json")


def confusion_plot(eval_set: str, model: str) -> Path:
    return PLOTS / eval_set / f"confusion_{model}.json"


def compare_metrics(eval_set: str) -> Path:
    return Path(f"metrics/eval/{eval_set}/compare.json")


def set_report(eval_set: str) -> Path:
    return Path(f"reports/eval/{eval_set}.md")


def compare_plot(eval_set: str, name: str) -> Path:
    """``name``: transitions, slices or reliability."""
    return PLOTS / eval_set / f"{name}.json"


COMPARE_PLOTS = ("transitions", "slices", "reliability")

# Training-seed replicates (train.extra_seeds): one fine-tune and one evaluation per set for each extra seed.
# train.seed's own run keeps the paths above; the seeds stage reads them all.


def replicate_adapter(seed: int) -> Path:
    return Path(f"models/seeds/{seed}")


def replicate_finetune_metrics(seed: int) -> Path:
    """Beside the adapter, as models/base.json is beside models/base."""
    return Path(f"models/seeds/{seed}.json")


def replicate_checkpoints(seed: int) -> Path:
    return Path(f"checkpoints/seeds/{seed}")


def replicate_predictions(eval_set: str, seed: int) -> Path:
    """Inside the set's predictions folder, which the seeds stage depends on as a whole (the replicates it holds
    vary with train.extra_seeds, and a dvc.yaml dependency list cannot)."""
    return Path(f"reports/predictions/{eval_set}/seeds/{seed}.jsonl")


def replicate_eval_metrics(eval_set: str, seed: int) -> Path:
    """Beside its predictions, for the same reason; it also records how the replicate was trained."""
    return Path(f"reports/predictions/{eval_set}/seeds/{seed}.json")


def stability_rows(eval_set: str) -> Path:
    """Per row: in how many seeds the adapter is right, corrects or breaks the base model, and its label."""
    return Path(f"reports/stability/{eval_set}.jsonl")


def seed_metrics(eval_set: str) -> Path:
    """The spread across seeds (tracked metrics: `dvc exp show` columns)."""
    return Path(f"metrics/eval/{eval_set}/seeds.json")


def stage_outputs(stage: str, eval_set: str | None = None, seed: int | None = None) -> set[Path]:
    """What each DVC stage writes (outs, metrics and plots in `dvc.yaml`), for the structure test."""
    s, n = eval_set or "", seed or 0
    return {
        "base_model": {BASE_MODEL, BASE_MODEL_INFO},
        "prepare": {TRAIN_ROWS, TRAIN_DATA_METRICS},
        "prepare_eval": {eval_rows(s), eval_data_metrics(s)},
        "hypothesis_baseline": {HYPOTHESIS_MODEL, HYPOTHESIS_METRICS},
        "slices": {slice_rows(s), slice_metrics(s)},
        "evaluate_base": {predictions(s, "base"), eval_metrics(s, "base"), confusion_plot(s, "base")},
        "finetune": {ADAPTER, LIVE_DIR / "plots", FINETUNE_METRICS},
        "evaluate_adapter": {predictions(s, "adapter"), eval_metrics(s, "adapter"), confusion_plot(s, "adapter")},
        "finetune_seed": {replicate_adapter(n), replicate_finetune_metrics(n)},
        "evaluate_seed": {replicate_predictions(s, n), replicate_eval_metrics(s, n)},
        "seeds": {stability_rows(s), seed_metrics(s)},
        "compare": {set_report(s), compare_metrics(s), *(compare_plot(s, name) for name in COMPARE_PLOTS)},
        "report": {REPORT_MARKDOWN, REPORT_HTML},
    }[stage]
