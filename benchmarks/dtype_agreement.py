"""Which results reproduce across hardware classes? `quant.compute_dtype: auto` trains in bf16 on CPUs with native
bf16 matmuls and in fp32 elsewhere, so two machine classes train different adapters. This fine-tunes the committed
params once more with `quant.compute_dtype=float32` on this machine (in a clone that takes this checkout's run and
shares its DVC cache, so only the fine-tune, the adapter's evaluations and their reports rerun) and compares the
adapter's predictions on every evaluation set with this checkout's through `qlora_diff.analysis.runs` (the two-run
comparison): rows whose prediction differs, both accuracies, the paired difference with a paired-bootstrap CI and the
exact McNemar p. The base model's predictions (evaluated in the same dtype either way) must not differ at all.

Run: python benchmarks/dtype_agreement.py [--label CLASS]   (after `dvc repro`, whose fine-tune must have resolved to
bfloat16; --label: results go to dtype_agreement_CLASS.{json,md}, one file per machine class)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, clone_repo, config, copy_run, write_results

from qlora_diff.analysis.runs import align, difference
from qlora_diff.core import atomic


def predictions(root: Path, set_name: str, model: str) -> list[dict]:
    return atomic.read_jsonl(root / f"reports/predictions/{set_name}/{model}.jsonl")


def main() -> None:
    label = sys.argv[sys.argv.index("--label") + 1] if "--label" in sys.argv else ""
    here = json.loads((REPO / "metrics/finetune.json").read_text())
    if here.get("compute_dtype") != "bfloat16":
        sys.exit(f"metrics/finetune.json: compute_dtype {here.get('compute_dtype')!r}; this compares a bfloat16 "
                 "fine-tune (quant.compute_dtype: auto on a CPU with native bf16) with a float32 one")
    cfg = config()
    eval_dtype = json.loads((REPO / f"metrics/eval/{next(iter(cfg.eval_sets))}/adapter.json").read_text())["compute_dtype"]
    results = []
    with tempfile.TemporaryDirectory(prefix="fp32-train-") as tmp:
        clone, env = clone_repo(Path(tmp), REPO / ".dvc/cache")
        copy_run(REPO, clone)   # this checkout's run (its dvc.lock may be uncommitted), not HEAD's
        subprocess.run(["dvc", "exp", "run", "-S", "quant.compute_dtype=float32"], cwd=clone, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        fp32 = json.loads((clone / "metrics/finetune.json").read_text())
        for name in cfg.eval_sets:
            base = align(name, predictions(REPO, name, "base"), predictions(clone, name, "base"), "bf16 run", "fp32 run")
            pairs = align(name, predictions(clone, name, "adapter"), predictions(REPO, name, "adapter"),
                          "fp32-trained adapter", "bf16-trained adapter")
            diff = difference(name, pairs, cfg)
            results.append({
                "set": name, "rows": diff.rows,
                "adapter predictions differing": sum(a["prediction"] != b["prediction"] for a, b in pairs),
                "fp32-trained accuracy": round(diff.accuracy_a, 4), "bf16-trained accuracy": round(diff.accuracy_b, 4),
                "bf16 - fp32, points [paired CI]": f"{100 * diff.delta:+.1f} [{100 * diff.ci_low:+.1f}, "
                                                   f"{100 * diff.ci_high:+.1f}]",
                "fixed / broken by bf16": f"{diff.fixed} / {diff.broken}",
                "McNemar p": float(f"{diff.mcnemar_p:.3g}"),
                "base predictions differing": sum(a["prediction"] != b["prediction"] for a, b in base),
            })
            print(results[-1], flush=True)
    notes = [f"the committed params on this machine: quant.compute_dtype auto resolved to bfloat16 (final loss "
             f"{here['final_loss']}), against quant.compute_dtype=float32 (final loss {fp32['final_loss']}); both "
             f"adapters evaluated in {eval_dtype} (eval.compute_dtype), on the same rows",
             f"paired bootstrap over rows ({cfg.report.bootstrap_samples} resamples, {cfg.report.confidence:.0%}); "
             "McNemar exact on the rows where exactly one adapter is right"]
    write_results("dtype_agreement", "The same params trained in bf16 and fp32 compute on one machine", results,
                  notes, label)


if __name__ == "__main__":
    main()
