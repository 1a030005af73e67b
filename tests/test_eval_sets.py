"""Several evaluation sets: a 2-way set scored by collapsing the model's 3-way answer, label-map errors before any
model loads, and per-set outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import prepare_all, snli_rows, tiny_params

from qlora_diff.analysis.metrics import classification_metrics
from qlora_diff.core.config import load_config, parse_config
from qlora_diff.core.errors import InputError
from qlora_diff.model.evaluate import _prediction_rows, evaluate

TWO_WAY = {"source": "local", "path": "data/eval_sets/rte_like.jsonl", "size": "all",
           "label_map": {"entailment": "entailment", "not_entailment": ["neutral", "contradiction"]}}


def test_two_way_collapse_on_a_hand_checked_example():
    """Four rows, model log-probs over (entailment, neutral, contradiction); by hand:
    row 1 argmax entailment -> entailment, gold entailment: right
    row 2 argmax contradiction -> not_entailment, gold not_entailment: right
    row 3 argmax neutral -> not_entailment, gold not_entailment: right (a 3-way miss would not matter)
    row 4 argmax neutral -> not_entailment, gold entailment: wrong
    so accuracy 3/4 in the set's label space."""
    cfg = parse_config({"eval_sets": {"rte": TWO_WAY}})
    rows = [{"id": str(i), "premise": "p", "hypothesis": "h", "label": gold}
            for i, gold in enumerate(["entailment", "not_entailment", "not_entailment", "entailment"])]
    logprobs = [[-0.1, -3.0, -4.0], [-3.0, -2.0, -0.2], [-2.0, -0.3, -2.5], [-1.5, -0.5, -2.0]]
    predicted = _prediction_rows(cfg, "rte", rows, logprobs, None, np.ones(3) / 3)
    assert [r["model_prediction"] for r in predicted] == ["entailment", "contradiction", "neutral", "neutral"]
    # a flat content-free prior leaves contextual calibration equal to the raw argmax, collapsed the same way
    assert [r["predictions_by_rule"]["contextual"] for r in predicted] == [r["prediction"] for r in predicted]
    assert [r["prediction"] for r in predicted] == ["entailment", "not_entailment", "not_entailment", "not_entailment"]
    assert [r["correct"] for r in predicted] == [True, True, True, False]
    metrics = classification_metrics([r["gold"] for r in predicted], [r["prediction"] for r in predicted],
                                     cfg.eval_sets["rte"].labels(cfg.data.labels), 0.95)
    assert metrics["accuracy"] == 0.75 and metrics["chance_accuracy"] == 0.5
    assert set(metrics["per_class"]) == {"entailment", "not_entailment"}
    assert metrics["per_class"]["entailment"]["recall"] == 0.5


def write_two_way_set(project, labels: list[str]) -> None:
    rows = snli_rows("validation", len(labels))
    (project / "data" / "eval_sets").mkdir(parents=True, exist_ok=True)
    (project / "data" / "eval_sets" / "rte_like.jsonl").write_text("".join(
        json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"], "label": label}) + "\n"
        for r, label in zip(rows, labels)))


def test_two_sets_write_their_own_metrics_in_their_own_label_space(project):
    write_two_way_set(project, ["entailment", "not_entailment"] * 6)
    params = tiny_params(eval_sets={"snli": {"source": "bundled", "size": 12}, "rte_like": TWO_WAY})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_all(project)
    cfg = load_config("params.yaml")
    for name, labels in (("snli", {"entailment", "neutral", "contradiction"}), ("rte_like", {"entailment", "not_entailment"})):
        metrics = evaluate(cfg, name, project / "models/base", None, project / f"data/prepared/eval/{name}.jsonl",
                           project / f"reports/predictions/{name}/base.jsonl", project / f"metrics/eval/{name}/base.json",
                           project / f"reports/plots/{name}/confusion_base.json")
        assert metrics["eval_set"] == name and metrics["examples"] == 12
        assert set(metrics["per_class"]) == labels
        rows = [json.loads(l) for l in (project / f"reports/predictions/{name}/base.jsonl").read_text().splitlines()]
        assert {r["prediction"] for r in rows} <= labels and {r["gold"] for r in rows} <= labels
        assert all(r["model_prediction"] in cfg.data.labels for r in rows)
    data = json.loads((project / "metrics/eval/rte_like/data.json").read_text())
    assert data["label_map"] == {"entailment": "entailment", "neutral": "not_entailment",
                                 "contradiction": "not_entailment"}
    assert data["chance_rate"] == 0.5 and data["eval"]["label_counts"] == {"entailment": 6, "not_entailment": 6}


def test_a_set_label_missing_from_the_label_map_stops_before_any_model_loads(project, monkeypatch):
    write_two_way_set(project, ["entailment", "not_entailment", "contradiction"])
    params = tiny_params(eval_sets={"rte_like": TWO_WAY})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    from qlora_diff.data.prepare import prepare_train
    from qlora_diff.data.prepare_eval import prepare_eval_set
    from qlora_diff.model import modeling

    cfg = load_config("params.yaml")
    prepare_train(cfg, project / "models/base", project / "data/prepared/train.jsonl", project / "metrics/data.json")
    monkeypatch.setattr(modeling, "load_tokenizer", lambda *a: pytest.fail("the tokenizer was loaded"))
    with pytest.raises(InputError, match=r"data/eval_sets/rte_like.jsonl:3: unknown label 'contradiction'; "
                                         r"allowed: \['entailment', 'not_entailment'\] \(the keys of "
                                         r"eval_sets.rte_like.label_map\)"):
        prepare_eval_set(cfg, "rte_like", project / "models/base", project / "data/prepared/train.jsonl",
                         project / "data/prepared/eval/rte_like.jsonl", project / "metrics/eval/rte_like/data.json")
    assert not (project / "data/prepared/eval/rte_like.jsonl").exists()
