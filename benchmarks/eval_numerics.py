"""How much of a per-example diff is rounding: the same eval rows scored in bf16 and fp32 compute, and in bf16
with a different batch size, for the base model and the adapter.

Run: python benchmarks/eval_numerics.py   (after `dvc repro`)
On a CPU with AMX, oneDNN is capped below AMX for the whole run, as each bf16 evaluate stage caps it.
"""

from __future__ import annotations

import statistics

import torch
from common import ADAPTER_DIR, config, rows, score, write_results

from qlora_diff.core.runtime import cap_cpu_kernels_for_row_invariance

ROWS = 200


def argmax(scores: list[float]) -> int:
    return scores.index(max(scores))


def main() -> None:
    cap_cpu_kernels_for_row_invariance(torch.device("cpu"), "bfloat16")  # before the first matmul, as in the stages
    gold_labels = [r["label"] for r in rows(ROWS)]
    labels = config().data.labels
    results = []
    for name, adapter_dir in [("base", None), ("adapter", ADAPTER_DIR)]:
        reference = score(adapter_dir, "float32", 16, ROWS)[0]
        for dtype, batch_size in [("float32", 16), ("bfloat16", 16), ("bfloat16", 1)]:
            got = reference if (dtype, batch_size) == ("float32", 16) else score(adapter_dir, dtype, batch_size, ROWS)[0]
            gaps = [abs(a - b) for row_a, row_b in zip(got, reference) for a, b in zip(row_a, row_b)]
            results.append({
                "model": name, "compute dtype": dtype, "eval.batch_size": batch_size,
                "accuracy": round(sum(labels[argmax(s)] == g for s, g in zip(got, gold_labels)) / ROWS, 3),
                "predictions differing from fp32": sum(argmax(a) != argmax(b) for a, b in zip(got, reference)),
                "median |logprob - fp32|": round(statistics.median(gaps), 4),
                "max |logprob - fp32|": round(max(gaps), 4),
            })
            print(results[-1], flush=True)
    notes = [f"{ROWS} eval rows, loglik scoring, NF4 weights in every row; fp32 compute at eval.batch_size=16 is "
             "the reference",
             "bf16 rounding differs with batch shape and kernel path, so a bf16 prediction whose label margin is "
             "within the max gap above can flip between two equivalent runs"]
    write_results("eval_numerics", "Evaluation numerics: bf16 vs fp32 compute", results, notes)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
