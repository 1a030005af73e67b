"""The compare stage on hand-built predictions: exact counts, known statistics, clear errors, every section."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from qlora_diff.errors import InputError
from conftest import REPO
from qlora_diff.compare import compare, compare_predictions, join_predictions, mcnemar_exact_p, paired_bootstrap_ci
from qlora_diff.config import parse_config
from qlora_diff.report import SECTIONS, render_markdown

LABELS = ["entailment", "neutral", "contradiction"]


def prediction(row_id: str, gold: str, predicted: str) -> dict:
    probs = {label: (0.8 if label == predicted else 0.1) for label in LABELS}
    return {"id": row_id, "premise": f"premise {row_id}", "hypothesis": f"hypothesis {row_id}", "gold": gold,
            "prediction": predicted, "probs": probs, "correct": gold == predicted}


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


def test_counts_are_exact():
    base, adapter = build_pairs(7, 3, 4, 11)
    cfg = parse_config({"report": {"bootstrap_samples": 500}})
    result = compare_predictions(cfg, join_predictions(base, adapter[::-1]))
    assert (result["corrected"], result["regressed"], result["still_wrong"], result["still_right"]) == (7, 3, 4, 11)
    assert result["accuracy_delta"] == pytest.approx((18 - 14) / 25, abs=1e-4)
    assert result["label_bias"]["base"] == {"entailment": 11, "neutral": 14, "contradiction": 0}
    assert result["transitions"]["neutral->contradiction"] == 11


def test_mcnemar_matches_known_value():
    assert mcnemar_exact_p(10, 2) == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_exact_p(2, 10) == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 5) == pytest.approx(1.0)


def test_bootstrap_ci_contains_observed_and_is_reproducible():
    rng = np.random.default_rng(1)
    base = rng.random(300) < 0.4
    adapter = rng.random(300) < 0.6
    observed = adapter.mean() - base.mean()
    first = paired_bootstrap_ci(base, adapter, 2000, seed=3, confidence=0.95)
    assert first[0] < observed < first[1]
    assert paired_bootstrap_ci(base, adapter, 2000, seed=3, confidence=0.95) == first
    assert paired_bootstrap_ci(base, adapter, 2000, seed=4, confidence=0.95) != first


def test_mismatched_or_duplicated_ids_are_clear_errors():
    base, adapter = build_pairs(2, 1, 1, 1)
    with pytest.raises(InputError, match=r"1 only in base .*'c000'.*1 only in adapter"):
        join_predictions(base, adapter[1:] + [prediction("extra", "neutral", "neutral")])
    with pytest.raises(InputError, match=r"adapter:2: duplicated id 'c000'"):
        join_predictions(base, [adapter[0], adapter[0]] + adapter[1:])


def test_report_has_every_section_and_a_summary_sentence():
    base, adapter = build_pairs(10, 2, 3, 15)
    cfg = parse_config({"report": {"bootstrap_samples": 300, "examples_per_category": 2}})
    comparison = compare(cfg, join_predictions(base, adapter), {"chance_accuracy": 0.3333}, {}, {})
    markdown = render_markdown(comparison)
    for section in SECTIONS:
        assert f"## {section}" in markdown
    assert "accuracy rose from 56.7% (base) to 83.3% (adapter)" in markdown
    assert "corrected 10 rows and regressed 2" in markdown and "p = 0.0386" in markdown
    assert markdown.count("| c0") == 2 and "| 33.3% / n/a |" in markdown


def test_compare_stage_writes_report_metrics_and_plot_data(tmp_path):
    base, adapter = build_pairs(10, 2, 3, 15)
    predictions = tmp_path / "reports" / "predictions"
    predictions.mkdir(parents=True)
    for name, rows in (("base", base), ("adapter", adapter)):
        (predictions / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "params.yaml").write_text("report: {bootstrap_samples: 300, examples_per_category: 2}\n")
    done = subprocess.run([sys.executable, str(REPO / "stages/compare.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "accuracy rose from 56.7% (base) to 83.3% (adapter)" in done.stdout
    saved = json.loads((tmp_path / "metrics/compare.json").read_text())
    assert saved["corrected"] == 10 and saved["mcnemar_p_value"] == pytest.approx(0.0386, abs=1e-4)
    assert "per_class" not in saved and "transitions" not in saved
    assert "## Significance" in (tmp_path / "reports/comparison.md").read_text()
    transitions = json.loads((tmp_path / "reports/plots/transitions.json").read_text())
    assert len(transitions) == 30 and transitions[0] == {"base": "neutral", "adapter": "contradiction"}
