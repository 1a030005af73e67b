"""The seed study grows one config at a time: experiments are local git refs that a clone does not carry, so
`collect` refreshes what this repository has and keeps the committed entries of the rest, and the README block says
which commit and machine each config came from; a comparison made from experiments that are no longer the configs'
entries is reported as stale."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
from conftest import REPO, seed_study_block

from qlora_diff.analysis.margin import BETTER, EQUIVALENT
from qlora_diff.analysis.runs import SEED_STUDY, Run
from qlora_diff.core.config import load_config

sys.path.insert(0, str(REPO / "benchmarks"))
import seed_study as study_script  # noqa: E402

COMMITTED = json.loads((REPO / SEED_STUDY).read_text(encoding="utf-8"))


def _study(reference_commit: str, challenger_commit: str) -> dict:
    """The committed study with its r8 comparison current: made from the default and r8 entries' experiments."""
    study = json.loads(json.dumps(COMMITTED))
    study["configs"]["default"]["baseline_commit"] = reference_commit
    study["configs"]["r8"]["baseline_commit"] = challenger_commit
    r8 = {**(study["comparisons"].get("r8") or study["stale"]["r8"]),
          "baseline_commits": {"default": reference_commit, "r8": challenger_commit}}
    study["comparisons"], study["stale"] = {"r8": r8}, {}
    return study


def test_collect_keeps_the_committed_configs_it_cannot_see_and_refreshes_the_ones_it_can():
    previous = _study("a" * 40, "b" * 40)
    fresh_r8 = {**previous["configs"]["r8"], "machine": {"cpu": "refreshed"}}
    merged = study_script.merge(previous, {"r8": fresh_r8}, {})
    assert merged["configs"]["r8"]["machine"] == {"cpu": "refreshed"}
    assert merged["configs"]["default"] == previous["configs"]["default"]
    assert merged["comparisons"]["r8"] == previous["comparisons"]["r8"] and merged["stale"] == {}
    assert [c for c in study_script.CONFIGS if c not in merged["configs"]] == merged["missing"]


def test_a_kept_comparison_goes_stale_when_its_reference_is_rerun_and_current_when_recomputed():
    previous = _study("a" * 40, "b" * 40)
    rerun_default = {**previous["configs"]["default"], "baseline_commit": "f" * 40}
    merged = study_script.merge(previous, {"default": rerun_default}, {})
    assert "r8" not in merged["comparisons"] and merged["stale"]["r8"] == previous["comparisons"]["r8"]
    recomputed = {**previous["comparisons"]["r8"], "baseline_commits": {"default": "f" * 40, "r8": "b" * 40}}
    again = study_script.merge(merged, {}, {"r8": recomputed})
    assert again["comparisons"]["r8"] == recomputed and again["stale"] == {}


def test_a_comparison_without_recorded_commits_is_not_taken_as_current():
    previous = _study("a" * 40, "b" * 40)
    del previous["comparisons"]["r8"]["baseline_commits"]
    assert list(study_script.merge(previous, {}, {})["stale"]) == ["r8"]


def test_collect_without_a_previous_file_reports_every_unseen_config_as_missing():
    merged = study_script.merge({}, {"r8": COMMITTED["configs"]["r8"]}, {})
    assert list(merged["configs"]) == ["r8"] and merged["comparisons"] == {} == merged["stale"]
    assert merged["missing"] == [c for c in study_script.CONFIGS if c != "r8"]


def test_every_challenger_asks_a_question_against_the_reference():
    assert sorted(study_script.QUESTIONS) == sorted(c for c in study_script.CONFIGS if c != study_script.REFERENCE)


def test_the_block_names_the_commit_and_machine_of_each_config(tmp_path):
    study = _study(COMMITTED["configs"]["default"]["baseline_commit"], "abcdef0" + "0" * 33)
    study["configs"]["r8"]["machine"] = {"cpu": "Some CPU", "native_bf16": True}
    block = seed_study_block(tmp_path, study)
    assert "`r8`: commit abcdef0; Machine: cpu Some CPU, native_bf16 True." in block
    default_source = [line for line in block.splitlines()
                      if f": commit {COMMITTED['configs']['default']['baseline_commit'][:7]}; Machine:" in line]
    assert len(default_source) == 1 and default_source[0].startswith("`default`")   # configs of one source share a line
    for each in study["comparisons"]["r8"]["sets"]:
        assert f"- {study['comparisons']['r8']['question']}: {each['verdict']}" in block


def test_the_block_labels_a_stale_comparison_with_its_commits_and_how_to_refresh_it(tmp_path):
    merged = study_script.merge(_study("a" * 40, "b" * 40),
                                {"default": {**COMMITTED["configs"]["default"], "baseline_commit": "c" * 40}}, {})
    block = seed_study_block(tmp_path, merged)
    verdict = merged["stale"]["r8"]["sets"][0]["verdict"]
    assert (f"- r=8 against r=16: stale, made from experiments at `default` aaaaaaa, `r8` bbbbbbb, no longer the "
            f"study's entries (rerun `python benchmarks/seed_study.py run --only r8`); it said then: {verdict}") in block
    assert f"- r=8 against r=16: {verdict}" not in block


def test_the_block_names_the_label_shares_a_challenger_moved_beyond_the_noise(tmp_path):
    study = _study(COMMITTED["configs"]["default"]["baseline_commit"], "b" * 40)
    shift = {"set": "snli", "label": "neutral", "share_a": 0.25, "share_b": 0.5, "ci": [0.1, 0.4],
             "confidence": 0.9917, "beyond_noise": True}
    study["comparisons"]["r8"]["label_shifts"] = [shift, {**shift, "label": "entailment", "share_b": 0.26,
                                                           "ci": [-0.1, 0.12], "beyond_noise": False}]
    block = seed_study_block(tmp_path, study)
    assert ("- r=8 against r=16: predicted-label shares, `r8` against the reference (means over seeds; CIs over "
            "seeds and rows at 99.2%, Bonferroni over 2 set x label tests): `snli` neutral 25.0% -> 50.0% (+25.0 "
            "[+10.0, +40.0]) beyond the seed noise; the other 1 within it.") in block
    shift["beyond_noise"] = False
    assert "tests): every share within the seed noise." in seed_study_block(tmp_path, study)


LABELS = ("entailment", "neutral", "contradiction")


def _replicates(accuracies: list[float], rows: int = 400, seed: int = 0) -> dict[str, dict[int, list[dict]]]:
    """One set, one seed per accuracy: each row right with that probability, else a wrong label."""
    rng = np.random.default_rng(seed)
    gold = [LABELS[i % 3] for i in range(rows)]
    out = {}
    for k, accuracy in enumerate(accuracies):
        right = rng.random(rows) < accuracy
        out[42 + k] = [{"id": f"r{i}", "gold": g, "prediction": g if ok else LABELS[(LABELS.index(g) + 1) % 3],
                        "correct": bool(ok)} for i, (g, ok) in enumerate(zip(gold, right))]
    return {"snli": out}


MACHINE = {"cpu": "Some CPU", "cpu_flags": ["avx2"], "gpu": None, "threads": 2, "torch": "2.13.0+cpu"}


def _entry(replicates: dict, commit: str) -> dict:
    return {"baseline_commit": commit, "finetune_seconds": 600.0, "sets": {}, "machine": MACHINE,
            "tables": study_script.tables(Run(replicates=replicates))}


def test_the_compact_tables_give_back_every_row_of_every_seed():
    replicates = _replicates([0.6, 0.7, 0.8])
    assert study_script.table_run(_entry(replicates, "a" * 40)).replicates == replicates
    table = study_script.tables(Run(replicates=replicates))["snli"]
    assert table["labels"] == sorted(LABELS) and len(table["predictions"]["43"]) == 400


def test_compare_recomputes_the_verdicts_from_the_committed_tables_with_the_margin_asked():
    cfg = load_config(REPO / "params.yaml")
    same = _replicates([0.70, 0.71, 0.69, 0.70, 0.70], rows=2000)
    study = {"configs": {"default": _entry(same, "a" * 40), "r8": _entry(same, "b" * 40),
                         "bf16": {"baseline_commit": "c" * 40, "sets": {}}},   # an entry from before the tables
             "comparisons": {"bf16": {"question": "kept", "baseline_commits": {"default": "a" * 40, "bf16": "c" * 40},
                                      "sets": []}}}
    # The same predictions on both sides: a difference of exactly 0, and a 3-point margin far outside the CI.
    compared = study_script.compare(study, cfg)
    r8 = compared["comparisons"]["r8"]
    assert r8["sets"][0]["delta"] == 0 and r8["sets"][0]["margin_verdict"] == EQUIVALENT and r8["margin"] == 3.0
    assert compared["comparisons"]["bf16"]["question"] == "kept" and "train2000" in compared["missing"]
    # A challenger 20 points better on every seed is better, whatever the margin.
    study["configs"]["r8"] = _entry(_replicates([0.9, 0.9, 0.91], rows=2000, seed=1), "b" * 40)
    tight = replace(cfg, report=replace(cfg.report, equivalence_margin=0.5))
    better = study_script.compare(study, tight)["comparisons"]["r8"]
    assert better["sets"][0]["margin_verdict"] == BETTER and better["margin"] == 0.5
    assert better["sets"][0]["delta"] > 0.15


def test_run_skips_the_configs_collected_at_this_commit_unless_forced(monkeypatch):
    ran = []
    study = {"configs": {"default": {"baseline_commit": "h" * 40, "tables": {}},
                         "r8": {"baseline_commit": "o" * 40, "tables": {}},      # an older commit: rerun
                         "bf16": {"baseline_commit": "h" * 40}}}                 # no tables: rerun
    monkeypatch.setattr(study_script, "_read_study", lambda: study)
    monkeypatch.setattr(study_script, "head_commit", lambda: "h" * 40)
    monkeypatch.setattr(study_script, "bf16_native", lambda device: True)
    monkeypatch.setattr(study_script.subprocess, "run", lambda args, **_: ran.append(args[args.index("-n") + 1]))
    study_script.run(list(study_script.CONFIGS))
    assert ran == ["seed-study-r8", "seed-study-bf16", "seed-study-train2000"]
    ran.clear()
    study_script.run(["default"], force=True)
    assert ran == ["seed-study-default"]


def test_run_skips_the_bf16_config_where_bf16_is_emulated_unless_forced(monkeypatch, capsys):
    """On a machine without native bf16 the bf16 config would run several times slower than float32 and price
    nothing a user would choose: `run` says so and runs the others; --force runs it anyway."""
    ran = []
    monkeypatch.setattr(study_script, "_read_study", lambda: {})
    monkeypatch.setattr(study_script, "bf16_native", lambda device: False)
    monkeypatch.setattr(study_script.subprocess, "run", lambda args, **_: ran.append(args[args.index("-n") + 1]))
    study_script.run(["bf16", "train2000"])
    assert ran == ["seed-study-train2000"]
    assert "bf16: skipped" in capsys.readouterr().out
    ran.clear()
    study_script.run(["bf16"], force=True)
    assert ran == ["seed-study-bf16"]


def test_the_price_list_gives_each_knob_its_cost_against_the_default_and_its_verdict(tmp_path):
    study = _study(COMMITTED["configs"]["default"]["baseline_commit"], "b" * 40)
    study["configs"]["default"].update(finetune_seconds=800.0, eval_seconds=200.0)
    study["configs"]["r8"].update(finetune_seconds=600.0, eval_seconds=150.0, machine=study["configs"]["default"][
        "machine"])
    study["comparisons"]["r8"].update(margin=3.0, sets=[{**study["comparisons"]["r8"]["sets"][0], "delta": -0.012,
                                                         "ci": [-0.021, -0.004], "margin_verdict": "worse",
                                                         "mdd": 0.0153, "seeds_per_side": None}],
                                      timing=study_script.timing("r8", study["configs"]))
    block = seed_study_block(tmp_path, study)
    header = next(line for line in block.splitlines() if "verdict (±3 points)" in line)
    assert [cell.strip() for cell in header.strip("|").split("|")][2:4] == [
        "fine-tune, s (vs default)", "evaluation, s (vs default)"]
    row = next(line for line in block.splitlines() if line.startswith("| `r8`") and "r=8 against r=16" in line)
    assert [cell.strip() for cell in row.strip("|").split("|")][2:9] == [
        "600 (0.75x)", "150 (0.75x)", f"`{study['comparisons']['r8']['sets'][0]['set']}`", "-1.2 [-2.1, -0.4]",
        "worse", "1.5", "more than 50"]   # no seed count up to margin.MAX_SEEDS would settle it
    assert "timed against the committed run" not in block


def test_a_challenger_from_another_machine_is_timed_against_the_committed_run_made_on_its_machine():
    """The default config's seeds ran on one machine, the challenger on another: their ratio would price the
    machine. The challenger is timed against the committed run recorded on its own machine, or not at all."""
    configs = {"default": {"machine": MACHINE, "finetune_seconds": 600.0, "eval_seconds": 180.0},
               "bf16": {"machine": {**MACHINE, "cpu_flags": ["avx512_bf16"]}, "finetune_seconds": 300.0,
                        "eval_seconds": 60.0}}
    assert study_script.timing("bf16", configs) is None
    configs["bf16"]["committed_run_timing"] = {"commit": "c" * 40, "finetune_seconds": 400.0, "eval_seconds": 120.0}
    assert study_script.timing("bf16", configs) == {"committed_run": "c" * 40, "finetune_seconds": [300.0, 400.0],
                                                    "eval_seconds": [60.0, 120.0]}
    configs["bf16"]["machine"] = {**MACHINE, "torch": "another build"}   # versions aside, the same machine
    assert study_script.timing("bf16", configs) == {"committed_run": None, "finetune_seconds": [300.0, 600.0],
                                                    "eval_seconds": [60.0, 180.0]}


def test_the_price_list_names_a_committed_run_reference_and_a_missing_one(tmp_path):
    study = _study(COMMITTED["configs"]["default"]["baseline_commit"], "b" * 40)
    study["comparisons"]["r8"].update(margin=3.0, sets=[{**study["comparisons"]["r8"]["sets"][0],
                                                         "margin_verdict": "inconclusive", "mdd": 0.05,
                                                         "seeds_per_side": 9}],
                                      timing={"committed_run": "c" * 40, "finetune_seconds": [300.0, 400.0],
                                              "eval_seconds": [60.0, 120.0]})
    block = seed_study_block(tmp_path, study)
    row = next(line for line in block.splitlines() if line.startswith("| `r8`") and "r=8 against r=16" in line)
    assert [cell.strip() for cell in row.strip("|").split("|")][2:4] == ["300 (0.75x)", "60 (0.50x)"]
    assert ("`r8` is timed against the committed run of commit ccccccc on the same machine (fine-tune 400 s, "
            "evaluation 120 s)") in block
    study["comparisons"]["r8"]["timing"] = None
    row = next(line for line in seed_study_block(tmp_path, study).splitlines() if line.startswith("| `r8`")
               and "r=8 against r=16" in line)
    assert [cell.strip() for cell in row.strip("|").split("|")][2:4] == ["no default timed on its machine"] * 2


def test_the_committed_run_times_a_challenger_only_when_this_machine_made_it(tmp_path, monkeypatch):
    from qlora_diff.core import paths

    here = {**MACHINE, "cpu_flags": ["avx512_bf16"]}
    monkeypatch.setattr(study_script, "REPO", tmp_path)
    monkeypatch.setattr(study_script, "machine", lambda: here)
    monkeypatch.setattr(study_script, "head_commit", lambda: "h" * 40)
    files = {paths.FINETUNE_METRICS: 500.0, paths.eval_metrics("snli", "adapter"): 90.0,
             paths.eval_metrics("challenge", "adapter"): 30.0}
    for path, seconds in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps({"seconds": seconds, "machine": here}), encoding="utf-8")
    assert study_script.committed_run_timing(["snli", "challenge"]) == {
        "commit": "h" * 40, "finetune_seconds": 500.0, "eval_seconds": 120.0}
    (tmp_path / paths.FINETUNE_METRICS).write_text(json.dumps({"seconds": 500.0, "machine": MACHINE}))
    assert study_script.committed_run_timing(["snli", "challenge"]) is None


def _lock(src_md5: str, data_md5: str, stage_name: str = "finetune") -> str:
    """A dvc.lock with one stage: a code dependency, a data dependency and a params entry."""
    return json.dumps({"schema": "2.0", "stages": {stage_name: {
        "cmd": "python stages/finetune.py",
        "deps": [{"path": "src/qlora_diff/core/config.py", "hash": "md5", "md5": src_md5, "size": 1},
                 {"path": "stages/finetune.py", "hash": "md5", "md5": "f" * 32, "size": 1},
                 {"path": "data/prepared/train.jsonl", "hash": "md5", "md5": data_md5, "size": 1}],
        "params": {"params.yaml": {"lora.r": 16}}}}})


def test_the_pipeline_code_fingerprint_follows_the_code_and_nothing_else():
    reference = study_script.pipeline_code(_lock("a" * 32, "b" * 32))
    assert study_script.pipeline_code(_lock("a" * 32, "c" * 32)) == reference   # other data: same code
    assert study_script.pipeline_code(_lock("a" * 32, "b" * 32, "finetune_seed@1")) == reference
    assert study_script.pipeline_code(_lock("d" * 32, "b" * 32)) != reference   # a source file changed


def test_the_block_says_whether_configs_from_several_commits_ran_the_same_code(tmp_path):
    study = _study("a" * 40, "b" * 40)
    study["configs"] = {config: study["configs"][config] for config in ("default", "r8")}
    for entry in study["configs"].values():
        entry["pipeline_code"] = "123456789abc"
    assert "Every config ran the same pipeline code" in seed_study_block(tmp_path, study)
    study["configs"]["r8"]["pipeline_code"] = "cba987654321"
    block = seed_study_block(tmp_path, study)
    assert "**The configs ran different pipeline code**" in block and "`r8` code cba987654321" in block
    assert "Every config ran the same pipeline code" not in block
    del study["configs"]["r8"]["pipeline_code"]   # an entry collected before the fingerprint: no claim either way
    assert "pipeline code" not in seed_study_block(tmp_path, study)
