"""Failure drills: kills and interrupts, memory errors, quiet logs. Nothing may leave a partial output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import REPO, tiny_params
from qlora_diff.config import load_config
from qlora_diff.prepare import prepare


def stage(args: list[str], cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "stages" / args[0]), *args[1:]], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def long_run(project):
    params = tiny_params(train={"max_steps": 30, "save_steps": 5, "batch_size": 4, "logging_steps": 5})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    prepare(load_config("params.yaml"), project / "models/base", project / "data/prepared",
            project / "metrics/data.json")
    return project


def test_sigkill_during_finetune_then_rerun_resumes_to_the_same_adapter(long_run):
    first = stage(["finetune.py"], long_run)
    wait_for(long_run / "checkpoints/finetune/checkpoint-10", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (long_run / "models/adapter").exists()
    assert not (long_run / "metrics/finetune.json").exists()
    second = stage(["finetune.py"], long_run)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    resumed = json.loads((long_run / "metrics/finetune.json").read_text())
    assert resumed["resumed_from_checkpoint"] is True and resumed["steps"] == 30
    resumed_weights = (long_run / "models/adapter/adapter_model.safetensors").read_bytes()
    clean = stage(["finetune.py"], long_run)  # no checkpoint left: a fresh, uninterrupted run
    out, err = clean.communicate(timeout=300)
    assert clean.returncode == 0, err
    assert json.loads((long_run / "metrics/finetune.json").read_text())["resumed_from_checkpoint"] is False
    assert (long_run / "models/adapter/adapter_model.safetensors").read_bytes() == resumed_weights


def test_sigint_during_finetune_exits_130_and_writes_no_adapter(long_run):
    process = stage(["finetune.py"], long_run)
    wait_for(long_run / "checkpoints/finetune/checkpoint-5", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (long_run / "models/adapter").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_evaluation_leaves_no_partial_outputs(project, sig):
    params = tiny_params(data={"eval_size": "all"}, eval={"batch_size": 4})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    prepare(load_config("params.yaml"), project / "models/base", project / "data/prepared",
            project / "metrics/data.json")
    process = stage(["evaluate.py", "base"], project)
    time.sleep(6)
    assert process.poll() is None, "evaluation finished before it could be interrupted"
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
    for path in ("reports/predictions/base.jsonl", "metrics/base.json", "reports/plots/confusion_base.json"):
        assert not (project / path).exists(), path
    assert not list(project.rglob("*.tmp"))


def test_out_of_memory_in_evaluation_gives_advice(tiny_model_dir, monkeypatch):
    from qlora_diff.config import parse_config
    from qlora_diff.modeling import load_causal_lm, load_tokenizer
    from qlora_diff.scoring import OutOfMemory, label_logprobs

    cfg = parse_config(tiny_params())
    model = load_causal_lm(tiny_model_dir, cfg, torch.device("cpu"))

    def explode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model, "forward", explode)
    with pytest.raises(OutOfMemory, match=r"lower eval.batch_size"):
        label_logprobs(model, load_tokenizer(tiny_model_dir), ["a prompt"], {"x": [5, 6]}, batch_size=64)


def test_progress_bars_stay_quiet_without_a_terminal():
    from qlora_diff.runtime import show_progress

    assert show_progress() is sys.stderr.isatty()
    done = subprocess.run([sys.executable, "-c", "from qlora_diff.runtime import show_progress; print(show_progress())"],
                          capture_output=True, text=True)
    assert done.stdout.strip() == "False"
