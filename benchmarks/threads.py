"""Do the reference numerics (fp32) depend on `runtime.threads`? The first eval rows scored by the base model, and
the first steps of the default fine-tune, at 1 thread and at every count up to this machine's cores: log-probability
gaps and flipped predictions against the most threads, the training losses step by step, and the LoRA weights after
the last step, compared bit for bit. If any differs, the reference must pin the threads.

Run: python benchmarks/threads.py [--rows 300] [--steps 6]   (after `dvc repro prepare prepare_eval@snli`)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from common import MODEL_DIR, REPO, config, rows, score, write_results


def argmax(scores: list[float]) -> int:
    return scores.index(max(scores))


def train(threads: int, steps: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The default fine-tune's first ``steps`` steps at ``threads``: the loss of every step and the LoRA weights."""
    from qlora_diff.model.finetune import build_trainer

    cfg = config(runtime={"device": "cpu", "threads": threads}, train={"max_steps": steps, "logging_steps": 1,
                                                                        "save_steps": steps + 1})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, MODEL_DIR, REPO / "data/prepared/train.jsonl", Path(tmp)).trainer
        trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    weights = {name: tensor.detach().clone() for name, tensor in trainer.model.named_parameters() if "lora_" in name}
    return losses, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=300, help="eval rows scored by the base model")
    parser.add_argument("--steps", type=int, default=6, help="fine-tune steps")
    args = parser.parse_args()
    counts = sorted({1, *range(2, (os.cpu_count() or 1) + 1)}, reverse=True)   # the most threads first: reference
    results = []
    reference_scores = reference_losses = reference_weights = None
    for threads in counts:
        torch.set_num_threads(threads)
        scores, seconds = score(None, "float32", 64, args.rows)
        reference_scores = reference_scores or scores
        gaps = [abs(a - b) for row, ref in zip(scores, reference_scores) for a, b in zip(row, ref)]
        losses, weights = train(threads, args.steps)
        reference_losses, reference_weights = reference_losses or losses, reference_weights or weights
        results.append({
            "runtime.threads": threads,
            "eval rows": len(scores),
            f"predictions differing from {counts[0]} threads": sum(argmax(a) != argmax(b)
                                                                   for a, b in zip(scores, reference_scores)),
            "max |logprob gap|": float(f"{max(gaps):.3g}"),
            "train steps": len(losses),
            "max |loss gap|": float(f"{max(abs(a - b) for a, b in zip(losses, reference_losses)):.3g}"),
            "LoRA weights bitwise equal": all(torch.equal(weights[name], reference_weights[name])
                                              for name in reference_weights),
            "eval examples/s": round(len(scores) / seconds, 2),
        })
        print(results[-1], flush=True)
    torch.set_num_threads(counts[0])   # the run's fingerprint records this machine's thread count, not the last one
    notes = [f"fp32 compute (the reference numerics), base model on the first {args.rows} rows of "
             "data/prepared/eval/snli.jsonl at eval.batch_size 64; the default fine-tune's first "
             f"{args.steps} steps (params.yaml) from the same LoRA init",
             f"gaps and flips against {counts[0]} threads, the most this machine has"]
    write_results("threads", "The reference numerics across runtime.threads", results, notes)


if __name__ == "__main__":
    main()
