"""Reproducibility and wall time: `dvc repro` of the committed HEAD in a fresh clone with an empty DVC cache.

Uses this environment's packages (the clone gets no .venv of its own; its stage commands find `python` and `dvc`
on PATH, as after `source .venv/bin/activate`), but the clone's own `src/` (PYTHONPATH), never the editable install.
Checks that the clone rebuilds what HEAD committed: every output in `dvc.lock` has the committed hash, except files
that quote timings (metrics JSON, compared with their timing fields removed, and the Markdown reports).
Measure on a quiet machine: nothing else running.

Run: python benchmarks/repro_fresh_clone.py [--cache-dir DIR]
(--cache-dir: an empty DVC cache the clone fills and keeps, e.g. this checkout's .dvc/cache, so that `dvc checkout`
here restores every output afterwards; the default is the clone's own cache, deleted with it.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import REPO, write_results

TIMED_METRICS = {"evaluate_base@snli": "metrics/eval/snli/base.json", "finetune": "metrics/finetune.json",
                 "evaluate_adapter@snli": "metrics/eval/snli/adapter.json",
                 "evaluate_base@challenge": "metrics/eval/challenge/base.json",
                 "evaluate_adapter@challenge": "metrics/eval/challenge/adapter.json"}
TIMING_FIELDS = {"seconds", "examples_per_second", "prompt_tokens_per_second", "peak_memory_gb",
                 "peak_gpu_memory_gb", "tokens_per_second"}


def output_hashes(lock_text: str) -> dict[str, str]:
    """Every output path of a dvc.lock with its md5."""
    stages = yaml.safe_load(lock_text)["stages"]
    return {out["path"]: out.get("md5", "") for stage in stages.values() for out in stage.get("outs", [])}


def without_timing(text: str) -> dict:
    return {k: v for k, v in json.loads(text).items() if k not in TIMING_FIELDS}


def irreproducible_outputs(clone: Path) -> list[str]:
    """Outputs whose rebuilt content differs from the committed one, beyond timings."""
    committed = output_hashes(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=clone, capture_output=True,
                                             text=True, check=True).stdout)
    rebuilt = output_hashes((clone / "dvc.lock").read_text())
    differing = []
    for path, md5 in sorted(committed.items()):
        if rebuilt.get(path) == md5 or path.endswith(".md") and path.startswith("reports/"):
            continue
        if path.endswith(".json"):
            before = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=clone, capture_output=True, text=True,
                                    check=True).stdout
            if without_timing(before) == without_timing((clone / path).read_text()):
                continue
        differing.append(path)
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, help="an empty DVC cache for the clone to fill and keep")
    args = parser.parse_args()
    if args.cache_dir is not None and args.cache_dir.exists() and any(args.cache_dir.iterdir()):
        sys.exit(f"--cache-dir {args.cache_dir} is not empty: the measurement needs an empty cache")
    with tempfile.TemporaryDirectory(prefix="fresh-clone-") as tmp:
        clone = Path(tmp) / "repo"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "PYTHONPATH": str(clone / "src")}
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        if args.cache_dir is not None:
            subprocess.run(["dvc", "cache", "dir", "--local", str(args.cache_dir.resolve())], cwd=clone, check=True)
        start = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        differing = irreproducible_outputs(clone)
        rows = [{"step": stage, "seconds": json.loads((clone / path).read_text())["seconds"]}
                for stage, path in TIMED_METRICS.items()]
    rows.append({"step": "dvc repro, all stages (wall)", "seconds": round(wall, 1)})
    notes = [f"commit {commit}, fresh `git clone`, empty DVC cache, quiet machine",
             f"outputs rebuilt with the committed content (dvc.lock hashes; metrics JSON without timing fields; "
             f"Markdown reports, which quote timings, not compared): "
             f"{'all' if not differing else 'not ' + ', '.join(differing)}"]
    write_results("repro_fresh_clone", "dvc repro in a fresh clone", rows, notes)
    if differing:
        sys.exit(f"the fresh clone rebuilt different outputs: {', '.join(differing)}")


if __name__ == "__main__":
    main()
