"""The seed study grows one config at a time: experiments are local git refs that a clone does not carry, so
`collect` refreshes what this repository has and keeps the committed entries of the rest, and the README block says
which commit and machine each config came from."""

from __future__ import annotations

import json
import sys

from conftest import REPO

from qlora_diff.analysis.runs import SEED_STUDY
from qlora_diff.tools.readme import seed_study

sys.path.insert(0, str(REPO / "benchmarks"))
import seed_study as study_script  # noqa: E402

COMMITTED = json.loads((REPO / SEED_STUDY).read_text(encoding="utf-8"))


def test_collect_keeps_the_committed_configs_it_cannot_see_and_refreshes_the_ones_it_can():
    fresh_default = {**COMMITTED["configs"]["default"], "baseline_commit": "f" * 40}
    merged = study_script.merge(COMMITTED, {"default": fresh_default}, {})
    assert merged["configs"]["default"]["baseline_commit"] == "f" * 40
    assert merged["configs"]["r8"] == COMMITTED["configs"]["r8"]
    assert merged["comparisons"]["r8"] == COMMITTED["comparisons"]["r8"]
    assert [c for c in study_script.CONFIGS if c not in merged["configs"]] == merged["missing"]


def test_collect_without_a_previous_file_reports_every_unseen_config_as_missing():
    merged = study_script.merge({}, {"r8": COMMITTED["configs"]["r8"]}, {})
    assert list(merged["configs"]) == ["r8"] and merged["comparisons"] == {}
    assert merged["missing"] == [c for c in study_script.CONFIGS if c != "r8"]


def test_every_challenger_asks_a_question_against_the_reference():
    assert sorted(study_script.QUESTIONS) == sorted(c for c in study_script.CONFIGS if c != study_script.REFERENCE)


def test_the_block_names_the_commit_and_machine_of_each_config(tmp_path):
    study = json.loads(json.dumps(COMMITTED))
    study["configs"]["r8"]["baseline_commit"] = "abcdef0" + "0" * 33
    study["configs"]["r8"]["machine"] = {"cpu": "Some CPU", "native_bf16": True}
    (tmp_path / SEED_STUDY).parent.mkdir(parents=True)
    (tmp_path / SEED_STUDY).write_text(json.dumps(study), encoding="utf-8")
    block = seed_study(tmp_path)
    assert "`r8`: commit abcdef0; Machine: cpu Some CPU, native_bf16 True." in block
    assert f"`default`: commit {COMMITTED['configs']['default']['baseline_commit'][:7]}; Machine:" in block
    for item in COMMITTED["comparisons"].values():
        assert f"- {item['question']}: {item['sets'][0]['verdict']}" in block
