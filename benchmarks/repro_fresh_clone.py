"""Reproducibility and wall time: `dvc repro` of the committed HEAD in a fresh clone with an empty DVC cache.

Uses this environment's packages (the clone gets no .venv of its own; its stage commands find `python` and `dvc`
on PATH, as after `source .venv/bin/activate`), but the clone's own `src/` (PYTHONPATH), never the editable install. Checks that the clone rebuilds the committed `dvc.lock` exactly:
every output hash (predictions, adapter, base model, prepared data) equal to the committed ones.
Measure on a quiet machine: nothing else running.

Run: python benchmarks/repro_fresh_clone.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_results

TIMED_METRICS = {"evaluate_base@snli": "metrics/eval/snli/base.json", "finetune": "metrics/finetune.json",
                 "evaluate_adapter@snli": "metrics/eval/snli/adapter.json",
                 "evaluate_base@challenge": "metrics/eval/challenge/base.json",
                 "evaluate_adapter@challenge": "metrics/eval/challenge/adapter.json"}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fresh-clone-") as tmp:
        clone = Path(tmp) / "repo"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "PYTHONPATH": str(clone / "src")}
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        start = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        lock_identical = subprocess.run(["git", "diff", "--quiet", "dvc.lock"], cwd=clone).returncode == 0
        rows = [{"step": stage, "seconds": json.loads((clone / path).read_text())["seconds"]}
                for stage, path in TIMED_METRICS.items()]
    rows.append({"step": "dvc repro, all stages (wall)", "seconds": round(wall, 1)})
    notes = [f"commit {commit}, fresh `git clone`, empty DVC cache, quiet machine",
             f"dvc.lock after the run identical to the committed one (every output hash): {lock_identical}"]
    write_results("repro_fresh_clone", "dvc repro in a fresh clone", rows, notes)
    if not lock_identical:
        sys.exit("the fresh clone did not reproduce the committed dvc.lock")


if __name__ == "__main__":
    main()
