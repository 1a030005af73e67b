"""Slice features by hand-checked rows, their params validation, and the hypothesis-only baseline's two stages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, SNLI, snli_rows

from qlora_diff.analysis.slices import bin_label, describe, overlap_share, row_features, words
from qlora_diff.core.config import parse_config
from qlora_diff.core.errors import ConfigError

CFG = parse_config({})


def test_words_split_the_negative_clitic():
    assert words("The dog isn't sleeping, NOBODY's home.") == ["the", "dog", "is", "n't", "sleeping", "nobody",
                                                               "s", "home"]
    assert words("It doesn\u2019t rain") == ["it", "does", "n't", "rain"]


def test_features_of_a_hand_checked_row():
    row = {"premise": "Two men are playing soccer in a park.", "hypothesis": "Nobody is playing soccer.",
           "label": "contradiction"}
    features = row_features(CFG, row, "hard")
    assert features == {
        "gold": "contradiction", "artifact": "hard",
        "negation_in_hypothesis": "yes", "negation_in_premise": "no",
        "quantifier_in_hypothesis": "no", "quantifier_in_premise": "no",
        "overlap": ">=50%", "full_overlap": "yes",     # content words: playing, soccer ("nobody" is a stop word)
        "hypothesis_length": "<6 words", "premise_length": "<10 words",
    }
    challenge = {**row, "hypothesis": "Some women are sleeping.", "phenomenon": "quantifier"}
    features = row_features(CFG, challenge, "easy")
    assert (features["quantifier_in_hypothesis"], features["overlap"], features["full_overlap"]) == ("yes", "<50%", "no")
    assert features["phenomenon"] == "quantifier"


def test_overlap_and_bins():
    assert overlap_share(["a", "dog", "runs"], ["the", "dog", "sleeps"], frozenset({"the", "a"})) == 0.5
    assert overlap_share(["x"], ["the"], frozenset({"the"})) == 1.0  # no content words: vacuously full
    edges = [6, 10]
    assert [bin_label(n, edges, str) for n in (5, 6, 9, 10, 30)] == ["<6", "6 to <10", "6 to <10", ">=10", ">=10"]


def test_a_user_word_list_adds_two_slices():
    cfg = parse_config({"slices": {"word_lists": {"colour": ["red", "blue"]}}})
    features = row_features(cfg, {"premise": "A red car.", "hypothesis": "A car.", "label": "entailment"}, "easy")
    assert (features["colour_in_premise"], features["colour_in_hypothesis"]) == ("yes", "no")
    assert "negation_in_hypothesis" not in features
    assert describe("colour_in_premise", "yes", cfg) == "a colour word in the premise"


@pytest.mark.parametrize("slices, message", [
    ({"word_lists": {"Bad Name": ["x"]}}, r"'slices.word_lists.Bad Name'"),
    ({"word_lists": {"negation": ["Not"]}}, r"'slices.word_lists.negation' has \['Not'\]"),
    ({"word_lists": {"negation": [False]}}, r"'slices.word_lists' is .*allowed: a mapping of strings to a list"),
    ({"length_bins": {"hypothesis": [10, 6], "premise": [10]}},
     r"'slices.length_bins.hypothesis' is \[10, 6\]; allowed: .*increasing"),
    ({"length_bins": {"hypothesis": [6]}}, r"'slices.length_bins' has no entry for \['premise'\]"),
    ({"overlap_bins": [0.5, 1.5]}, r"'slices.overlap_bins' is \[0.5, 1.5\]; allowed: shares in \(0, 1\]"),
    ({"q_threshold": 0}, r"'slices.q_threshold' is 0"),
])
def test_bad_slice_params_name_the_key(slices, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"slices": slices})


def run(project, *args: str, hash_seed: str = "0") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(REPO / "stages" / args[0]), *args[1:]], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_hypothesis_baseline_and_slices_stages(tmp_path):
    """Fit on 600 SNLI train rows, tag 200 test rows: metrics with CIs, every row tagged, and a pickle that is
    byte-identical across hash seeds (else DVC would see a changed output on every run)."""
    (tmp_path / "data/prepared/eval").mkdir(parents=True)
    shutil.copytree(SNLI, tmp_path / "data/snli")
    train = [{**r, "id": f"train-{i}"} for i, r in enumerate(snli_rows("train", 700)) if r["label"] != "-"][:600]
    test = [{**r, "id": f"snli-{i}"} for i, r in enumerate(snli_rows("test", 220)) if r["label"] != "-"][:200]
    for path, rows in (("data/prepared/train.jsonl", train), ("data/prepared/eval/snli.jsonl", test)):
        (tmp_path / path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval_sets": {"snli": {"source": "bundled", "size": 200}}}))
    run(tmp_path, "hypothesis_baseline.py", hash_seed="1")
    first = (tmp_path / "models/hypothesis_baseline.pkl").read_bytes()
    run(tmp_path, "hypothesis_baseline.py", hash_seed="2")
    assert (tmp_path / "models/hypothesis_baseline.pkl").read_bytes() == first
    assert json.loads((tmp_path / "metrics/hypothesis_baseline.json").read_text())["rows"] == 600
    done = run(tmp_path, "slices.py", "snli")
    metrics = json.loads((tmp_path / "metrics/eval/snli/slices.json").read_text())
    assert metrics["examples"] == 200 and metrics["accuracy_ci_low"] < metrics["accuracy"] < metrics["accuracy_ci_high"]
    assert metrics["accuracy"] > metrics["majority_class_accuracy"]  # hypotheses alone carry signal on SNLI
    assert f"hypothesis-only accuracy {metrics['accuracy']:.1%}" in done.stdout
    tagged = [json.loads(line) for line in (tmp_path / "reports/predictions/snli/slices.jsonl").read_text().splitlines()]
    assert [t["id"] for t in tagged] == [r["id"] for r in test]
    easy = sum(t["features"]["artifact"] == "easy" for t in tagged)
    assert easy == metrics["correct"]
    assert all((t["features"]["artifact"] == "easy") == (t["hypothesis_only_prediction"] == r["label"])
               for t, r in zip(tagged, test))
