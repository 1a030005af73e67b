"""Shared setup for the benchmarks: the real base model, real prepared rows, results written as JSON + Markdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from qlora_diff.core import atomic  # noqa: E402
from qlora_diff.core.config import Config, load_config, parse_config  # noqa: E402

MODEL_DIR = REPO / "models" / "base"
ADAPTER_DIR = REPO / "models" / "adapter"
EVAL_ROWS = REPO / "data" / "prepared" / "eval" / "snli.jsonl"


def config(**overrides) -> Config:
    """The committed params with section overrides, e.g. ``config(quant={"load_in_4bit": False})``."""
    raw = load_config(REPO / "params.yaml").to_dict()
    for section, values in overrides.items():
        raw[section].update(values)
    return parse_config(raw)


def rows(count: int) -> list[dict]:
    if not EVAL_ROWS.is_file():
        sys.exit("run `dvc repro prepare_eval@snli` first: the benchmarks use data/prepared/eval/snli.jsonl")
    return atomic.read_jsonl(EVAL_ROWS)[:count]


def score(adapter_dir: Path | None, compute_dtype: str, batch_size: int, count: int) -> tuple[list[list[float]], float]:
    """Label log-probabilities of the first ``count`` eval rows (NF4 weights, CPU) and the scoring seconds
    (model loading excluded)."""
    from qlora_diff.data.prompts import answer_token_ids
    from qlora_diff.model.evaluate import load_for_eval
    from qlora_diff.model.modeling import load_tokenizer
    from qlora_diff.model.scoring import encode_prompts, label_logprobs

    cfg = config(runtime={"device": "cpu"}, eval={"compute_dtype": compute_dtype})
    tokenizer = load_tokenizer(MODEL_DIR)
    model, _ = load_for_eval(cfg, MODEL_DIR, adapter_dir)
    encoded = encode_prompts(tokenizer, [r["prompt"] for r in rows(count)])
    start = time.perf_counter()
    scores = label_logprobs(model, tokenizer, encoded, answer_token_ids(cfg, tokenizer), batch_size)
    return scores, time.perf_counter() - start


def timed(fn, repeats: int = 1) -> float:
    """Best-of-``repeats`` wall seconds of ``fn()``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def device() -> torch.device:
    """The device a benchmark's results describe: the GPU where there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine() -> dict:
    """The fingerprint every stage records (``runtime.machine_fingerprint``): what a result depends on."""
    from qlora_diff.core.runtime import machine_fingerprint

    return machine_fingerprint(device())


def machine_key(fingerprint: dict) -> tuple:
    """What makes two machines the same for a benchmark: CPU model, kernel flags, GPU and threads."""
    return fingerprint["cpu"], tuple(fingerprint.get("cpu_flags", ())), fingerprint.get("gpu"), fingerprint["threads"]


def clone_repo(directory: Path, cache_dir: Path | None = None) -> tuple[Path, dict[str, str]]:
    """A `git clone` of this checkout's HEAD in ``directory`` (optionally on the DVC cache ``cache_dir``), and the
    environment its stages run in: this interpreter's `python` and `dvc` on PATH, the clone's own `src/` first."""
    clone = directory / "repo"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(clone / "src")}
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    if cache_dir is not None:
        subprocess.run(["dvc", "cache", "dir", "--local", str(cache_dir.resolve())], cwd=clone, check=True)
    return clone, env


def copy_run(source: Path, target: Path) -> None:
    """``target`` takes ``source``'s run: its dvc.lock and the outputs git tracks (metrics, reports, curves) are
    copied, and `dvc checkout` fills the cached ones from the DVC cache both share."""
    tracked = subprocess.run(["git", "ls-files", "metrics", "reports", "dvclive", "models/base.json"], cwd=source,
                             capture_output=True, text=True, check=True).stdout.split()
    for path in ["dvc.lock", *tracked]:
        shutil.copyfile(source / path, target / path)
    subprocess.run(["dvc", "checkout", "--force"], cwd=target, check=True, stdout=subprocess.DEVNULL)


def write_results(name: str, title: str, rows_out: list[dict], notes: list[str], summary: dict | None = None
                  ) -> None:
    """benchmarks/results/<name>.json: one file per benchmark, one run per machine fingerprint. This run replaces
    the one of the same machine (``machine_key``) and keeps the others: a new machine adds a run, not a file.
    ``summary``: named numbers that tests or code read back."""
    path = REPO / "benchmarks" / "results" / f"{name}.json"
    this = machine()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"] if path.is_file() else []
    runs = [run for run in runs if machine_key(run["machine"]) != machine_key(this)]
    runs.append({"machine": this, "commit": commit, "results": rows_out, "notes": notes, **({"summary": summary}
                                                                                         if summary else {})})
    runs.sort(key=lambda run: machine_key(run["machine"]))
    atomic.write_json(path, {"title": title, "runs": runs})
    print(tabulate([list(r.values()) for r in rows_out], headers=list(rows_out[0]), tablefmt="github"))
