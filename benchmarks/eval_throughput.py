"""Eval speed (best of 2 runs) on the embedded model and 200 eval rows: loglik vs generate vs the bare forward
pass (ceiling), what each loglik optimisation and the bitsandbytes CPU repack fix cost, and how fast loglik could
be at best.

Run: python benchmarks/eval_throughput.py   (after `dvc repro prepare`)
"""

from __future__ import annotations

import torch
from common import MODEL_DIR, config, rows, timed, write_results

from qlora_diff.data.prompts import answer_token_ids
from qlora_diff.model.modeling import load_causal_lm, load_tokenizer
from qlora_diff.model.scoring import batches, encode_prompts, generate_answers, label_logprobs, padded_batch

ROWS = 200


def bare_forward(model, encoded: list[list[int]], pad_id: int, batch_size: int) -> None:
    """The same length-sorted batches through one plain forward each: the ceiling for loglik."""
    with torch.inference_mode():
        for batch in batches(sorted(encoded, key=len), batch_size):
            ids, mask = padded_batch(batch, pad_id, torch.device("cpu"))
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1)


def distinct_prefixes(encoded: list[list[int]]) -> int:
    """Nodes of the prompts' token trie: the tokens any scorer must run through the model at least once."""
    return len({tuple(ids[:end]) for ids in encoded for end in range(1, len(ids) + 1)})


def main() -> None:
    cfg = config(runtime={"device": "cpu"})
    tokenizer = load_tokenizer(MODEL_DIR)
    prompts = [r["prompt"] for r in rows(ROWS)]
    encoded = encode_prompts(tokenizer, prompts)
    tokens = sum(map(len, encoded))
    answers = answer_token_ids(cfg, tokenizer)
    size = cfg.eval.batch_size
    model = load_causal_lm(MODEL_DIR, cfg, torch.device("cpu")).eval()
    results = []

    def measure(name: str, fn, repeats: int = 2) -> float:
        seconds = timed(fn, repeats)
        results.append({"method": name, "rows": ROWS, "seconds": round(seconds, 2),
                        "examples/s": round(ROWS / seconds, 2), "prompt tokens/s": round(tokens / seconds, 1)})
        print(results[-1], flush=True)
        return seconds

    ceiling = measure("bare forward (ceiling)", lambda: bare_forward(model, encoded, tokenizer.pad_token_id, size))
    loglik = measure("loglik (default: shared prefix cached, answers packed)",
                     lambda: label_logprobs(model, tokenizer, encoded, answers, size))
    unshared = measure("loglik, no prefix sharing (answers packed)",
                       lambda: label_logprobs(model, tokenizer, encoded, answers, size, share_prefix=False))
    generate = measure("generate", lambda: generate_answers(model, tokenizer, encoded, size, cfg.eval.max_new_tokens))
    one_by_one = measure("generate, batch_size=1",
                         lambda: generate_answers(model, tokenizer, encoded, 1, cfg.eval.max_new_tokens), repeats=1)
    # The repack fix: the same loglik with bitsandbytes allowed to repack (wrong numbers, shown for speed only).
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16

    repacked = None
    if has_avx512bf16():
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = True
        repacked = measure("loglik, bnb repack allowed (WRONG numbers)",
                           lambda: label_logprobs(model, tokenizer, encoded, answers, size))
    distinct = distinct_prefixes(encoded)
    best_possible = ceiling * distinct / tokens
    notes = [
        f"quant: {cfg.quant}", f"eval.batch_size={size}, eval.max_new_tokens={cfg.eval.max_new_tokens}",
        f"loglik reaches {100 * ceiling / loglik:.0f}% of the bare forward tokens/s (target >= 80%); "
        f"{100 * ceiling / unshared:.0f}% without prefix sharing",
        f"loglik is {generate / loglik:.1f}x faster than generate at the same batch size (target >= 5x), "
        f"{one_by_one / loglik:.1f}x faster than generate one example at a time",
        f"bound: the {ROWS} prompts hold {tokens} tokens but only {distinct} distinct prefixes (their token trie); "
        f"a scorer that runs each once at the bare-forward rate needs >= {best_possible:.1f} s, so no loglik "
        f"implementation can be more than {generate / best_possible:.1f}x faster than generate on this machine",
    ]
    if repacked is not None:
        notes.append(f"bitsandbytes' repacked CPU layout takes {repacked / loglik:.2f}x the time of the default "
                     "(repack disabled, see modeling.disable_cpu_inference_repack), and gives wrong logits and gradients")
    write_results("eval_throughput", "Evaluation throughput", results, notes)


if __name__ == "__main__":
    main()
