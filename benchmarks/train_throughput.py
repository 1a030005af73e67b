"""Training speed and peak memory: QLoRA (NF4) vs LoRA on bf16 vs LoRA on fp32 weights, same batches,
plus the forward-only tokens/s as the ceiling reference.  Each variant runs in its own process so peak
memory is its own.

Run: python benchmarks/train_throughput.py   (after `dvc repro prepare`)
"""

from __future__ import annotations

import json
import subprocess
import sys

from common import REPO, write_results

STEPS = 4
VARIANTS = {
    "QLoRA NF4, bf16 compute": {"load_in_4bit": True, "compute_dtype": "bfloat16"},
    "QLoRA NF4, fp32 compute": {"load_in_4bit": True, "compute_dtype": "float32"},
    "LoRA on bf16 weights": {"load_in_4bit": False, "compute_dtype": "bfloat16"},
    "LoRA on fp32 weights": {"load_in_4bit": False, "compute_dtype": "float32"},
}


def measure(quant: dict) -> dict:
    """Runs in a child process: STEPS optimizer steps on the first train batches, then forward-only."""
    import time

    import torch

    from common import MODEL_DIR, config
    from qlora_diff import atomic
    from qlora_diff.finetune import LeftPadCollator, answer_window_loss, attach_lora, build_examples
    from qlora_diff.modeling import load_causal_lm, load_tokenizer
    from qlora_diff.prompts import answer_token_ids
    from qlora_diff.runtime import peak_process_memory_gb

    cfg = config(quant=quant, runtime={"device": "cpu"})
    tokenizer = load_tokenizer(MODEL_DIR)
    examples, _ = build_examples(cfg, tokenizer, atomic.read_jsonl(REPO / "data/prepared/train.jsonl"))
    size = cfg.train.batch_size
    collate = LeftPadCollator(tokenizer.pad_token_id)
    batches = [collate(examples[i * size:(i + 1) * size]) for i in range(STEPS + 1)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:])
    model = attach_lora(cfg, load_causal_lm(MODEL_DIR, cfg, torch.device("cpu")))
    window = max(len(a) for a in answer_token_ids(cfg, tokenizer).values())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.learning_rate)
    model.train()

    def step(batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        answer_window_loss(model(**inputs, logits_to_keep=window + 1).logits[:, :-1], batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()

    step(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    train_seconds = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        for batch in batches[1:]:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  position_ids=batch["position_ids"], logits_to_keep=1)
        forward_seconds = time.perf_counter() - start
    return {"train tokens/s": round(tokens / train_seconds, 1),
            "forward-only tokens/s": round(tokens / forward_seconds, 1),
            "peak memory GB": peak_process_memory_gb()}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(measure(json.loads(sys.argv[2]))))
        return
    results = []
    for name, quant in VARIANTS.items():
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(quant)], capture_output=True,
                             text=True, check=True, cwd=REPO)
        results.append({"variant": name, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(results[-1], flush=True)
    write_results("train_throughput", "Training throughput (LoRA, CPU)", results,
                  [f"{STEPS} optimizer steps after one warm-up step, train.batch_size from params.yaml, "
                   "answer-only loss with the logits window; peak memory is the process's peak RSS",
                   "bf16 compute is fast only on CPUs with native bf16 matmuls (AVX512-BF16/AMX); elsewhere it is "
                   "emulated, and fp32 compute is faster"])


if __name__ == "__main__":
    main()
