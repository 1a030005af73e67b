"""Failure drills: kills and interrupts, memory errors, quiet logs. Nothing may leave a partial output."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
import torch
import yaml
from conftest import REPO, prepare_all, tiny_params

from qlora_diff.core.config import load_config


def default_sigint() -> None:
    """Undo an inherited SIG_IGN (``nohup make test &`` starts children that way), so Python installs its
    KeyboardInterrupt handler in the stage, as it does for a user at a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stage(args: list[str], cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "stages" / args[0]), *args[1:]], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def wait_for_log(process: subprocess.Popen, fragment: str) -> list[str]:
    """Read the stage's stderr until a line contains ``fragment``; the lines read so far."""
    lines = []
    for line in process.stderr:
        lines.append(line)
        if fragment in line:
            return lines
    raise AssertionError(f"the stage ended without logging {fragment!r}:\n{''.join(lines)}")


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
    prepare_all(project)
    return project


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigint_during_finetune_exits_130_and_writes_no_adapter(long_run):
    process = stage(["finetune.py"], long_run)
    wait_for(long_run / "checkpoints/finetune/checkpoint-5", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (long_run / "models/adapter").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_evaluation_leaves_no_partial_outputs(project, sig):
    params = tiny_params(eval_sets={"snli": {"size": "all"}}, eval={"batch_size": 4})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_all(project)
    process = stage(["evaluate.py", "base", "snli"], project)
    wait_for_log(process, "scoring 9824 rows of snli")  # the model is loaded and scoring has begun: ~10 s of work left
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
    for path in ("reports/predictions/snli/base.jsonl", "metrics/eval/snli/base.json",
                 "reports/plots/snli/confusion_base.json"):
        assert not (project / path).exists(), path
    assert not list(project.rglob("*.tmp"))


def test_out_of_memory_in_evaluation_gives_advice(tiny_model_dir, monkeypatch):
    from qlora_diff.core.config import parse_config
    from qlora_diff.core.errors import OutOfMemory
    from qlora_diff.model.modeling import load_causal_lm, load_tokenizer
    from qlora_diff.model.scoring import encode_prompts, label_logprobs

    cfg = parse_config(tiny_params())
    model = load_causal_lm(tiny_model_dir, cfg, torch.device("cpu"))

    def explode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model, "forward", explode)
    with pytest.raises(OutOfMemory, match=r"lower eval.batch_size"):
        tokenizer = load_tokenizer(tiny_model_dir)
        label_logprobs(model, tokenizer, encode_prompts(tokenizer, ["a prompt"]), {"x": [5, 6]}, batch_size=64)


def evaluate_stage_output(project, terminal: bool) -> str:
    """What `stages/evaluate.py base` prints with its output on a pseudo-terminal or on a pipe (CI, DVC)."""
    command = [sys.executable, str(REPO / "stages/evaluate.py"), "base", "snli"]
    if not terminal:
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # tqdm draws nothing at 0 columns
    process = subprocess.Popen(command, cwd=project, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    output = b"".join(chunks).decode(errors="replace")
    assert process.wait(timeout=300) == 0, output
    return output


@pytest.mark.slow
def test_progress_bars_show_on_a_terminal_and_stay_out_of_logs(project):
    prepare_all(project)
    on_terminal = evaluate_stage_output(project, terminal=True)
    assert "scoring: 100%" in on_terminal and "Loading weights" in on_terminal
    piped = evaluate_stage_output(project, terminal=False)
    assert "base on snli: accuracy" in piped
    assert "it/s]" not in piped and "%|" not in piped, piped
