"""Eval speed on the embedded model and 200 eval rows: loglik vs generate vs the bare forward pass (ceiling),
and what the bitsandbytes CPU repack fix costs.

Run: python benchmarks/eval_throughput.py   (after `dvc repro prepare`)
"""

from __future__ import annotations

import torch

from common import MODEL_DIR, config, rows, timed, write_results
from qlora_diff.modeling import load_causal_lm, load_tokenizer
from qlora_diff.prompts import answer_token_ids
from qlora_diff.scoring import _left_pad, generate_answers, label_logprobs

ROWS = 200


def bare_forward(model, tokenizer, prompts: list[str], batch_size: int) -> None:
    """The same length-sorted batches through one plain forward each: the ceiling for loglik."""
    encoded = sorted((tokenizer(p, add_special_tokens=False).input_ids for p in prompts), key=len)
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            ids, mask = _left_pad(encoded[start:start + batch_size], tokenizer.pad_token_id, torch.device("cpu"))
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1)


def main() -> None:
    cfg = config(runtime={"device": "cpu"})
    tokenizer = load_tokenizer(MODEL_DIR)
    prompts = [r["prompt"] for r in rows(ROWS)]
    tokens = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    answers = answer_token_ids(cfg, tokenizer)
    size = cfg.eval.batch_size
    model = load_causal_lm(MODEL_DIR, cfg, torch.device("cpu")).eval()
    results = []
    for name, fn in [
        ("bare forward (ceiling)", lambda: bare_forward(model, tokenizer, prompts, size)),
        ("loglik", lambda: label_logprobs(model, tokenizer, prompts, answers, size)),
        ("generate", lambda: generate_answers(model, tokenizer, prompts, size, cfg.eval.max_new_tokens)),
    ]:
        seconds = timed(fn)
        results.append({"method": name, "rows": ROWS, "seconds": round(seconds, 2),
                        "examples/s": round(ROWS / seconds, 2), "prompt tokens/s": round(tokens / seconds, 1)})
        print(results[-1], flush=True)
    # The repack fix: the same loglik with bitsandbytes allowed to repack (wrong numbers, shown for speed only).
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16

    if has_avx512bf16():
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = True
        seconds = timed(lambda: label_logprobs(model, tokenizer, prompts, answers, size))
        results.append({"method": "loglik, bnb repack allowed (WRONG numbers)", "rows": ROWS,
                        "seconds": round(seconds, 2), "examples/s": round(ROWS / seconds, 2),
                        "prompt tokens/s": round(tokens / seconds, 1)})
    ceiling, loglik, generate = (r["seconds"] for r in results[:3])
    notes = [
        f"quant: {cfg.quant}", f"eval.batch_size={size}, eval.max_new_tokens={cfg.eval.max_new_tokens}",
        f"loglik is {generate / loglik:.1f}x faster than generate (target >= 5x)",
        f"loglik reaches {100 * ceiling / loglik:.0f}% of the bare forward tokens/s (target >= 80%)",
    ]
    if len(results) > 3:
        notes.append(f"the repack fix costs {100 * (1 - results[3]['seconds'] / loglik):.0f}% of loglik speed "
                     "(repacked layout is faster but gives wrong logits and gradients)")
    write_results("eval_throughput", "Evaluation throughput", results, notes)


if __name__ == "__main__":
    main()
