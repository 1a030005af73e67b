"""Tasks as data: a one-field task through every stage, the hypothesis-only SNLI task by params alone, and NLI's
field names kept in NLI's own modules."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, SNLI, prepare_all, tiny_params
from synthetic import run_stage

from qlora_diff.analysis.hypothesis_baseline import baseline_texts
from qlora_diff.analysis.slices import describe, row_features
from qlora_diff.core import atomic
from qlora_diff.core.config import TASKS, ReportConfig, parse_config
from qlora_diff.core.nli import NLI
from qlora_diff.core.tasks import template_fields

NLI_MODULES = {"src/qlora_diff/core/nli.py", "src/qlora_diff/core/nli_legacy.py", "src/qlora_diff/data/nli_challenge.py"}
PARAMS_BEFORE_TASKS = "fbac06b"   # the last commit whose params.yaml named the NLI fields in its keys
HYPOTHESIS_ONLY = {"task": "text",
                   "prompt": {"system": "Guess how the hypothesis relates to an unseen premise.",
                              "template": "Hypothesis: {hypothesis}\nAnswer entailment, neutral or contradiction."}}


def test_premise_is_named_only_in_the_nli_modules():
    """Every other module reads the task's fields from the config: a pair task or a one-field task needs no edit."""
    sources = [*REPO.glob("src/qlora_diff/**/*.py"), *REPO.glob("src/qlora_diff/**/templates/*"),
               *REPO.glob("stages/*.py")]
    naming = {str(path.relative_to(REPO)) for path in sources if "premise" in path.read_text(encoding="utf-8").lower()}
    assert naming == NLI_MODULES


def test_fields_come_from_the_template_in_order_of_first_use():
    assert template_fields("{b} then {a}, again {b} {{literal}}") == ["b", "a"]
    assert parse_config({}).fields == list(NLI.fields) and parse_config({}).task_spec is NLI
    assert sorted(TASKS) == ["nli", "text"]


def test_the_hypothesis_only_task_is_params_alone_and_keeps_the_challenge_set():
    """SNLI's hypotheses as a one-field task: the bundled data, the default eval sets (the challenge rows have a
    hypothesis too), the hypothesis length bins already in params.yaml."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in HYPOTHESIS_ONLY.items():
        raw[section] = {**raw[section], **values} if isinstance(values, dict) else values
    cfg = parse_config(raw)
    assert cfg.fields == ["hypothesis"] and set(cfg.eval_sets) == {"snli", "challenge"}
    row = {"premise": "A man naps.", "hypothesis": "Nobody is sleeping.", "label": "contradiction"}
    features = row_features(cfg, row, "easy")
    assert list(features) == ["gold", "artifact", "negation_in_hypothesis", "quantifier_in_hypothesis",
                              "hypothesis_length"]
    assert features["negation_in_hypothesis"] == "yes" and features["hypothesis_length"] == "<6 words"
    assert describe("artifact", "easy", cfg) == "an artifact-easy row (the bag-of-words baseline gets it right)"
    assert baseline_texts(cfg, [row]) == ["Nobody is sleeping."]


def test_a_hypothesis_only_project_prepares_rows_without_the_premise(project):
    params = tiny_params(prompt=HYPOTHESIS_ONLY["prompt"], eval_sets={"snli": {"source": "bundled", "size": 24},
                                                                      "challenge": {"source": "challenge"}})
    (project / "params.yaml").write_text(yaml.safe_dump({**params, "task": "text"}))
    prepare_all(project)
    train = atomic.read_jsonl(project / "data/prepared/train.jsonl")
    challenge = atomic.read_jsonl(project / "data/prepared/eval/challenge.jsonl")
    assert set(train[0]) == {"id", "hypothesis", "label", "prompt"}
    assert "phenomenon" in challenge[0] and "premise" not in challenge[0]
    assert all(row["hypothesis"] in row["prompt"] and "Premise" not in row["prompt"] for row in train + challenge)


def test_pairs_of_the_nli_task_and_rows_of_a_text_task_drop_the_same_text_from_training(project):
    """data.holdout_file removes train rows whose every text field equals a held-out row's: the pair for NLI, the
    hypothesis alone for the hypothesis-only task (so more rows go)."""
    removed = {}
    for task, prompt in (("nli", {}), ("text", HYPOTHESIS_ONLY["prompt"])):
        params = {**tiny_params(prompt=prompt, data={"train_size": 48, "holdout_file": "data/snli/train.jsonl"}),
                  "task": task}
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        with pytest.raises(Exception, match="usable rows"):   # every train row is held out: nothing left to sample
            prepare_all(project)
    params = {**tiny_params(prompt=HYPOTHESIS_ONLY["prompt"]), "task": "text"}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_all(project)
    metrics = json.loads((project / "metrics/data.json").read_text())
    removed["text"] = metrics["train_rows_removed_for_holdout_overlap"]
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    prepare_all(project)
    removed["nli"] = json.loads((project / "metrics/data.json").read_text())["train_rows_removed_for_holdout_overlap"]
    test_hypotheses = {row["hypothesis"] for row in atomic.read_jsonl(SNLI / "test.jsonl")}
    train_hypotheses = [row["hypothesis"] for row in atomic.read_jsonl(SNLI / "train.jsonl")
                        if row["label"] not in ("-", "")]
    assert removed["text"] == sum(h in test_hypotheses for h in train_hypotheses) > removed["nli"]


# A one-field task in its own files: the review's words decide the label, so a bag-of-words model can learn it.
GOOD, BAD = ("great", "lovely", "superb", "moving"), ("awful", "dull", "clumsy", "boring")


def reviews(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        words = rng.sample(GOOD if positive else BAD, 2)
        opener = rng.choice(["The film was", "This show is", "Every scene felt", "Not once was the plot"])
        rows.append({"sentence": f"{opener} {words[0]} and {words[1]}.", "sentiment": "pos" if positive else "neg"})
    return rows


def text_task_params(model_dir: Path) -> dict:
    params = tiny_params(
        model={"source": "local", "path": str(model_dir), "save_dtype": "float32"},
        data={"source": "local", "train_file": "data/reviews/train.jsonl", "holdout_file": "",
              "text_columns": {"review": "sentence"}, "label_column": "sentiment", "labels": ["neg", "pos"],
              "train_size": 48},
        prompt={"system": "Say whether the review is negative or positive.",
                "template": "Review: {review}\nAnswer negative or positive.",
                "label_words": {"neg": "negative", "pos": "positive"}},
        slices={"length_bins": {"review": [6, 7]}},
    )
    params["eval_sets"] = {"reviews": {"source": "local", "path": "data/eval_sets/reviews.jsonl", "size": "all",
                                       "text_columns": {"review": "sentence"}, "label_column": "sentiment"}}
    return {**params, "task": "text"}


@pytest.mark.slow
def test_a_one_field_task_runs_every_stage_and_its_reports_show_its_field(tmp_path, tiny_model_dir):
    for path, rows in (("data/reviews/train.jsonl", reviews(60, 1)), ("data/eval_sets/reviews.jsonl", reviews(24, 2))):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_jsonl(tmp_path / path, rows)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(text_task_params(tiny_model_dir)))
    shutil.copytree(REPO / ".dvc" / "plots", tmp_path / ".dvc" / "plots", ignore=shutil.ignore_patterns("*.html"))
    for stage in [("base_model.py",), ("prepare.py",), ("prepare_eval.py", "reviews"), ("hypothesis_baseline.py",),
                  ("slices.py", "reviews"), ("evaluate.py", "base", "reviews"), ("finetune.py",),
                  ("evaluate.py", "adapter", "reviews"), ("seeds.py", "reviews"), ("compare.py", "reviews"),
                  ("report.py",)]:
        run_stage(tmp_path, *stage)
    prediction = atomic.read_jsonl(tmp_path / "reports/predictions/reviews/adapter.jsonl")[0]
    assert prediction["review"].startswith(("The film", "This show", "Every scene", "Not once"))
    assert not {"premise", "hypothesis", "sentence"} & set(prediction)
    features = atomic.read_jsonl(tmp_path / "reports/predictions/reviews/slices.jsonl")[3]["features"]
    assert list(features) == ["gold", "artifact", "negation_in_review", "quantifier_in_review", "review_length"]
    # the eval rows' words decide their labels, and every word is in the train rows: the baseline gets all right
    baseline = json.loads((tmp_path / "metrics/eval/reviews/slices.json").read_text())
    assert baseline["accuracy"] == 1.0
    section = (tmp_path / "reports/eval/reviews.md").read_text()
    assert re.search(r"\| id +\| review +\| gold", section) and "A bag-of-words classifier (TF-IDF" in section
    summary = (tmp_path / "reports/comparison.md").read_text()
    assert re.search(r"\| set +\| +rows \| majority class +\| bag-of-words +\|", summary)
    page = (tmp_path / "reports/comparison.html").read_text()
    assert "<th>id</th><th>review</th><th>gold</th>" in page and 'placeholder="review or id"' in page
    card = (tmp_path / "models/adapter/README.md").read_text()
    assert "# QLoRA adapter for text classification" in card and "snli" not in card


def hydra_overrides(args: list[str]) -> dict:
    """`dvc exp run -S` values as DVC parses them (Hydra's override grammar): key -> value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {override.key_or_group: override.value() for override in OverridesParser.create().parse_overrides(args)}


def test_the_documented_command_is_the_benchmarks_and_makes_the_hypothesis_only_task():
    """docs/tasks.md's `dvc exp run` line, expanded by bash as a user's shell would, sets exactly
    benchmarks/second_task.py's overrides; applied to params.yaml they give the hypothesis-only params."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from second_task import OVERRIDES

    doc = (REPO / "docs" / "tasks.md").read_text(encoding="utf-8")
    command = re.search(r"```bash\n(dvc exp run -n hypothesis-only .*?)\npython", doc, re.S).group(1)
    expanded = subprocess.run(["bash", "-c", command.replace("dvc exp run", "printf '%s\\0'", 1)],
                              capture_output=True, text=True, check=True).stdout.split("\0")[:-1]
    assert expanded[:2] == ["-n", "hypothesis-only"]
    documented = [value for flag, value in zip(expanded[2::2], expanded[3::2]) if flag == "-S"]
    assert documented == OVERRIDES
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in hydra_overrides(OVERRIDES).items():
        *sections, last = key.split(".")
        target = raw
        for section in sections:
            target = target[section]
        target[last] = value
    cfg = parse_config(raw)
    assert cfg.task == "text" and cfg.fields == ["hypothesis"]
    assert cfg.prompt.template == HYPOTHESIS_ONLY["prompt"]["template"]
    assert cfg.prompt.system == HYPOTHESIS_ONLY["prompt"]["system"]


def test_the_share_of_gain_is_the_ratio_of_the_two_gains_with_a_row_bootstrap_ci():
    """benchmarks/second_task.py's gain share against a hand-computed ratio and a plain numpy row bootstrap: the
    default run gains 80 of 200 rows (60 -> 140 right), the other run 40 (60 -> 100), so the share is 0.5."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from second_task import share_of_gain

    n = 200
    right = lambda count: (np.arange(n) < count).astype(float)
    default_base, default_adapter, other_base, other_adapter = right(60), right(140), right(60), right(100)
    result = share_of_gain(default_base, default_adapter, other_base, other_adapter,
                           ReportConfig(bootstrap_samples=4000, seed=1))
    assert result["share"] == 0.5
    rng = np.random.default_rng(7)
    shares = []
    for _ in range(4000):
        rows = rng.integers(0, n, n)
        shares.append((other_adapter[rows].mean() - other_base[rows].mean())
                      / (default_adapter[rows].mean() - default_base[rows].mean()))
    low, high = np.percentile(shares, [2.5, 97.5])
    assert low < 0.5 < high
    assert result["ci"] == pytest.approx([low, high], abs=0.02)


def test_params_from_before_tasks_read_as_todays():
    """A run committed before this version (its params name premise_column and *_length_bins) reads as the same
    config, so `reproduce --against` and `runs` still take it; renamed columns become text_columns."""
    from qlora_diff.core.nli_legacy import upgrade

    old = yaml.safe_load(subprocess.run(["git", "show", f"{PARAMS_BEFORE_TASKS}:params.yaml"], cwd=REPO,
                                        capture_output=True, text=True, check=True).stdout)
    assert old["data"]["premise_column"] == "premise" and "hypothesis_length_bins" in old["slices"]
    current = yaml.safe_load((REPO / "params.yaml").read_text())
    assert parse_config(upgrade(old)) == parse_config(current) == parse_config(upgrade(current))
    renamed = upgrade({"eval_sets": {"x": {"premise_column": "sentence1", "hypothesis_column": "hypothesis"}},
                       "slices": {"premise_length_bins": [5]}})
    assert renamed == {"eval_sets": {"x": {"text_columns": {"premise": "sentence1"}}},
                       "slices": {"length_bins": {"hypothesis": [6, 10], "premise": [5]}}}
