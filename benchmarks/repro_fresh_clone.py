"""Reproducibility and wall time: `make repro` of the committed HEAD in a fresh clone with an empty DVC cache:
`dvc repro`, then the reproduction check against HEAD (`python -m qlora_diff.analysis.reproduce`), whose verdict is
recorded with this machine's fingerprint.

Uses this environment's packages (the clone gets no .venv of its own; its stage commands find `python` and `dvc`
on PATH, as after `source .venv/bin/activate`), but the clone's own `src/` (PYTHONPATH), never the editable install.
Measure on a quiet machine: nothing else running.

Then, in the same clone, times one experiment (`dvc exp run -S lora.r=8` by default: finetune, adapter evaluations,
compare, report), as a user changing one knob would.

Run: python benchmarks/repro_fresh_clone.py [--cache-dir DIR] [--force] [--experiment lora.r=8]
(--force: `dvc repro --force`, every stage recomputed; without it, as `make repro`, DVC skips the stages whose deps
came out bit for bit as committed, e.g. the evaluations when the fine-tune reproduces the adapter exactly.)
(--cache-dir: an empty DVC cache the clone fills and keeps, e.g. this checkout's .dvc/cache; this checkout then takes
the clone's dvc.lock, metrics and reports and `dvc checkout`s the rest, before the experiment runs; the default is the
clone's own cache, deleted with it.)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, clone_repo, copy_run, write_results

from qlora_diff.analysis.reproduce import IDENTICAL

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
SKIPPED_LINE = re.compile(r"^Stage '([^']+)' didn't change, skipping")


def reproduction_verdict(clone: Path, env: dict) -> tuple[str, int]:
    """The reproduction check's first line in ``clone`` (against its HEAD) and how many statistics it names."""
    check = subprocess.run([sys.executable, "-m", "qlora_diff.analysis.reproduce", "--out", "reproduction.md"],
                           cwd=clone, env=env, capture_output=True, text=True, check=True).stdout
    print(check, flush=True)
    return check.splitlines()[0], sum(line.startswith("- ") and ": " in line for line in check.splitlines())


def timed_stages(command: list[str], cwd: Path, env: dict) -> tuple[float, dict[str, float], list[str]]:
    """Wall seconds of ``command``, of each stage it ran (from one "Running stage" line to the next: the stage's
    process, its DVC hashing and caching), and the stages DVC skipped as up to date: a stage whose deps came out bit
    for bit as dvc.lock records them (the evaluations, when the fine-tune reproduced the adapter exactly)."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    skipped: list[str] = []
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if match := STAGE_LINE.match(line):
                marks.append((match.group(1), time.perf_counter()))
            elif match := SKIPPED_LINE.match(line):
                skipped.append(match.group(1))
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command)
    end = time.perf_counter()
    stops = [t for _, t in marks[1:]] + [end]
    return end - start, {name: round(stop - begin, 1) for (name, begin), stop in zip(marks, stops)}, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, help="an empty DVC cache for the clone to fill and keep")
    parser.add_argument("--force", action="store_true",
                        help="dvc repro --force: recompute every stage, also those DVC would skip as up to date")
    parser.add_argument("--experiment", default="lora.r=8",
                        help="then time `dvc exp run -S EXPERIMENT` in the clone ('' to skip)")
    args = parser.parse_args()
    if args.cache_dir is not None and args.cache_dir.exists() and any(args.cache_dir.iterdir()):
        sys.exit(f"--cache-dir {args.cache_dir} is not empty: the measurement needs an empty cache")
    with tempfile.TemporaryDirectory(prefix="fresh-clone-") as tmp:
        clone, env = clone_repo(Path(tmp), args.cache_dir)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        wall, stages, skipped = timed_stages(["dvc", "repro", *(["--force"] if args.force else [])], clone, env)
        verdict, lines = reproduction_verdict(clone, env)
        if args.cache_dir is not None:
            copy_run(clone, REPO)   # the fine-tune runs once, not twice: the run-cache never restores persist outputs
        rows = [{"run": "dvc repro (fresh clone, empty cache)", "step": stage, "seconds": seconds}
                for stage, seconds in stages.items()]
        rows.append({"run": "dvc repro (fresh clone, empty cache)", "step": "all stages (wall)", "seconds": round(wall, 1)})
        if args.experiment:
            run = f"dvc exp run -S {args.experiment}"
            exp_wall, exp_stages, _ = timed_stages(["dvc", "exp", "run", "-S", args.experiment], clone, env)
            rows += [{"run": run, "step": stage, "seconds": seconds} for stage, seconds in exp_stages.items()]
            rows.append({"run": run, "step": "all stages (wall)", "seconds": round(exp_wall, 1)})
    notes = [f"commit {commit}, fresh `git clone`, empty DVC cache, quiet machine",
             "per-stage seconds: from one `Running stage` line of DVC's output to the next (the stage's process, "
             "model loading included, and DVC's hashing and caching)",
             f"{verdict} ({lines} lines of detail; `python -m qlora_diff.analysis.reproduce` in the clone)",
             f"dvc repro{' --force' if args.force else ''} skipped as up to date (deps bit for bit as committed): "
             f"{', '.join(skipped) or 'none'}"]
    write_results("repro_fresh_clone", "make repro in a fresh clone", rows, notes,
                  {"verdict": verdict, "identical_predictions": IDENTICAL in verdict})


if __name__ == "__main__":
    main()
