"""The evaluate stage end to end on the tiny model: files, fields and types, both scoring methods."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import prepare_all, tiny_params

from qlora_diff.core.config import load_config
from qlora_diff.model.evaluate import evaluate

NUMBER = (int, float)
FIELDS = {
    "accuracy": NUMBER, "accuracy_ci_low": NUMBER, "accuracy_ci_high": NUMBER, "macro_f1": NUMBER,
    "per_class": dict, "examples": int, "seconds": NUMBER, "examples_per_second": NUMBER,
    "prompt_tokens_per_second": NUMBER, "peak_memory_gb": NUMBER, "peak_gpu_memory_gb": (type(None), float),
    "parameters_total": int, "parameters_trainable": int, "unparseable": int, "chance_accuracy": NUMBER,
    "majority_class_accuracy": NUMBER, "method": str, "eval_set": str, "compute_dtype": str,
    "near_tie_margin": float, "row_invariant_matmuls": bool, "machine": dict,
}


@pytest.mark.parametrize("method", ["loglik", "generate"])
def test_evaluate_writes_predictions_metrics_and_plot_data(project, method):
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(eval={"method": method, "batch_size": 8})))
    cfg = load_config("params.yaml")
    prepare_all(project)
    metrics = evaluate(cfg, "snli", project / "models/base", None, project / "data/prepared/eval/snli.jsonl",
                       project / "reports/predictions/snli/base.jsonl", project / "metrics/eval/snli/base.json",
                       project / "reports/plots/snli/confusion_base.json")
    saved = json.loads((project / "metrics/eval/snli/base.json").read_text())
    assert saved == metrics
    for key, kind in FIELDS.items():
        assert isinstance(saved[key], kind), f"{key}: {saved[key]!r}"
    assert set(saved["per_class"]) == set(cfg.data.labels)
    assert all(set(v) == {"precision", "recall", "f1", "support"} for v in saved["per_class"].values())
    assert saved["accuracy_ci_low"] <= saved["accuracy"] <= saved["accuracy_ci_high"]
    assert saved["examples"] == 24 and saved["parameters_trainable"] == 0
    rows = [json.loads(l) for l in (project / "reports/predictions/snli/base.jsonl").read_text().splitlines()]
    evals = [json.loads(l) for l in (project / "data/prepared/eval/snli.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in evals]
    assert sum(r["correct"] for r in rows) == saved["correct"]
    if method == "loglik":
        for row in rows:
            assert row["prediction"] == max(row["logprobs"], key=row["logprobs"].get)
            assert sum(row["probs"].values()) == pytest.approx(1, abs=1e-4)
            top, second = sorted(row["logprobs"].values())[:-3:-1]
            assert row["margin"] == pytest.approx(top - second, abs=2e-5)
            assert row["predictions_by_rule"]["raw"] == row["prediction"]
            assert set(row["predictions_by_rule"]) == {"raw", "contextual", "batch", "length_normalised"}
        assert saved["unparseable"] == 0 and saved["decision_rule"] == "none"
        calibration = saved["calibration"]
        assert sum(calibration["content_free_probs"].values()) == pytest.approx(1, abs=1e-4)
        assert calibration["accuracy_by_rule"]["raw"]["accuracy"] == saved["accuracy"]
        assert 0 <= calibration["ece"] <= 1 and 0 <= calibration["brier"] <= 2
    else:
        assert saved["unparseable"] == sum(r["prediction"] is None for r in rows)
        assert all("generation" in r for r in rows)
    plot = json.loads((project / "reports/plots/snli/confusion_base.json").read_text())
    assert len(plot) == 24 and set(plot[0]) == {"actual", "predicted"}


def score(project, **eval_params) -> list[dict]:
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(eval=eval_params)))
    cfg = load_config("params.yaml")
    evaluate(cfg, "snli", project / "models/base", None, project / "data/prepared/eval/snli.jsonl",
             project / "reports/predictions/snli/base.jsonl", project / "metrics/eval/snli/base.json",
             project / "reports/plots/snli/confusion_base.json")
    return [json.loads(l) for l in (project / "reports/predictions/snli/base.jsonl").read_text().splitlines()]


def test_predictions_do_not_depend_on_the_batch_size(project):
    """Default settings: batch sizes 1, 3 and 8 give bitwise equal log-probabilities, hence the same margin and
    prediction on every row (no batch is padded)."""
    prepare_all(project)
    runs = {size: score(project, batch_size=size) for size in (1, 3, 8)}
    for size in (3, 8):
        assert [(r["logprobs"], r["margin"], r["prediction"]) for r in runs[size]] == \
            [(r["logprobs"], r["margin"], r["prediction"]) for r in runs[1]]


def test_a_calibrated_decision_rule_is_applied_and_recorded(project):
    prepare_all(project)
    rows = score(project, calibration="batch")
    assert all(r["prediction"] == r["predictions_by_rule"]["batch"] for r in rows)
    saved = json.loads((project / "metrics/eval/snli/base.json").read_text())
    assert saved["decision_rule"] == "batch"
    assert saved["accuracy"] == saved["calibration"]["accuracy_by_rule"]["batch"]["accuracy"]


def test_evaluation_warns_and_records_when_matmul_rows_depend_on_the_batch(project, monkeypatch, caplog):
    from qlora_diff.model import evaluate as evaluate_module

    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    prepare_all(project)
    probed = []
    monkeypatch.setattr(evaluate_module, "matmul_rows_invariant", lambda model, dtype: probed.append(dtype) or False)
    metrics = evaluate(load_config("params.yaml"), "snli", project / "models/base", None,
                       project / "data/prepared/eval/snli.jsonl", project / "base.jsonl", project / "base.json", None)
    assert probed == [metrics["compute_dtype"]] and metrics["row_invariant_matmuls"] is False
    assert "predictions may depend on eval.batch_size" in caplog.text
