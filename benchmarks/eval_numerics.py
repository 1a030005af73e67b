"""How much of a per-example diff is rounding: the same eval rows scored in bf16 and fp32 compute, and in bf16
with a different batch size, for the base model and the adapter.

The 99th percentile of the bf16 gaps, over both models, is bf16's near-tie noise floor (core/numerics.py; a test
checks that copy against this file).

Run: python benchmarks/eval_numerics.py [--rows 200]   (after `dvc repro`)
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from common import ADAPTER_DIR, config, rows, score, write_results

ROWS = 200
QUANTILE = 99   # the percentile of the bf16 gaps taken as bf16's noise floor


def argmax(scores: list[float]) -> int:
    return scores.index(max(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    count = parser.parse_args().rows
    gold_labels = [r["label"] for r in rows(count)]
    labels = config().data.labels
    results, bf16_gaps = [], []
    for name, adapter_dir in [("base", None), ("adapter", ADAPTER_DIR)]:
        reference = score(adapter_dir, "float32", 16, count)[0]
        for dtype, batch_size in [("float32", 16), ("bfloat16", 16), ("bfloat16", 1)]:
            got = reference if (dtype, batch_size) == ("float32", 16) else score(adapter_dir, dtype, batch_size, count)[0]
            gaps = [abs(a - b) for row_a, row_b in zip(got, reference) for a, b in zip(row_a, row_b)]
            bf16_gaps += gaps if dtype == "bfloat16" else []
            results.append({
                "model": name, "compute dtype": dtype, "eval.batch_size": batch_size,
                "accuracy": round(sum(labels[argmax(s)] == g for s, g in zip(got, gold_labels)) / count, 3),
                "predictions differing from fp32": sum(argmax(a) != argmax(b) for a, b in zip(got, reference)),
                "median |logprob - fp32|": round(statistics.median(gaps), 4),
                f"p{QUANTILE} |logprob - fp32|": round(float(np.percentile(gaps, QUANTILE)), 4),
                "max |logprob - fp32|": round(max(gaps), 4),
            })
            print(results[-1], flush=True)
    floor = round(float(np.percentile(bf16_gaps, QUANTILE)), 2)
    notes = [f"{count} eval rows, loglik scoring, NF4 weights in every row; fp32 compute at eval.batch_size=16 is "
             "the reference",
             "bf16 rounding differs with batch shape and kernel path, so a bf16 prediction whose label margin is "
             "within these gaps can flip between two equivalent runs",
             f"bf16 near-tie noise floor: {floor} nats (p{QUANTILE} over every bf16 gap of both models)"]
    write_results("eval_numerics", "Evaluation numerics: bf16 vs fp32 compute", results, notes,
                  {"bfloat16_noise_floor_nats": floor})


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
