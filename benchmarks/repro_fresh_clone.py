"""Reproducibility and wall time: `dvc repro` of the committed HEAD in a fresh clone with an empty DVC cache.

Uses this environment's packages (the clone gets no .venv of its own; its stage commands find `python` and `dvc`
on PATH, as after `source .venv/bin/activate`), but the clone's own `src/` (PYTHONPATH), never the editable install.
Checks that the clone rebuilds what HEAD committed: every output in `dvc.lock` has the committed hash, except files
that quote timings (metrics JSON, compared with their timing fields removed, and the Markdown reports).
Measure on a quiet machine: nothing else running.

Then, in the same clone, times one experiment (`dvc exp run -S lora.r=8` by default: finetune, adapter evaluations,
compare, report), as a user changing one knob would.

Run: python benchmarks/repro_fresh_clone.py [--cache-dir DIR] [--experiment lora.r=8] [--label CLASS]
(--cache-dir: an empty DVC cache the clone fills and keeps, e.g. this checkout's .dvc/cache; this checkout then takes
the clone's dvc.lock, metrics and reports and `dvc checkout`s the rest, before the experiment runs; the default is the
clone's own cache, deleted with it.)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, clone_repo, copy_run, write_results

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
TIMING_FIELDS = {"seconds", "examples_per_second", "prompt_tokens_per_second", "peak_memory_gb",
                 "peak_gpu_memory_gb", "tokens_per_second"}


def output_hashes(lock_text: str) -> dict[str, str]:
    """Every output path of a dvc.lock with its md5."""
    stages = yaml.safe_load(lock_text)["stages"]
    return {out["path"]: out.get("md5", "") for stage in stages.values() for out in stage.get("outs", [])}


def without_timing(text: str):
    """A metrics file's content without its timing fields (plot data, a JSON list, as it is)."""
    content = json.loads(text)
    return {k: v for k, v in content.items() if k not in TIMING_FIELDS} if isinstance(content, dict) else content


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


def timed_stages(command: list[str], cwd: Path, env: dict) -> tuple[float, dict[str, float]]:
    """Wall seconds of ``command`` and of each stage it ran (from one "Running stage" line to the next: the stage's
    process, its DVC hashing and caching)."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            match = STAGE_LINE.match(line)
            if match:
                marks.append((match.group(1), time.perf_counter()))
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command)
    end = time.perf_counter()
    stops = [t for _, t in marks[1:]] + [end]
    return end - start, {name: round(stop - begin, 1) for (name, begin), stop in zip(marks, stops)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, help="an empty DVC cache for the clone to fill and keep")
    parser.add_argument("--experiment", default="lora.r=8",
                        help="then time `dvc exp run -S EXPERIMENT` in the clone ('' to skip)")
    parser.add_argument("--label", default="",
                        help="machine class of this run: results go to repro_fresh_clone_LABEL.{json,md}")
    args = parser.parse_args()
    if args.cache_dir is not None and args.cache_dir.exists() and any(args.cache_dir.iterdir()):
        sys.exit(f"--cache-dir {args.cache_dir} is not empty: the measurement needs an empty cache")
    with tempfile.TemporaryDirectory(prefix="fresh-clone-") as tmp:
        clone, env = clone_repo(Path(tmp), args.cache_dir)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        wall, stages = timed_stages(["dvc", "repro"], clone, env)
        differing = irreproducible_outputs(clone)
        if args.cache_dir is not None:
            copy_run(clone, REPO)   # the fine-tune runs once, not twice: the run-cache never restores persist outputs
        rows = [{"run": "dvc repro (fresh clone, empty cache)", "step": stage, "seconds": seconds}
                for stage, seconds in stages.items()]
        rows.append({"run": "dvc repro (fresh clone, empty cache)", "step": "all stages (wall)", "seconds": round(wall, 1)})
        if args.experiment:
            run = f"dvc exp run -S {args.experiment}"
            exp_wall, exp_stages = timed_stages(["dvc", "exp", "run", "-S", args.experiment], clone, env)
            rows += [{"run": run, "step": stage, "seconds": seconds} for stage, seconds in exp_stages.items()]
            rows.append({"run": run, "step": "all stages (wall)", "seconds": round(exp_wall, 1)})
    notes = [f"commit {commit}, fresh `git clone`, empty DVC cache, quiet machine",
             "per-stage seconds: from one `Running stage` line of DVC's output to the next (the stage's process, "
             "model loading included, and DVC's hashing and caching)",
             f"outputs rebuilt with the committed content (dvc.lock hashes; metrics JSON without timing fields; "
             f"Markdown reports, which quote timings, not compared): "
             f"{'all' if not differing else 'not ' + ', '.join(differing)}"]
    write_results("repro_fresh_clone", "dvc repro in a fresh clone", rows, notes, args.label)
    if differing:
        sys.exit(f"the fresh clone rebuilt different outputs: {', '.join(differing)}")


if __name__ == "__main__":
    main()
