"""The compare stage on hand-built predictions: exact counts, known statistics, clear errors, every section."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import REPO
from synthetic import (
    HYPOTHESIS_ONLY,
    LABELS,
    build_pairs,
    model_metrics,
    prediction,
    run_stage,
    seed_metrics,
    slice_rows,
    write_project,
)

from qlora_diff.analysis.compare import compare, compare_predictions, join_predictions, versus_majority_class
from qlora_diff.analysis.explain import explain
from qlora_diff.analysis.stats import mcnemar_exact_p, paired_bootstrap_ci, significant
from qlora_diff.core.config import parse_config
from qlora_diff.core.errors import InputError
from qlora_diff.render.report import _row_invariance, headline, machine_summary, render_set_section


def render(cfg, name: str, base: list[dict], adapter: list[dict]) -> str:
    pairs = join_predictions(base, adapter)
    identity = {label: label for label in LABELS}
    return render_set_section(compare(cfg, name, pairs, model_metrics(cfg, base), model_metrics(cfg, adapter)),
                              explain(cfg, pairs, slice_rows(base), HYPOTHESIS_ONLY),
                              seed_metrics(cfg, name, base, {42: adapter}))



def test_counts_are_exact():
    base, adapter = build_pairs(7, 3, 4, 11)
    cfg = parse_config({"report": {"bootstrap_samples": 500}})
    result = compare_predictions(cfg, join_predictions(base, adapter[::-1]), LABELS, model_metrics(cfg, base),
                                 model_metrics(cfg, adapter))
    assert (result["corrected"], result["regressed"], result["still_wrong"], result["still_right"]) == (7, 3, 4, 11)
    assert result["accuracy_delta"] == pytest.approx((18 - 14) / 25, abs=1e-4)
    assert result["label_bias"]["base"] == {"entailment": 11, "neutral": 14, "contradiction": 0}
    assert result["transitions"]["neutral->contradiction"] == 11


def test_mcnemar_matches_known_value():
    # 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact_p(10, 2) == pytest.approx(158 / 4096, rel=1e-9)
    assert mcnemar_exact_p(2, 10) == pytest.approx(158 / 4096, rel=1e-9)
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
    markdown = render(cfg, "snli", base, adapter)
    assert markdown.startswith("## Evaluation set `snli`")
    assert re.findall(r"^### (.+)$", markdown, re.M) == [
        "Summary", "Metrics side by side", "Significance", "Calibration and the label prior", "Explanations",
        "Accuracy by slice", "Training seeds", "Corrected by the adapter", "Regressed by the adapter", "Still wrong",
        "Label bias", "Per-class recall and F1", "Prediction transitions"]   # no phenomena: no phenomenon table
    assert "accuracy rose from 56.7% (base) to 83.3% (adapter)" in markdown
    assert "corrected 10 rows and regressed 2" in markdown and "p = 0.0386" in markdown
    assert markdown.count("| c0") == 2 and "| 33.3% / 60.0%  |" in markdown   # 18 of 30 gold labels are entailment
    assert "The base model is over-confident: mean confidence in its prediction 80.0% vs its accuracy, a gap of +23.3" in markdown
    assert "The adapter is neither over- nor under-confident beyond noise" in markdown
    assert "the base model goes from 56.7% to 56.7% by recalibrating its label prior alone (+0.0 points" in markdown


def test_the_metrics_table_says_whether_eval_predictions_could_move_with_batch_size():
    assert _row_invariance({"compute_dtype": "float32"}) == "n/a"   # metrics from before the probe
    assert _row_invariance({"row_invariant_matmuls": True}) == "yes"
    assert _row_invariance({"row_invariant_matmuls": False}) == "NO: predictions may move with eval.batch_size"


def test_the_machine_is_summarized_in_one_line():
    machine = {"cpu": "Test CPU", "cpu_flags": ["avx2", "fma"], "gpu": None, "threads": 2, "torch": "2.13.0",
               "transformers": "5.0.0", "peft": None, "bitsandbytes": "0.50.0"}
    assert machine_summary(machine) == ("Test CPU (avx2 fma), 2 threads; torch 2.13.0, transformers 5.0.0, "
                                        "bitsandbytes 0.50.0")
    assert machine_summary({**machine, "gpu": "H100", "cpu_flags": []}).startswith(
        "Test CPU (no listed ISA flags), GPU H100, 2 threads")
    assert machine_summary(None) == "n/a"


def test_compare_and_report_stages_write_every_output(tmp_path):
    write_project(tmp_path)
    for name in ("snli", "hard"):
        run_stage(tmp_path, "seeds.py", name)
    done = run_stage(tmp_path, "compare.py", "snli")
    assert "accuracy rose from 56.7% (base) to 83.3% (adapter)" in done.stdout
    run_stage(tmp_path, "compare.py", "hard")
    saved = json.loads((tmp_path / "metrics/eval/snli/compare.json").read_text())
    assert saved["eval_set"] == "snli" and saved["corrected"] == 10
    assert saved["mcnemar_p_value"] == pytest.approx(0.0386, abs=1e-4)
    assert "per_class" not in saved and saved["transitions"]["neutral->contradiction"] == 13
    transitions = json.loads((tmp_path / "reports/plots/snli/transitions.json").read_text())
    assert len(transitions) == 30 and transitions[0] == {"base": "neutral", "adapter": "contradiction"}
    assert saved["slices"]["artifact_easy"]["rows"] == 15 and saved["hypothesis_only_accuracy"] == 0.5
    plot = json.loads((tmp_path / "reports/plots/snli/slices.json").read_text())
    assert plot[:2] == [{"slice": "gold=contradiction", "model": "base", "accuracy": 0.0},
                        {"slice": "gold=contradiction", "model": "adapter", "accuracy": 1.0}]
    bars = filled_template("grouped_bars", plot, "accuracy", "slice")
    assert (bars["encoding"]["x"]["field"], bars["encoding"]["y"]["field"]) == ("accuracy", "slice")
    assert bars["encoding"]["yOffset"]["field"] == "series"
    reliability = json.loads((tmp_path / "reports/plots/snli/reliability.json").read_text())
    assert {(r["model"], r["confidence"], r["rows"]) for r in reliability} == {("base", 0.8, 30), ("adapter", 0.8, 30)}
    line = filled_template("reliability", reliability, "confidence", "accuracy")["layer"][1]["encoding"]
    assert (line["x"]["field"], line["y"]["field"]) == ("confidence", "accuracy")
    done = run_stage(tmp_path, "report.py")
    report = (tmp_path / "reports/comparison.md").read_text()
    assert re.findall(r"^## (.+)$", report, re.M) == ["Across evaluation sets", "Fine-tuning",
                                                      "Evaluation set `snli`", "Evaluation set `hard`"]
    assert re.search(r"\| `hard` \|\s+30 \|\s+76.7%\s+\|", report), report[:1500]   # 23 of 30 gold: entailment
    assert "improved accuracy significantly on `snli`" in done.stdout
    assert "not statistically significant on `hard`" in done.stdout


def filled_template(name: str, plot: list[dict], x: str, y: str) -> dict:
    """dvc.yaml's slice and reliability plots use custom templates in .dvc/plots; fill one as `dvc plots show`
    does, and check no anchor is left."""
    from dvc_render import VegaRenderer
    from dvc_render.vega_templates import get_template

    template = get_template(name, str(REPO / ".dvc" / "plots"))
    spec = VegaRenderer([{**row, "rev": "workspace"} for row in plot], name, template=template, x=x,
                        y=y).get_filled_template()
    assert "<DVC_METRIC" not in json.dumps(spec) and len(spec["data"]["values"]) == len(plot)
    return spec


def stats(delta: float, p: float, adapter: float = 0.8, ci_high: float = 0.85, majority: float = 0.5) -> dict:
    """One set's metrics files as the report stage reads them, the verdicts made by the analysis functions."""
    models = {"adapter": {"accuracy": adapter, "accuracy_ci_low": adapter - 0.05, "accuracy_ci_high": ci_high},
              "base": {"majority_class_accuracy": majority}}
    return {"compare": {"accuracy_delta": delta, "mcnemar_p_value": p, "ci_confidence": 0.95,
                        "significant": significant(p, 0.95),
                        "adapter_vs_majority_class": versus_majority_class(models["adapter"], models["base"])},
            **models}


def test_significance_and_the_majority_class_verdicts():
    assert significant(0.0499, 0.95) and not significant(0.05, 0.95) and significant(0.009, 0.99)
    assert not significant(0.011, 0.99)
    base = {"majority_class_accuracy": 0.45}
    verdict = lambda accuracy, ci_high: versus_majority_class({"accuracy": accuracy, "accuracy_ci_high": ci_high}, base)
    assert (verdict(0.45, 0.5), verdict(0.44, 0.45), verdict(0.44, 0.4499)) == ("above", "not above",
                                                                                 "significantly below")


def test_headline_never_claims_a_general_improvement_unless_every_set_improved():
    both = headline({"a": stats(0.3, 1e-9), "b": stats(0.05, 0.01)})
    assert both.startswith("The adapter improved accuracy significantly on every evaluation set")
    assert "majority" not in both
    mixed = headline({"a": stats(0.3, 1e-9), "b": stats(-0.007, 0.8), "c": stats(-0.1, 0.001)})
    assert "every" not in mixed and "did not improve the task in general" in mixed
    assert "significantly on `a` (+30.0 points" in mixed
    assert "significantly worse on `c` (-10.0 points" in mixed
    assert "not statistically significant on `b` (-0.7 points, p = 0.8)" in mixed


def test_headline_says_when_the_adapter_does_not_beat_the_majority_class():
    text = headline({"snli": stats(0.35, 1e-50), "challenge": stats(0.139, 1e-6, adapter=0.4025, ci_high=0.4369,
                                                                         majority=0.45),
                     "close": stats(0.1, 1e-3, adapter=0.44, ci_high=0.48, majority=0.45)})
    assert "On `challenge` the adapter's accuracy (40.2%, CI [35.2%, 43.7%]) is significantly below always " \
           "answering the majority class (45.0%)." in text
    assert "On `close` the adapter's accuracy (44.0%, CI [39.0%, 48.0%]) is not above" in text
    assert "`snli` the adapter" not in text


def test_accuracy_by_phenomenon_and_gold_label():
    """Planted: phenomenon A's entailed half is corrected (10 rows), its neutral half regressed (10 rows);
    phenomenon B does not move. By phenomenon A nets to zero; split by gold label, both halves stand out:
    McNemar p = 2 * 0.5**10 for each A half and 1 for each B half, so BH over the 4 groups gives
    q = 4/2 * 2 * 0.5**10 = 0.00390625 for both A halves and 1 for both B halves."""
    base, adapter = [], []
    plan = [("A", "entailment", False, True)] * 10 + [("A", "neutral", True, False)] * 10 + \
           [("B", "entailment", True, True)] * 6 + [("B", "neutral", False, False)] * 4
    for i, (phenomenon, gold, before, after) in enumerate(plan):
        wrong = "contradiction"
        base.append({**prediction(f"r{i:02d}", gold, gold if before else wrong), "phenomenon": phenomenon})
        adapter.append({**prediction(f"r{i:02d}", gold, gold if after else wrong), "phenomenon": phenomenon})
    cfg = parse_config({"report": {"bootstrap_samples": 200}})
    comparison = compare(cfg, "snli", join_predictions(base, adapter), model_metrics(cfg, base),
                         model_metrics(cfg, adapter))
    by_phenomenon = {r["group"]: r for r in comparison.by_phenomenon}
    assert by_phenomenon["A"]["accuracy_delta"] == 0 and by_phenomenon["A"]["p_value"] == pytest.approx(1.0)
    split = {r["group"]: r for r in comparison.by_phenomenon_and_gold}
    assert set(split) == {"A / entailment", "A / neutral", "B / entailment", "B / neutral"}
    assert (split["A / entailment"]["corrected"], split["A / entailment"]["accuracy_delta"]) == (10, 1.0)
    assert (split["A / neutral"]["regressed"], split["A / neutral"]["accuracy_delta"]) == (10, -1.0)
    assert split["A / neutral"]["p_value"] == pytest.approx(2 * 0.5**10, rel=1e-9)
    assert split["A / entailment"]["p_value"] == pytest.approx(2 * 0.5**10, rel=1e-9)
    assert {group: row["q_value"] for group, row in split.items()} == pytest.approx(
        {"A / entailment": 0.00390625, "A / neutral": 0.00390625, "B / entailment": 1.0, "B / neutral": 1.0})
    assert comparison.metrics()["by_phenomenon"]["B"] == {"rows": 10, "base_accuracy": 0.6, "adapter_accuracy": 0.6,
                                                          "accuracy_delta": 0.0, "q_value": 1.0}
    markdown = render(cfg, "snli", base, adapter)
    assert "### Accuracy by phenomenon" in markdown and "| A / neutral " in markdown
