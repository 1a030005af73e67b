"""End to end: the real pipeline (`dvc repro`) on the embedded SmolLM2-135M with tiny params, in a temp copy.

Also the experiment workflow: `dvc exp run -S`, `dvc exp show`, `dvc metrics diff`, and a local DVC remote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_params

from qlora_diff.analysis.margin import decide, sentence

pytestmark = pytest.mark.slow
IGNORED = {".venv", ".git", "models", "checkpoints", "dvclive", ".pytest_cache", "__pycache__", "prepared",
           "cache", "tmp", "metrics", "reports", "dvc.lock"}
VENV = Path(sys.prefix)  # the environment `make setup` built (.venv)
ACTIVATE = "source .venv/bin/activate"  # what the README tells a user to run after the setup commands


def user_environment() -> dict[str, str]:
    """The environment a user's new shell has: the venv's bin directory is *not* on PATH until activated."""
    bin_dir = (VENV / "bin").resolve()
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != bin_dir]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return {**env, "PATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1"}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a README command as a user would: in bash, after the README's activation line, with nothing else on PATH."""
    activate = ACTIVATE.replace(".venv", str(VENV))
    done = subprocess.run(["bash", "-c", f'{activate} && exec "$@"', "bash", *args], cwd=cwd, env=user_environment(),
                          capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def e2e_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # fp32 compute: the pinned numbers below then hold on any x86 CPU (bf16 matmuls differ with AVX512-BF16).
    tiny = tiny_params(data={"train_size": 24},
                       quant={"compute_dtype": "float32"},
                       lora={"r": 4, "alpha": 8, "dropout": 0.0},
                       train={"max_steps": 3, "batch_size": 4, "logging_steps": 1, "save_steps": 2,
                              "learning_rate": 0.001},
                       eval={"batch_size": 16})
    for section, values in tiny.items():
        params[section].update(values)
    params["eval_sets"] = {"snli": {"source": "bundled", "split": "test", "size": 30, "seed": 42},
                           "challenge": {"source": "challenge", "size": 30, "seed": 42}}
    return params


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """A committed git+DVC copy of the working tree, without outputs, that has run `dvc repro` once."""
    root = tmp_path_factory.mktemp("e2e") / "repo"
    shutil.copytree(REPO, root, ignore=lambda d, names: [n for n in names if n in IGNORED])
    (root / "params.yaml").write_text(yaml.safe_dump(e2e_params(), sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], root)
    run(["dvc", "repro"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], root)
    return root


# The real model on 30 eval rows after 3 fine-tune steps (fp32 compute). Counts of 30 rows are exact; the loss gets
# 1e-3 relative for float summation order across CPUs (a wrong alpha, warmup or answer token moves it by percents).
PINNED_E2E = {"base_correct": 9, "adapter_correct": 8, "final_loss": 4.38949}


def test_repro_writes_every_output(repo_copy):
    for path in ("models/base/model.safetensors", "models/base.json", "data/prepared/eval/snli.jsonl",
                 "data/prepared/eval/challenge.jsonl", "reports/predictions/snli/base.jsonl",
                 "reports/predictions/challenge/adapter.jsonl", "models/adapter/adapter_model.safetensors",
                 "reports/comparison.md", "metrics/eval/snli/compare.json", "metrics/eval/challenge/compare.json",
                 "reports/eval/challenge.md",
                 "dvclive/plots/metrics/train/loss.tsv"):
        assert (repo_copy / path).is_file(), path
    base_info = json.loads((repo_copy / "models/base.json").read_text())
    assert base_info["source"] == "embedded" and base_info["parameters"] == 134_515_008
    assert len(base_info["sha256"]) == 64
    adapter = json.loads((repo_copy / "metrics/eval/snli/adapter.json").read_text())
    finetune = json.loads((repo_copy / "metrics/finetune.json").read_text())
    assert adapter["examples"] == 30 and finetune["steps"] == 3
    assert 0 < finetune["trainable_percent"] < 5
    base = json.loads((repo_copy / "metrics/eval/snli/base.json").read_text())
    got = {"base_correct": base["correct"], "adapter_correct": adapter["correct"], "final_loss": finetune["final_loss"]}
    hint = f"got {got}; if scoring or training changed on purpose, update PINNED_E2E"
    assert (got["base_correct"], got["adapter_correct"]) == (PINNED_E2E["base_correct"], PINNED_E2E["adapter_correct"]), hint
    assert got["final_loss"] == pytest.approx(PINNED_E2E["final_loss"], rel=1e-3), hint
    report = (repo_copy / "reports/comparison.md").read_text()
    assert "## Across evaluation sets" in report and "### Accuracy by phenomenon" in report
    assert report.index("## Evaluation set `snli`") < report.index("## Evaluation set `challenge`")


def test_second_repro_is_up_to_date(repo_copy):
    done = run(["dvc", "repro"], repo_copy)
    assert "up to date" in done.stdout
    assert "Running stage" not in done.stdout
    status = run(["dvc", "status", "--json"], repo_copy)
    assert json.loads(status.stdout) == {}


def test_plots_render_to_html(repo_copy, tmp_path):
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo_copy)
    html = (tmp_path / "plots" / "index.html").read_text()
    for title in ("snli: base model", "challenge: adapter", "challenge: base prediction", "Training loss"):
        assert title in html, title


def test_a_new_eval_set_changes_only_its_own_stages(repo_copy):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["eval_sets"]["dev"] = {"source": "bundled", "split": "validation", "size": 12, "seed": 1}
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(run(["dvc", "status", "--json"], repo_copy).stdout))
    finally:
        run(["git", "checkout", "--", "params.yaml"], repo_copy)
    # The new set's six stages, and the cross-set report, whose table lists every set.
    assert changed == {"prepare_eval@dev", "slices@dev", "evaluate_base@dev", "evaluate_adapter@dev", "seeds@dev",
                       "compare@dev", "report"}


def test_experiment_reruns_only_affected_stages_and_metrics_differ(repo_copy):
    done = run(["dvc", "exp", "run", "--temp", "-n", "rank8", "-S", "lora.r=8"], repo_copy)
    ran = {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"finetune", "evaluate_adapter@snli", "evaluate_adapter@challenge", "seeds@snli", "seeds@challenge",
                   "compare@snli", "compare@challenge", "report"}
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo_copy).stdout)
    text = json.dumps(shown)
    assert "rank8" in text
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD", "rank8", "--json"], repo_copy).stdout)
    changed = diff["metrics/finetune.json"]
    assert changed["parameters_trainable"]["new"] == 2 * changed["parameters_trainable"]["old"]
    params_diff = json.loads(run(["dvc", "params", "diff", "HEAD", "rank8", "--json"], repo_copy).stdout)
    assert params_diff["params.yaml"]["lora.r"]["old"] == 4 and params_diff["params.yaml"]["lora.r"]["new"] == 8
    assert run(["git", "status", "--porcelain"], repo_copy).stdout == "", "--temp must leave the workspace alone"
    assert "metrics/eval/snli/base.json" not in diff or all(v.get("diff", 0) == 0 for k, v in diff["metrics/eval/snli/base.json"].items()
                                                  if k not in ("seconds", "examples_per_second", "peak_memory_gb",
                                                               "prompt_tokens_per_second"))


def ran_stages(done: subprocess.CompletedProcess) -> set[str]:
    return {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")}


def test_seed_replicates_are_stages_and_two_experiments_compare_seed_aware(repo_copy):
    """Two seeds in one run write the aggregates and per-row stability, as `dvc exp show` columns; adding a third
    seed trains only that seed; the comparison command reads both experiments through DVC and decides with both
    runs' seeds."""
    import dvc.api

    done = run(["dvc", "exp", "run", "--temp", "-n", "two-seeds", "-S", "train.extra_seeds=[7]"], repo_copy)
    assert ran_stages(done) == {"finetune_seed@7", "evaluate_seed@7-snli", "evaluate_seed@7-challenge", "seeds@snli",
                                "seeds@challenge", "compare@snli", "compare@challenge", "report"}
    seeds = json.loads(dvc.api.read("metrics/eval/snli/seeds.json", repo=str(repo_copy), rev="two-seeds"))
    assert seeds["seeds"] == [42, 7] and seeds["gain"]["covers"] == "seeds and rows"
    assert sum(seeds["stability"].values()) == 30
    stability = dvc.api.read("reports/stability/challenge.jsonl", repo=str(repo_copy), rev="two-seeds")
    assert len(stability.splitlines()) == 30 and '"seeds": 2' in stability
    report = dvc.api.read("reports/eval/snli.md", repo=str(repo_copy), rev="two-seeds")
    assert "2 fine-tunes that differ only in the training seed (42, 7" in report
    shown = run(["dvc", "exp", "show", "--json"], repo_copy).stdout
    assert '"metrics/eval/snli/seeds.json"' in shown and '"accuracy_sd"' in shown

    done = run(["dvc", "exp", "run", "--temp", "-n", "three-seeds", "-S", "train.extra_seeds=[7,8]"], repo_copy)
    assert "finetune_seed@8" in ran_stages(done) and "finetune_seed@7" not in ran_stages(done)

    compared = run(["python", "-m", "qlora_diff.analysis.runs", "two-seeds", "three-seeds"], repo_copy).stdout
    assert "## `three-seeds` against `two-seeds`" in compared and "| 2 / 3: " in compared
    assert "Averaged over training seeds, `three-seeds` (3 seeds" in compared
    assert "Report settings: 95% confidence, equivalence margin ±3 " in compared
    # Both runs measured their seed noise, so the verdict is the margin's, and it is the one the printed CI gives.
    low, high = (float(x) / 100 for x in re.search(
        r"on `snli` \(95% CI over seeds and rows \[([-+][\d.]+), ([-+][\d.]+)\]\): ", compared).groups())
    verdict = decide(low, high, 0.03)
    assert f": {sentence(verdict, low, high, 0.03, 'two-seeds', 'three-seeds')[:30]}" in compared


def test_runs_that_scored_other_rows_are_refused_with_the_set_and_id(repo_copy):
    """Another sample of the same size (eval_sets.snli.seed): same count, other ids."""
    run(["dvc", "exp", "run", "--temp", "-n", "other-rows", "-S", "eval_sets.snli.seed=7"], repo_copy)
    done = run(["python", "-m", "qlora_diff.analysis.runs", "HEAD", "other-rows"], repo_copy, check=False)
    assert done.returncode != 0
    assert re.search(r"error: eval set 'snli': HEAD and other-rows scored different rows \(30 vs 30\); first "
                     r"mismatch: id '[^']+' only in HEAD", done.stderr), done.stderr


def test_push_and_pull_through_a_local_remote(repo_copy, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-f", "-d", "local", str(remote)], repo_copy)
    run(["dvc", "push"], repo_copy)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo_copy), str(clone)], tmp_path)
    run(["dvc", "remote", "add", "-f", "-d", "local", str(remote)], clone)
    run(["dvc", "pull"], clone)
    assert (clone / "models/adapter/adapter_model.safetensors").is_file()
    status = run(["dvc", "status", "--json"], clone)
    assert json.loads(status.stdout) == {}
    done = run(["dvc", "repro"], clone)
    assert "Running stage" not in done.stdout


def test_pull_request_comment_builds_on_this_repo(repo_copy, tmp_path):
    workflow = yaml.safe_load((REPO / ".github/workflows/pr-report.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    commands = " ".join(step.get("run", "") for step in workflow["jobs"]["report"]["steps"])
    assert "python -m qlora_diff.tools.pr_report" in commands and "cml comment update" in commands
    out = tmp_path / "comment.md"
    run(["python", "-m", "qlora_diff.tools.pr_report", "--base", "HEAD~1", "--out", str(out), "--images",
         str(tmp_path / "plots")], repo_copy)
    comment = out.read_text()
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", comment)
    assert links and all((tmp_path / link).is_file() for link in links)
    # HEAD~1 holds the project's own dvc.lock, whose predictions this copy's cache lacks: the lead says so
    assert comment.startswith("## `workspace` against `HEAD~1`\n\nThe two runs cannot be compared row by row")
    assert "## Metrics diff against `HEAD~1`" in comment
    assert "| Path" in comment and "metrics/eval/snli/adapter.json" in comment
    assert "## Across evaluation sets" in comment


TIMING_FIELDS = {"seconds", "examples_per_second", "prompt_tokens_per_second", "peak_memory_gb",
                 "peak_gpu_memory_gb", "tokens_per_second"}


def test_forced_rerun_is_byte_identical_except_timing(repo_copy):
    """`dvc repro -f` of the stages after the base model gives the same predictions, adapter, hypothesis-only
    pickle, slices and metrics."""
    files = ["reports/predictions/snli/base.jsonl", "reports/predictions/snli/adapter.jsonl",
             "reports/predictions/challenge/adapter.jsonl", "models/adapter/adapter_model.safetensors",
             "models/adapter/adapter_config.json", "models/adapter/README.md", "metrics/eval/snli/compare.json",
             "reports/plots/snli/transitions.json", "reports/plots/snli/slices.json",
             "reports/plots/snli/reliability.json", "models/hypothesis_baseline.pkl",
             "reports/predictions/snli/slices.jsonl", "reports/comparison.html"]  # the Markdown reports quote timings
    before = {f: (repo_copy / f).read_bytes() for f in files}
    metrics = ["metrics/eval/snli/base.json", "metrics/eval/snli/adapter.json", "metrics/finetune.json"]
    strip = lambda f: {k: v for k, v in json.loads((repo_copy / f).read_text()).items() if k not in TIMING_FIELDS}
    before_metrics = {f: strip(f) for f in metrics}
    run(["dvc", "repro", "-f", "--downstream", "evaluate_base", "finetune", "hypothesis_baseline"], repo_copy)
    for f in files:
        assert (repo_copy / f).read_bytes() == before[f], f
    for f in metrics:
        assert strip(f) == before_metrics[f], f
    run(["git", "checkout", "--", "metrics", "reports", "dvc.lock"], repo_copy)


def test_readme_activates_the_environment_right_after_setup():
    """Every README command after the quick start assumes this line; the helpers above run them exactly so."""
    readme = (REPO / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):readme.index("## Results")]
    assert "make repro" in quick_start and ACTIVATE in quick_start


def test_queued_experiment_runs_in_a_worker(repo_copy):
    run(["dvc", "exp", "run", "--queue", "-n", "queued-r2", "-S", "lora.r=2"], repo_copy)
    run(["dvc", "queue", "start", "-j", "1"], repo_copy)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo_copy).stdout
        if "queued-r2" in status and "Success" in status:
            break
        assert "Failed" not in status, run(["dvc", "queue", "logs", "queued-r2"], repo_copy, check=False).stdout
        time.sleep(5)
    else:
        raise AssertionError(f"queued experiment did not finish:\n{status}")
    run(["dvc", "queue", "stop"], repo_copy, check=False)
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD", "queued-r2", "--json"], repo_copy).stdout)
    trainable = diff["metrics/finetune.json"]["parameters_trainable"]
    assert trainable["new"] * 2 == trainable["old"]
