"""The evaluate stage's scoring against lm-evaluation-harness, an independent implementation: both score the same
eval rows with the same 4-bit model object (loaded as the stage loads it: float32 compute, bitsandbytes' CPU repack
disabled), and the benchmark reports how many predictions agree, how far the per-row label log-likelihoods are
apart, and the speed of each on this machine, in one run.

lm-eval gets, per row and label, the stage's prompt as the context and the stage's answer (the label word and the
end-of-turn marker, ``data.prompts.answer_text``) as the continuation, through its own tokenization, batching,
padding and log-softmax (``HFLM.loglikelihood``). The stage shares the prompt prefix and scores the three answers
as a tree (``model.scoring.label_logprobs``). lm-eval is pinned in benchmarks/requirements-lm-eval.txt and is never
a dependency of the pipeline.

Run: pip install -r benchmarks/requirements-lm-eval.txt
     python benchmarks/lm_eval_agreement.py [--rows 1000]   (after `dvc repro prepare_eval@snli`; quiet machine)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

import numpy as np
import torch
from common import MODEL_DIR, config, rows, write_results

from qlora_diff.core.runtime import Stopwatch
from qlora_diff.data.prompts import answer_text, answer_token_ids
from qlora_diff.model.evaluate import load_for_eval
from qlora_diff.model.modeling import load_tokenizer
from qlora_diff.model.scoring import encode_prompts, label_logprobs

LM_EVAL = "0.4.13"   # as pinned in benchmarks/requirements-lm-eval.txt


def lm_eval_logprobs(model: torch.nn.Module, tokenizer, prompts: list[str], answers: list[str], batch_size: int
                     ) -> list[list[float]]:
    """Each prompt's log-likelihood of every answer, as lm-evaluation-harness computes it, in prompt order."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=(prompt, answer), idx=index)
                for prompt in prompts for index, answer in enumerate(answers)]
    scores = [loglik for loglik, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    return [scores[start:start + len(answers)] for start in range(0, len(scores), len(answers))]


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """How two scorers' (rows, labels) log-likelihoods agree: argmax predictions and per-row gaps in nats."""
    gaps = np.abs(ours - theirs).max(axis=1)
    return {"rows": len(ours), "same_prediction": int((ours.argmax(1) == theirs.argmax(1)).sum()),
            "max_gap_nats": float(gaps.max()), "p99_gap_nats": float(np.percentile(gaps, 99)),
            "mean_gap_nats": float(gaps.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="eval rows of data/prepared/eval/snli.jsonl")
    args = parser.parse_args()
    try:
        installed = importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("lm-evaluation-harness is not installed: pip install -r benchmarks/requirements-lm-eval.txt")
    if installed != LM_EVAL:
        sys.exit(f"lm-eval {installed} is installed; this benchmark is pinned to {LM_EVAL}: "
                 "pip install -r benchmarks/requirements-lm-eval.txt")
    cfg = config(runtime={"device": "cpu"}, eval={"compute_dtype": "float32"})
    tokenizer = load_tokenizer(MODEL_DIR)
    model, _ = load_for_eval(cfg, MODEL_DIR, None)
    prompts = [row["prompt"] for row in rows(args.rows)]
    size = cfg.eval.batch_size
    clock = Stopwatch()
    our_scores = label_logprobs(model, tokenizer, encode_prompts(tokenizer, prompts), answer_token_ids(cfg, tokenizer),
                                size)
    ours = clock.seconds
    texts = [answer_text(cfg, tokenizer, label) for label in cfg.data.labels]
    clock = Stopwatch()
    their_scores = lm_eval_logprobs(model, tokenizer, prompts, texts, size)
    theirs = clock.seconds
    summary = agreement(np.array(our_scores), np.array(their_scores))
    table = [{"scorer": name, "rows": len(prompts), "seconds": round(seconds, 1),
              "rows/s": round(len(prompts) / seconds, 2), "speed vs lm-eval": f"{theirs / seconds:.2f}x"}
             for name, seconds in (("evaluate stage (label_logprobs)", ours), (f"lm-eval {LM_EVAL} HFLM", theirs))]
    summary["speed_ratio"] = round(theirs / ours, 2)
    notes = [
        f"same predictions: {summary['same_prediction']} of {summary['rows']} rows (argmax over "
        f"{', '.join(cfg.data.labels)})",
        f"per-row label log-likelihood gap, max over labels: max {summary['max_gap_nats']:.2g} nats, "
        f"p99 {summary['p99_gap_nats']:.2g}, mean {summary['mean_gap_nats']:.2g}",
        f"one model object for both: NF4 weights, float32 compute, bitsandbytes' CPU repack disabled; "
        f"batch size {size} for both; answers scored: {', '.join(repr(text) for text in texts)}",
        "the stage runs the shared prompt prefix once and scores the three answers as a tree; lm-eval pads each "
        "batch and runs every context and continuation in full",
    ]
    write_results("lm_eval_agreement", "Evaluation against lm-evaluation-harness", table, notes, summary)


if __name__ == "__main__":
    main()
