"""Does a row's prediction depend on what else is in its batch? Every eval row scored at eval.batch_size 1, 7, 16
and 64, for the base model and the adapter, in fp32 (the default on every CPU) and bf16 compute: flips against batch
size 16, the largest log-probability gap (0 when batches hold prompts of one length, as `label_logprobs` builds
them; the fp32 noise floor in core/numerics.py must clear it), and throughput, all in one run so the ratios
compare like with like.

Run: python benchmarks/batch_invariance.py [--rows 1000] [--bf16-rows 200] [--models base adapter]
(after `dvc repro`; quiet machine). bf16 is emulated (slow) on CPUs without native bf16, hence its smaller sample.
"""

from __future__ import annotations

import argparse

from common import ADAPTER_DIR, rows, score, write_results

BATCH_SIZES = (16, 1, 7, 64)  # 16 first: the reference (64 is the default eval.batch_size)
REFERENCE = 16
MODELS = {"base": None, "adapter": ADAPTER_DIR}


def argmax(scores: list[float]) -> int:
    return scores.index(max(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000, help="rows scored in fp32 (the default compute dtype)")
    parser.add_argument("--bf16-rows", type=int, default=200, help="rows scored in bf16 (0: skip)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="which models to score (the base model's rows only change with the base model)")
    args = parser.parse_args()
    sizes = {"float32": len(rows(args.rows)), "bfloat16": len(rows(args.bf16_rows))}
    results = []
    for name in args.models:
        adapter_dir = MODELS[name]
        for dtype, count in sizes.items():
            if count == 0:
                continue
            reference = None
            for batch_size in BATCH_SIZES:
                scores, seconds = score(adapter_dir, dtype, batch_size, count)
                reference = reference or scores
                gaps = [abs(a - b) for row, ref in zip(scores, reference) for a, b in zip(row, ref)]
                results.append({
                    "model": name, "compute dtype": dtype, "rows": count, "eval.batch_size": batch_size,
                    f"predictions differing from batch {REFERENCE}": sum(argmax(a) != argmax(b)
                                                                         for a, b in zip(scores, reference)),
                    "max |logprob gap|": float(f"{max(gaps):.3g}"),
                    "examples/s": round(count / seconds, 2),
                })
                print(results[-1], flush=True)
    notes = ["the first rows of data/prepared/eval/snli.jsonl (the default SNLI sample), loglik scoring, NF4 weights",
             f"flips and gaps are against eval.batch_size={REFERENCE} in the same compute dtype",
             "examples/s: scoring only (model loading excluded); compare rows of one run as ratios"]
    for name in args.models:
        rate = {r["compute dtype"]: r["examples/s"] for r in results
                if r["model"] == name and r["eval.batch_size"] == REFERENCE}
        if len(rate) == 2:
            notes.append(f"{name}: fp32 compute scores {rate['float32'] / rate['bfloat16']:.2f}x the examples/s of "
                         f"bf16 compute at batch size {REFERENCE}")
    write_results("batch_invariance", "Batch invariance: predictions and log-probabilities across batch sizes",
                  results, notes)


if __name__ == "__main__":
    main()
